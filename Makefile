# siamkit developer commands. `make test` works from a clean clone: it creates
# .venv, installs everything and runs the linters and the test suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.siamkit-installed
# torch and torchvision are pinned to the releases this project is tested with;
# pip finds them locally on the development machines.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

# The AT&T faces, when this checkout sits beside a shared copy of them.
ATT_DATA := $(wildcard ../shared/data/att_faces)

.PHONY: install demo test test-fast lint format docs docs-serve docs-cli bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet $(TORCH_PINS)
	$(BIN)/pip install --quiet -e ".[dev,docs,faces,onnx,milvus,imagenet,serve]"
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks examples
	$(BIN)/ruff check --fix src tests benchmarks examples

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-serve: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

docs-cli: $(STAMP)
	$(BIN)/python -m siamkit.cli.reference > docs/cli.md

test: lint docs
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" -x

demo: $(STAMP)
	$(BIN)/siamkit demo --out demo $(if $(ATT_DATA),--data $(ATT_DATA))

bench: $(STAMP)
	$(BIN)/python benchmarks/orl_verification.py

clean:
	rm -rf $(VENV) site build dist demo .pytest_cache .ruff_cache

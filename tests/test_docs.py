"""The documentation cannot drift from the code: its Python blocks run, the CLI page is current.

Each Markdown page's ```python blocks run in order in one namespace, in a fresh
directory where ``data/att_faces`` holds the AT&T faces (the real ones when
present, a small stand-in with the same layout otherwise). A block preceded by
``<!-- docs-test: skip REASON -->`` is not run.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from siamkit.alignment import aligner_registry
from siamkit.cli.reference import render_cli_reference
from siamkit.encoders import encoder_registry
from siamkit.index import store_registry
from siamkit.losses import loss_registry
from siamkit.miners import miner_registry

REPO = Path(__file__).resolve().parents[1]
PAGES = sorted([REPO / "README.md", *(REPO / "docs").rglob("*.md")])
BLOCK = re.compile(r"(<!-- docs-test: skip[^>]*-->\s*)?```python\n(.*?)```", re.DOTALL)
ORL = REPO.parent / "shared" / "data" / "att_faces"


def python_blocks(page: Path) -> list[str]:
    return [code for skip, code in BLOCK.findall(page.read_text()) if not skip]


@pytest.fixture(scope="module")
def att_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("docs-data") / "att_faces"
    if ORL.is_dir():
        root.symlink_to(ORL, target_is_directory=True)
        return root
    rng = np.random.default_rng(0)
    for person in range(1, 41):
        base = rng.uniform(0, 255, (112, 92))
        (root / f"s{person}").mkdir(parents=True)
        for index in range(1, 11):
            noisy = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(noisy, "L").save(root / f"s{person}" / f"{index}.pgm")
    return root


@pytest.mark.parametrize(
    "page",
    [p for p in PAGES if python_blocks(p)],
    ids=lambda p: str(p.relative_to(REPO)),
)
def test_page_code_runs(page: Path, att_layout: Path, tmp_path: Path, monkeypatch) -> None:
    # Each page is a script of its own: names it registers must not leak into the next.
    registries = (encoder_registry, miner_registry, aligner_registry, loss_registry, store_registry)
    for registry in registries:
        monkeypatch.setattr(registry, "_classes", dict(registry._classes))
        monkeypatch.setattr(registry, "_plugins_loaded", registry._plugins_loaded)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "att_faces").symlink_to(att_layout, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    for number, code in enumerate(python_blocks(page), start=1):
        try:
            exec(compile(code, f"{page.name}[block {number}]", "exec"), namespace)
        except Exception as err:  # pragma: no cover - the message is the point
            raise AssertionError(
                f"{page.relative_to(REPO)} block {number} failed: {err!r}"
            ) from err


def test_cli_reference_is_current() -> None:
    text = (REPO / "docs" / "cli.md").read_text()
    assert text == render_cli_reference(), (
        "docs/cli.md is stale: run `python -m siamkit.cli.reference > docs/cli.md`"
    )


def test_every_page_is_in_the_navigation() -> None:
    nav = (REPO / "mkdocs.yml").read_text()
    for page in (REPO / "docs").rglob("*.md"):
        relative = page.relative_to(REPO / "docs").as_posix()
        assert relative in nav, f"{relative} is not in mkdocs.yml's nav"


SECURITY_CHECK = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def test_every_security_promise_names_tests_that_exist() -> None:
    """docs/security.md names the tests that check each promise: they must be there."""
    import ast

    text = (REPO / "docs" / "security.md").read_text()
    named = SECURITY_CHECK.findall(text)
    assert len(named) >= 60, "the security page should name the tests behind its promises"
    defined: dict[str, set[str]] = {}
    for module, test in named:
        if module not in defined:
            tree = ast.parse((REPO / module).read_text())
            defined[module] = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert test in defined[module], f"docs/security.md names {module}::{test}, not a test"
    # Every promise paragraph of the page carries its checks.
    for section in ("What siamkit never does", "Input data and user errors"):
        body = text.split(f"## {section}")[1].split("\n## ")[0]
        bullets = re.split(r"\n- ", body)[1:]
        for bullet in bullets:
            assert "*Checked by*" in bullet, f"a promise without its checks: {bullet[:60]!r}"


#: The pages that quote the headline figures; each must quote the latest results.
HEADLINE_PAGES = ("README.md", "docs/index.md", "docs/benchmarks.md")


def headline_figures() -> dict[str, list[str]]:
    """What the pages must show: the default command's figures, as saved by the benchmarks."""
    results = REPO / "benchmarks" / "results"
    orl = json.loads((results / "orl_verification.json").read_text())["summary"]["siamkit"]
    wild_report = json.loads((results / "faces_in_the_wild.json").read_text())
    recipe = wild_report["checks"]["recipe_row"]  # the row that is `siamkit train`'s model
    wild = next(row for row in wild_report["rows"] if row["row"] == recipe)["mean"]
    omniglot = json.loads((results / "omniglot_one_shot.json").read_text())["trained"]
    characters = omniglot["siamkit characters, contrastive loss"]  # `siamkit train`'s recipe
    return {
        "Omniglot (benchmarks/omniglot_one_shot.py, the characters recipe's row)": [
            f"**{100 * characters['runs']['mean']:.1f}%**",
        ],
        "ORL (benchmarks/orl_verification.py, the siamkit row)": [
            f"**{100 * orl['eer']['mean']:.2f}% ± {100 * orl['eer']['std']:.2f}%**",
            f"**{100 * orl['tar_at_far_1e-3']['mean']:.1f}%",
        ],
        "in the wild (benchmarks/faces_in_the_wild.py, the face recipe's row)": [
            f"**{wild['auc']:.4f}**",
            f"**{100 * wild['eer']:.1f}%**",
            f"**{100 * wild['tar']:.1f}%**",
        ],
    }


@pytest.mark.parametrize("page", HEADLINE_PAGES)
def test_headline_figures_are_the_latest_results(page: str) -> None:
    text = (REPO / page).read_text()
    for benchmark, figures in headline_figures().items():
        for figure in figures:
            assert figure in text, f"{page} does not quote {benchmark}'s current {figure}"

"""Every exported class and function has a docstring with an example."""

from __future__ import annotations

import importlib
import inspect

import pytest

import siamkit

PACKAGES = [
    "siamkit",
    "siamkit.alignment",
    "siamkit.data",
    "siamkit.encoders",
    "siamkit.evaluation",
    "siamkit.export",
    "siamkit.index",
    "siamkit.losses",
    "siamkit.miners",
    "siamkit.runtime",
    "siamkit.siamese",
    "siamkit.thresholds",
    "siamkit.training",
    "siamkit.demo",
]


def public_objects() -> list[tuple[str, object]]:
    found: dict[int, tuple[str, object]] = {}
    for name in PACKAGES:
        module = importlib.import_module(name)
        for attr in module.__all__:
            obj = getattr(module, attr)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                found.setdefault(id(obj), (f"{name}.{attr}", obj))
    return sorted(found.values())


@pytest.mark.parametrize(
    ("name", "obj"), public_objects(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_has_docstring_with_example(name: str, obj: object) -> None:
    doc = inspect.getdoc(obj) or ""
    if inspect.isclass(obj) and issubclass(obj, Exception):
        assert doc, f"{name} has no docstring"
        return
    assert doc, f"{name} has no docstring"
    assert "Example" in doc or ">>>" in doc, f"{name}'s docstring has no example"


def test_all_is_sorted_and_complete() -> None:
    assert siamkit.__all__ == sorted(siamkit.__all__)
    for name in siamkit.__all__:
        assert hasattr(siamkit, name), name

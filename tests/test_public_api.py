"""Every exported class and function has a docstring with an example."""

from __future__ import annotations

import importlib
import inspect

import pytest

import siamkit
from siamkit._moved import MOVED

PACKAGES = [
    "siamkit",
    "siamkit.alignment",
    "siamkit.data",
    "siamkit.encoders",
    "siamkit.evaluation",
    "siamkit.export",
    "siamkit.index",
    "siamkit.index.stores",
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


@pytest.mark.parametrize("old", sorted(MOVED))
def test_a_moved_module_still_imports_with_a_deprecation_warning(old: str) -> None:
    """Every old path in the table is the new module itself, and says where it went."""
    import subprocess
    import sys

    # A fresh interpreter: here the old path may already be cached in sys.modules.
    script = (
        "import importlib, warnings\n"
        "warnings.simplefilter('error')\n"
        f"new = importlib.import_module({MOVED[old]!r})\n"
        "try:\n"
        f"    importlib.import_module({old!r})\n"
        "except DeprecationWarning as w:\n"
        "    print(w)\n"
        "warnings.simplefilter('ignore')\n"
        f"print(importlib.import_module({old!r}) is new)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    message, same = done.stdout.strip().splitlines()
    assert message.startswith(f"{old} moved to {MOVED[old]}")
    assert same == "True"


def test_the_split_presets_module_re_exports_both_halves_with_a_warning() -> None:
    """``siamkit.training.presets`` became ``recipes`` + ``fine_tuning``; its names still work."""
    import subprocess
    import sys

    script = (
        "import warnings\n"
        "from siamkit.training import fine_tuning, recipes\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    from siamkit.training import presets\n"
        "print(caught[0].category.__name__, caught[0].message)\n"
        "same = all(getattr(presets, n) is getattr(recipes if hasattr(recipes, n) else\n"
        "           fine_tuning, n) for n in presets.__all__ if n != 'CANDIDATES_FOLDER')\n"
        "print(same, len(presets.__all__))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    message, same = done.stdout.strip().splitlines()
    assert message.startswith("DeprecationWarning siamkit.training.presets was split")
    assert same == "True 22"  # the old __all__ (18 names), FACE_* constants and face_aligner

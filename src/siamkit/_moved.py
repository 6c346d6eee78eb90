"""Module paths that moved in the 0.2 redesign: they still import, with a DeprecationWarning.

Each old path is an alias of the module it became (the same module object), so
``from siamkit.index.store import VectorStore`` keeps working for one release.
The table is the one place that lists what moved (the changelog says it too).

Examples:
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     from siamkit.index.store import VectorStore
    >>> VectorStore.__module__, caught[0].category.__name__
    ('siamkit.index.stores.base', 'DeprecationWarning')
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from types import ModuleType

#: Old module path -> where it lives now.
MOVED: dict[str, str] = {
    "siamkit.index.store": "siamkit.index.stores.base",
    "siamkit.index.faiss_store": "siamkit.index.stores.faiss.store",
    "siamkit.index.milvus": "siamkit.index.stores.milvus",
    "siamkit.index.storage": "siamkit.index.stores.faiss.files",
    "siamkit.index.backends": "siamkit.index.stores.faiss.engine",
    "siamkit.training.records": "siamkit.model_folder.records",
}
#: The release that drops the old paths.
REMOVED_IN = "0.3"


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old path and hands back the module it moved to, warning once per import."""

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(
            f"{spec.name} moved to {MOVED[spec.name]}; import it from there (the old path "
            f"goes in siamkit {REMOVED_IN})",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the module is the one already imported under its new path."""


def install() -> None:
    """Put the finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(_MovedModules())

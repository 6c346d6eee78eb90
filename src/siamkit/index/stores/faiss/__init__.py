"""The FAISS store: a gallery in this process, searched by FAISS, saved as checked files.

Modules: ``store`` (:class:`FaissStore`, the contract's implementation), ``engine``
(the FAISS index kinds and their settings), ``search`` (exact distances of the
neighbours FAISS finds), ``rows`` (the vectors and records in memory), ``files``
(atomic saving, locking and loading of the folder), ``manifest`` (the folder's
schema, checked on load) and ``reading`` (reading a FAISS file without trusting it).

Examples:
    >>> from siamkit.index.stores.faiss import FaissStore
    >>> FaissStore(4, "cosine").count()
    0
"""

from siamkit.index.stores.faiss.store import FaissStore

__all__ = ["FaissStore"]

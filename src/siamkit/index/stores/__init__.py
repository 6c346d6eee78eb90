"""Where a face gallery lives: the store contract, the registry, and the built-in stores.

A store keeps the items (id, label, metadata, vector) and answers nearest-neighbour
searches in siamkit's geometry; :class:`~siamkit.index.FaceIndex` is a façade over one.
Built-ins: :class:`FaissStore` (this process, saved as files) and :class:`MilvusStore`
(a Milvus collection several processes share).

Examples:
    >>> from siamkit.index.stores import store_registry
    >>> sorted(store_registry.names())[:2]
    ['faiss', 'milvus']
"""

from siamkit.index.stores.base import (
    StoredItem,
    StoreHits,
    VectorStore,
    register_store,
    store_registry,
)
from siamkit.index.stores.faiss import FaissStore
from siamkit.index.stores.milvus import MilvusStore

__all__ = [
    "FaissStore",
    "MilvusStore",
    "StoreHits",
    "StoredItem",
    "VectorStore",
    "register_store",
    "store_registry",
]

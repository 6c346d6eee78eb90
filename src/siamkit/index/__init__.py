"""Face search: a gallery of embeddings with identify, verify, calibration and saving.

:class:`FaceIndex` keeps its items in a store (:class:`VectorStore`): the FAISS
store in this process (:class:`FaissStore`, the default) or a Milvus collection
(:class:`MilvusStore`).

Examples:
    >>> import numpy as np
    >>> from siamkit.index import FaceIndex
    >>> index = FaceIndex(metric="cosine", dim=3)
    >>> _ = index.add(np.eye(3, dtype="float32"), labels=["ann", "bob", "cy"])
    >>> index.identify(np.array([1, 0.1, 0], dtype="float32"), threshold=0.2).label
    'ann'
"""

from siamkit.index.enrolled_faces import EnrolledFaces
from siamkit.index.enrolment import embed_sharded
from siamkit.index.face_index import FaceIndex
from siamkit.index.results import (
    Calibration,
    Enrolled,
    FpirCalibration,
    Match,
    Neighbors,
    Record,
    SearchResults,
    SkippedImage,
    Verification,
)
from siamkit.index.stores import (
    FaissStore,
    MilvusStore,
    StoredItem,
    StoreHits,
    VectorStore,
    register_store,
    store_registry,
)

__all__ = [
    "Calibration",
    "Enrolled",
    "EnrolledFaces",
    "FaceIndex",
    "FaissStore",
    "FpirCalibration",
    "Match",
    "MilvusStore",
    "Neighbors",
    "Record",
    "SearchResults",
    "SkippedImage",
    "StoreHits",
    "StoredItem",
    "VectorStore",
    "Verification",
    "embed_sharded",
    "register_store",
    "store_registry",
]

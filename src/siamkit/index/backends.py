"""The FAISS side of a face index: which FAISS index, its settings, training and search.

A :class:`Backend` holds the rows of a face index's store in insertion order,
so a FAISS id *is* a row number. It never removes anything: the face index
filters removed rows out and rebuilds the backend when too many pile up,
which works the same for every FAISS index (HNSW cannot remove at all).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from siamkit.exceptions import ConfigError
from siamkit.geometry import _EPS, check_metric

BUILTIN_KINDS: tuple[str, ...] = ("flat", "hnsw", "ivf")

HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
#: Default efSearch: recall@10 0.988 on a million clustered 128-d vectors (64: 0.95).
HNSW_EF_SEARCH = 128
#: "ivf" searches exactly until it holds this many vectors, then trains.
IVF_MIN_TRAIN = 2048
#: "ivf" retrains (more lists) when the rows grow this many times past its training.
IVF_RETRAIN_GROWTH = 8
#: Other indexes that need training (IVF, PQ...) wait for at least this many vectors.
FACTORY_MIN_TRAIN = 10_000
# FAISS warns (on stderr) when k-means gets fewer points per centroid than this.
_POINTS_PER_CENTROID = 39


@dataclass(frozen=True)
class IndexSpec:
    """Which FAISS index a face index uses: a built-in kind or a factory string.

    Examples:
        >>> IndexSpec.parse("HNSW").kind, IndexSpec.parse("IVF256,PQ16").kind
        ('hnsw', 'factory')
    """

    kind: str
    name: str

    @classmethod
    def parse(cls, index: str) -> IndexSpec:
        """``"flat"``, ``"hnsw"``, ``"ivf"`` (any case) or a FAISS ``index_factory`` string."""
        if not isinstance(index, str) or not index.strip():
            raise ConfigError(
                f"index must be 'flat', 'hnsw', 'ivf' or a faiss index_factory string, "
                f"got {index!r}"
            )
        name = index.strip()
        if name.lower() in BUILTIN_KINDS:
            return cls(kind=name.lower(), name=name.lower())
        return cls(kind="factory", name=name)


def faiss_metric(metric: str) -> int:
    """The FAISS metric storing a siamkit geometry: inner product for cosine, L2 for euclidean.

    Examples:
        >>> faiss_metric("cosine") == faiss.METRIC_INNER_PRODUCT
        True
    """
    return faiss.METRIC_INNER_PRODUCT if check_metric(metric) == "cosine" else faiss.METRIC_L2


def to_distances(scores: np.ndarray, metric: str) -> np.ndarray:
    """FAISS scores as siamkit distances: ``1 - inner product`` or ``sqrt`` of squared L2.

    Examples:
        >>> to_distances(np.array([0.25, 1.0], dtype="float32"), "euclidean").tolist()
        [0.5, 1.0]
    """
    if metric == "cosine":
        return 1.0 - scores
    return np.sqrt(np.maximum(scores, 0.0))


def unscaled_query_distances(scores: list[float], metric: str, query_norm: float) -> list[float]:
    """:func:`to_distances` for one query FAISS searched as given, not normalised.

    Scaling a query does not change which items are nearest by inner product,
    so a single cosine query can skip normalisation: its scores are divided by
    its norm here instead, in plain Python (no NumPy call, see
    ``FaceIndex._search_one``).

    Examples:
        >>> unscaled_query_distances([1.5, 0.0], "cosine", query_norm=2.0)
        [0.25, 1.0]
        >>> unscaled_query_distances([0.25], "euclidean", query_norm=9.0)
        [0.5]
    """
    # Kept in double precision: rounding to float32 (array("f")) cost a cold
    # single query 8 µs, so these may differ from a batch's in the last digit.
    if metric == "cosine":
        scale = 1.0 / max(query_norm, _EPS)
        return [1.0 - score * scale for score in scores]
    return [math.sqrt(max(score, 0.0)) for score in scores]


def ivf_lists(num_vectors: int) -> int:
    """Inverted lists for ``num_vectors``: about their square root, 39+ vectors per list.

    Examples:
        >>> ivf_lists(1_000_000)
        1000
    """
    return max(1, min(int(math.sqrt(num_vectors)), num_vectors // _POINTS_PER_CENTROID))


def ivf_probes(nlist: int) -> int:
    """Default lists visited per query: 1/64 of them, at least 8.

    More probes buy recall on galleries without cluster structure, but past a
    few percent of the lists IVF scans as many vectors as exact search does.

    Examples:
        >>> ivf_probes(1000)
        15
    """
    return min(nlist, max(8, nlist // 64))


class Backend:
    """A FAISS index over the rows of a face index's store, with lazy training.

    Args:
        spec: The index to build.
        dim: The embedding size.
        metric: ``"cosine"`` (inner-product index) or ``"euclidean"`` (L2 index).
        ef_search: HNSW search breadth (None: the default).
        nprobe: IVF lists visited per query (None: the default).

    Examples:
        >>> b = Backend(IndexSpec.parse("flat"), dim=2, metric="euclidean")
        >>> b.sync(np.eye(2, dtype="float32"))
        >>> b.search(np.array([[1, 0]], dtype="float32"), 1)[1].tolist()
        [[0]]
    """

    def __init__(
        self,
        spec: IndexSpec,
        dim: int,
        metric: str,
        ef_search: int | None = None,
        nprobe: int | None = None,
    ) -> None:
        self.spec, self.dim, self.metric = spec, int(dim), check_metric(metric)
        self.index: Any = None  # None: not built (or not trained) yet
        self.trained_rows = 0
        self._ef_search: int | None = None
        self._nprobe: int | None = None
        probe = self._create(IVF_MIN_TRAIN)  # validates the spec for this dim
        self._needs_training = not probe.is_trained
        self._factory_lists = _nlist_of(probe)
        self.ef_search = ef_search
        self.nprobe = nprobe

    # -- settings --------------------------------------------------------------------
    @property
    def exact_distances(self) -> bool:
        """Whether FAISS's own scores are exact (else recompute them from the vectors)."""
        return self.spec.kind != "factory"

    @property
    def ef_search(self) -> int | None:
        """HNSW search breadth; None for indexes without HNSW."""
        if self._ef_search is not None:
            return self._ef_search
        return HNSW_EF_SEARCH if self.spec.kind == "hnsw" else None

    @ef_search.setter
    def ef_search(self, value: int | None) -> None:
        self._ef_search = self._check_param("ef_search", value, ("hnsw",), "HNSW")
        self._apply_params()

    @property
    def nprobe(self) -> int | None:
        """IVF lists visited per query; None for indexes without IVF."""
        if self._nprobe is not None:
            return self._nprobe
        if self.spec.kind == "ivf":
            return ivf_probes(ivf_lists(max(self.trained_rows, IVF_MIN_TRAIN)))
        return None

    @nprobe.setter
    def nprobe(self, value: int | None) -> None:
        self._nprobe = self._check_param("nprobe", value, ("ivf",), "IVF")
        self._apply_params()

    def _check_param(
        self, name: str, value: int | None, kinds: tuple[str, ...], family: str
    ) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.spec.kind != "factory" and self.spec.kind not in kinds:
            raise ConfigError(f"{name} tunes {family} indexes; this index is {self.spec.name!r}")
        if self.spec.kind == "factory" and family not in self.spec.name.upper():
            raise ConfigError(f"{name} tunes {family} indexes; {self.spec.name!r} has none")
        return int(value)

    def _apply_params(self) -> None:
        if self.index is None:
            return
        space = faiss.ParameterSpace()
        for key, value in (("efSearch", self.ef_search), ("nprobe", self.nprobe)):
            if value is None:
                continue
            try:
                space.set_index_parameter(self.index, key, int(value))
            except RuntimeError:
                raise ConfigError(
                    f"faiss index {self.spec.name!r} has no {key} parameter to set"
                ) from None

    # -- building --------------------------------------------------------------------
    def min_train(self) -> int:
        """Rows needed before the FAISS index is built; fewer are searched exactly."""
        if self.spec.kind == "ivf":
            return IVF_MIN_TRAIN
        if self._needs_training:
            return max(FACTORY_MIN_TRAIN, _POINTS_PER_CENTROID * self._factory_lists)
        return 0

    def sync(self, vectors: np.ndarray) -> None:
        """Bring the FAISS index up to date with all the store's rows, ``vectors``."""
        n = len(vectors)
        retrain = self.spec.kind == "ivf" and n >= IVF_RETRAIN_GROWTH * self.trained_rows
        if self.index is None or retrain:
            if n and n >= self.min_train():
                self.rebuild(vectors)
            return
        if n > self.index.ntotal:
            self._add(self.index, vectors[self.index.ntotal :])

    def rebuild(self, vectors: np.ndarray) -> None:
        """Build a fresh FAISS index of ``vectors`` (trained on them if it needs it)."""
        n = len(vectors)
        if n == 0 or n < self.min_train():
            self.index, self.trained_rows = None, 0
            return
        index = self._create(n)
        if not index.is_trained:
            index.train(np.ascontiguousarray(vectors))
        self._add(index, vectors)
        self.index, self.trained_rows = index, n
        self._apply_params()

    def _create(self, num_vectors: int) -> Any:
        metric = faiss_metric(self.metric)
        if self.spec.kind == "flat":
            return faiss.IndexFlat(self.dim, metric)
        if self.spec.kind == "hnsw":
            index = faiss.IndexHNSWFlat(self.dim, HNSW_M, metric)
            index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            return index
        spec = f"IVF{ivf_lists(num_vectors)},Flat" if self.spec.kind == "ivf" else self.spec.name
        try:
            index = faiss.index_factory(self.dim, spec, metric)
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise ConfigError(
                f"faiss cannot build index {self.spec.name!r} for {self.dim}-d vectors "
                f"({first}); use 'flat', 'hnsw', 'ivf' or a valid index_factory string"
            ) from None
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None:  # keep FAISS's k-means quiet on small training sets
            ivf.cp.min_points_per_centroid = 1
        return index

    def _add(self, index: Any, vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if "IDMAP" in self.spec.name.upper():
            start = index.ntotal
            index.add_with_ids(vectors, np.arange(start, start + len(vectors), dtype=np.int64))
        else:
            index.add(vectors)

    # -- search ----------------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        """Rows in the FAISS index (0 before it is built)."""
        return 0 if self.index is None else int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """FAISS's ``(scores, rows)`` for ``queries``; rows are -1 where it found nothing."""
        return self.index.search(queries, k)

    # -- persistence -----------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """The settings a saved index records (user-set values only)."""
        return {"trained_rows": self.trained_rows, "ef_search": self._ef_search,
                "nprobe": self._nprobe}  # fmt: skip

    def write(self, write: Callable[[bytes], Any]) -> None:
        """Serialise the FAISS index through ``write(bytes)``."""
        faiss.write_index(self.index, faiss.PyCallbackIOWriter(write))

    def attach(self, index: Any, trained_rows: int, rows: int) -> None:
        """Use an index read from disk, checked against this backend's geometry."""
        problems = []
        if index.d != self.dim:
            problems.append(f"dimension {index.d}, expected {self.dim}")
        if index.ntotal != rows:
            problems.append(f"{index.ntotal} vectors, expected {rows}")
        if index.metric_type != faiss_metric(self.metric):
            problems.append(f"faiss metric {index.metric_type}, expected the {self.metric} one")
        if problems:
            raise ValueError("; ".join(problems))
        self.index, self.trained_rows = index, int(trained_rows)
        self._apply_params()


def _nlist_of(index: Any) -> int:
    ivf = faiss.try_extract_index_ivf(index)
    return int(ivf.nlist) if ivf is not None else 1

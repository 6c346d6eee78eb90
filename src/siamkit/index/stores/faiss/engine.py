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
from siamkit.geometry import NORM_EPS, check_metric
from siamkit.index.stores.settings import (
    BUILTIN_KINDS,
    HNSW_EF_SEARCH,
    index_kind_name,
    ivf_probes,
)

HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
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
        name = index_kind_name(index)
        return cls(kind=name if name in BUILTIN_KINDS else "factory", name=name)


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
        scale = 1.0 / max(query_norm, NORM_EPS)
        return [1.0 - score * scale for score in scores]
    return [math.sqrt(max(score, 0.0)) for score in scores]


def ivf_lists(num_vectors: int) -> int:
    """Inverted lists for ``num_vectors``: about their square root, 39+ vectors per list.

    Examples:
        >>> ivf_lists(1_000_000)
        1000
    """
    return max(1, min(int(math.sqrt(num_vectors)), num_vectors // _POINTS_PER_CENTROID))


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
        if not problems:  # the structure's checks read arrays sized by the above
            problems = structure_problems(index, rows)
        if problems:
            raise ValueError("; ".join(problems[:3]))
        self.index, self.trained_rows = index, int(trained_rows)
        self._apply_params()


# -- checking an index read from a file -------------------------------------------------
def structure_problems(index: Any, rows: int) -> list[str]:
    """What makes ``index`` (read from a file) answer with anything but its ``rows`` rows.

    A search returns the ids the file stores (IVF lists, an id map) or
    reaches rows through the ids it stores (an HNSW graph): each must be a row
    number, each row stored exactly once, or searches raise IndexError, miss
    items or repeat them. FAISS checks little of this on reading (recent
    versions check HNSW graphs, older ones do not; none checks IVF lists), so
    every part is checked here, down the quantizers and wrapped indexes.
    Kinds whose ids cannot be checked (NSG or NN-descent graphs, shards) are
    refused.

    Examples:
        >>> flat = faiss.IndexFlatL2(2)
        >>> flat.add(np.eye(2, dtype="float32"))
        >>> structure_problems(flat, 2), structure_problems(flat, 3)
        ([], ['IndexFlatL2 holds 2 vectors, expected 3'])
    """
    index = faiss.downcast_index(index)
    name = type(index).__name__
    if index.ntotal != rows:
        return [f"{name} holds {index.ntotal} vectors, expected {rows}"]
    if isinstance(index, faiss.IndexIDMap):  # IndexIDMap2 too
        mapped = _array(index.id_map)
        if not np.array_equal(mapped, np.arange(rows)):
            return [f"{name}'s ids are not the row numbers 0..{rows - 1} in order"]
        return structure_problems(index.index, rows)
    if isinstance(index, faiss.IndexPreTransform):
        return structure_problems(index.index, rows)
    if isinstance(index, faiss.IndexRefine):
        return structure_problems(index.base_index, rows) + structure_problems(
            index.refine_index, rows
        )
    if isinstance(index, faiss.IndexIVF):
        return _ivf_problems(index, rows)
    if isinstance(index, faiss.IndexHNSW):
        return _hnsw_problems(index.hnsw, rows) or structure_problems(index.storage, rows)
    if isinstance(index, faiss.IndexFlatCodes):
        size = index.codes.size()
        if size != rows * index.code_size:
            return [f"{name} holds {size} bytes of codes, expected {rows} x {index.code_size}"]
        return []
    if isinstance(index, getattr(faiss, "IndexFastScan", ())):
        return []  # codes scanned in row order: results are row numbers
    return [
        f"siamkit cannot check that a FAISS {name} read from a file answers with its own rows "
        "(its ids could point anywhere): save galleries with 'flat', 'hnsw', 'ivf' or an "
        "IVF, HNSW, PQ or SQ factory string"
    ]


def _ivf_problems(index: Any, rows: int) -> list[str]:
    lists = faiss.downcast_InvertedLists(index.invlists)
    kinds = tuple(getattr(faiss, kind) for kind in ("ArrayInvertedLists", "BlockInvertedLists")
                  if hasattr(faiss, kind))  # fmt: skip
    if not isinstance(lists, kinds):  # on-disk lists would read another file
        return [f"the IVF lists are kept as {type(lists).__name__}, not in the file"]
    if lists.nlist != index.nlist:
        return [f"{lists.nlist} IVF lists, the index says {index.nlist}"]
    found = [_ids_of(lists, number) for number in range(lists.nlist)]
    ids = np.concatenate(found) if found else np.zeros(0, dtype=np.int64)
    if len(ids) != rows:
        return [f"the IVF lists hold {len(ids)} entries for {rows} rows"]
    if len(ids) and (ids.min() < 0 or ids.max() >= rows):
        return [f"the IVF lists hold ids outside the rows 0..{rows - 1}"]
    if len(ids) and np.bincount(ids, minlength=rows).max() > 1:
        return ["the IVF lists hold a row more than once"]
    quantizer = index.quantizer
    if quantizer is None or quantizer.ntotal != index.nlist or quantizer.d != index.d:
        return [f"the IVF quantizer does not hold the {index.nlist} {index.d}-d list centres"]
    return structure_problems(quantizer, index.nlist)


def _ids_of(lists: Any, number: int) -> np.ndarray:
    size = lists.list_size(number)
    if not size:
        return np.zeros(0, dtype=np.int64)
    pointer = lists.get_ids(number)
    try:
        return faiss.rev_swig_ptr(pointer, size).astype(np.int64)
    finally:
        lists.release_ids(number, pointer)


def _hnsw_problems(hnsw: Any, rows: int) -> list[str]:
    """The checks recent FAISS makes on reading an HNSW graph, for the versions without them."""
    cum, levels = _array(hnsw.cum_nneighbor_per_level), _array(hnsw.levels)
    offsets, neighbors = _array(hnsw.offsets), _array(hnsw.neighbors)
    if len(cum) < 2 or cum[0] != 0 or (np.diff(cum) < 0).any():
        return ["the HNSW graph's neighbour counts per level are malformed"]
    if len(levels) != rows or (rows and (levels.min() < 1 or levels.max() >= len(cum))):
        return ["the HNSW graph's levels do not match its rows"]
    if len(offsets) != rows + 1 or offsets[0] != 0:
        return ["the HNSW graph's offsets do not match its rows"]
    if not np.array_equal(np.diff(offsets.astype(np.int64)), cum[levels]):
        return ["the HNSW graph's offsets disagree with its levels"]
    if len(neighbors) != int(offsets[-1]):
        return ["the HNSW graph holds a wrong number of neighbours"]
    if len(neighbors) and (neighbors.min() < -1 or neighbors.max() >= rows):
        return [f"the HNSW graph links to rows outside 0..{rows - 1}"]
    entry, top = int(hnsw.entry_point), int(hnsw.max_level)
    if rows and not (0 <= entry < rows and top == levels[entry] - 1 == levels.max() - 1):
        return ["the HNSW graph's entry point or top level is wrong"]
    return []


def _array(vector: Any) -> np.ndarray:
    """A std::vector of FAISS's as a NumPy view (no copy: graphs can be large)."""
    size = vector.size()
    return faiss.rev_swig_ptr(vector.data(), size) if size else np.zeros(0, dtype=np.int64)


def _nlist_of(index: Any) -> int:
    ivf = faiss.try_extract_index_ivf(index)
    return int(ivf.nlist) if ivf is not None else 1

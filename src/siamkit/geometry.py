"""The one place that decides what "distance" means.

siamkit knows two geometries, chosen by the encoder (``Encoder.metric``) and used
unchanged by the loss, the miners, evaluation thresholds and the face index:

* ``"euclidean"``: ``D = ||a - b||``, embeddings used as they are;
* ``"cosine"``: ``D = 1 - cos(a, b)``, embeddings L2-normalised first, so ``D`` is
  in ``[0, 2]``.

Mixing them (training with one, thresholding with the other) is the most common
mistake in similarity search; routing every distance through this module makes
it impossible inside siamkit.

Huge but finite embeddings are safe here: rows whose largest entry exceeds
``2**40`` are scaled by a power of two before anything is squared (exactly, so
ordinary embeddings get the same distances, bit for bit), and scaled back
after (NumPy normalises in float64, which needs no scaling). The face index
is stricter, as FAISS computes in float32 without such care: it refuses
embeddings whose L2 norm exceeds ``MAX_EMBEDDING_NORM`` (1e18), and under
cosine zero vectors (:func:`check_directions`). Its distances are
:func:`index_distances`, one number per pair whatever computes it.

NumPy arrays are computed in NumPy, tensors in torch (differentiably, on their
device); the two agree to float32 rounding. This module imports torch only when
given a tensor, so evaluation and the face index run without PyTorch.

Examples:
    >>> import torch
    >>> from siamkit.geometry import paired_distances
    >>> a = torch.tensor([[3.0, 0.0]]); b = torch.tensor([[0.0, 4.0]])
    >>> paired_distances(a, b, "euclidean").item()
    5.0
    >>> paired_distances(a, b, "cosine").item()
    1.0
"""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np

from siamkit.exceptions import ConfigError, NonFiniteError, ShapeError

if TYPE_CHECKING:
    import torch

Metric = Literal["euclidean", "cosine"]
METRICS: tuple[str, ...] = ("euclidean", "cosine")

ArrayT = TypeVar("ArrayT", "torch.Tensor", np.ndarray)

#: The smallest norm a distance or a normalisation divides by: sqrt has an
#: infinite gradient at 0, and identical embeddings (a positive pair of one image
#: seen twice) would otherwise poison training with NaN.
NORM_EPS = 1e-12
# How far from 1 the squared norm of a row NumPy's prepare leaves alone may be.
_UNIT_TOLERANCE = 2.0**-22
# Row-wise dot products: NumPy 2's gufunc is a third of einsum's call cost (the
# single-query path counts microseconds); every caller in a process uses the same one.
_row_dot = getattr(np, "vecdot", lambda a, b: np.einsum("...i,...i->...", a, b))

#: The largest L2 norm of an embedding a face index accepts (``NonFiniteError``
#: above it). FAISS computes squared distances in float32 (largest 3.4e38); two
#: vectors of this norm are at most ``(2e18)**2 = 4e36`` apart, a margin of 85x.
#: Real encoders produce norms near 1 (cosine) or at most thousands.
MAX_EMBEDDING_NORM = 1e18
#: Its square: a squared norm above this (or NaN) is refused.
MAX_SQUARED_NORM = MAX_EMBEDDING_NORM**2

# Entries above this are scaled down before squaring (float32 squares overflow
# past 1.8e19); below it nothing changes, bit for bit.
_HUGE = 2.0**40


def check_metric(metric: str) -> Metric:
    """Return ``metric`` lower-cased if siamkit knows it, else raise ``ConfigError``.

    Examples:
        >>> check_metric("Cosine")
        'cosine'
    """
    name = str(metric).lower()
    if name not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}: use one of {', '.join(METRICS)}")
    return name  # type: ignore[return-value]


def is_tensor(*values: Any) -> bool:
    """True if any value is a torch tensor; never imports torch.

    A tensor can only exist once torch is imported, so looking in
    ``sys.modules`` is enough and keeps this module usable without PyTorch.

    Examples:
        >>> is_tensor(np.zeros(2))
        False
    """
    torch = sys.modules.get("torch")
    return torch is not None and any(isinstance(v, torch.Tensor) for v in values)


def _as_tensor(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    import torch

    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x, dtype=np.float32))


def _like(result: torch.Tensor, template: ArrayT) -> ArrayT:
    if is_tensor(template):
        return result
    return result.detach().cpu().numpy().astype(np.float32, copy=False)


def check_embeddings(x: torch.Tensor | np.ndarray, name: str = "embeddings") -> None:
    """Raise if ``x`` is not a 2-D matrix of finite numbers.

    Examples:
        >>> check_embeddings(np.zeros((2, 3)))
    """
    if is_tensor(x):
        import torch

        shape, finite = tuple(x.shape), not x.numel() or bool(torch.isfinite(x).all())
    else:
        array = np.asarray(x, dtype=np.float32)
        shape, finite = array.shape, bool(np.isfinite(array).all())
    if len(shape) != 2:
        raise ShapeError(f"{name} must be a 2-D (N, D) matrix, got shape {shape}")
    if not finite:
        raise NonFiniteError(
            f"{name} contain NaN or infinity: check the model's inputs and learning rate"
        )


def check_directions(x: np.ndarray, metric: str, what: str = "embeddings") -> None:
    """Under cosine, refuse rows too short to have a direction (zero vectors).

    Cosine compares directions: a row of L2 norm below ``1e-12`` (zeros, a
    blank or failed image's embedding) has none, :func:`prepare` cannot make
    it unit length, and its distance to anything is 0/0. A face index applies
    this rule to everything it is given, before any store sees it, so every
    store refuses such a row alike. Euclidean distances need no direction.

    Raises:
        NonFiniteError: naming the rows (the error of every embedding a
            distance cannot be computed from: NaN, infinite, or too large).

    Examples:
        >>> check_directions(np.zeros((1, 3), np.float32), "euclidean")
        >>> check_directions(np.zeros((1, 3), np.float32), "cosine")
        Traceback (most recent call last):
        ...
        siamkit.exceptions.NonFiniteError: embeddings hold zero vectors (rows [0], L2 norm ...
    """
    if check_metric(metric) != "cosine" or not x.size:
        return
    x = np.asarray(x, dtype=np.float32)
    # prepare's test, for the rows it does not scale: the rest are far from short.
    short = np.flatnonzero(np.sqrt(np.einsum("...i,...i->...", x, x)) < np.float32(NORM_EPS))
    if short.size:
        raise NonFiniteError(
            f"{what} hold zero vectors (rows {short[:5].tolist()}, L2 norm below {NORM_EPS:g}): "
            "they have no direction, so their cosine distance to anything is undefined. Drop "
            "them (blank or failed images?), or use the euclidean metric"
        )


def embeddings_and_labels(embeddings: Any, labels: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Checked float32 embeddings and a flat label array of the same length.

    Raises:
        ShapeError: not an ``(N, D)`` matrix, or another number of labels.
        NonFiniteError: NaN or infinity.

    Examples:
        >>> emb, lab = embeddings_and_labels([[0.0, 1.0]], [[3]], "embeddings")
        >>> emb.dtype, lab.tolist()
        (dtype('float32'), [3])
    """
    check_embeddings(embeddings, what)
    emb = np.asarray(embeddings, dtype=np.float32)
    lab = np.asarray(labels).reshape(-1)
    if len(lab) != len(emb):
        raise ShapeError(f"{len(emb)} {what} but {len(lab)} labels")
    return emb, lab


def _scales(peak: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(down, up)``: powers of two taking ``peak`` to about 1 where it exceeds 2**40, else 1.

    Powers of two multiply exactly, so scaled rows keep every bit of precision.
    """
    import torch

    top = math.frexp(torch.finfo(peak.dtype).max)[1] - 2  # 2**top and 2**-top are normal
    exponent = torch.frexp(peak).exponent.clamp(max=top)
    exponent = torch.where(peak > _HUGE, exponent, torch.zeros_like(exponent))
    one = torch.ones_like(peak)
    return torch.ldexp(one, -exponent), torch.ldexp(one, exponent)


def _np_scales(peak: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_scales` in NumPy, of the same float32 powers of two."""
    top = math.frexp(float(np.finfo(peak.dtype).max))[1] - 2
    exponent = np.minimum(np.frexp(peak)[1], top)
    exponent = np.where(peak > _HUGE, exponent, 0)
    one = np.ones_like(peak)
    return np.ldexp(one, -exponent), np.ldexp(one, exponent)


def _row_peak(t: torch.Tensor) -> torch.Tensor:
    """The largest magnitude of each row, ``(..., 1)``; 0 for rows of no entries."""
    if t.shape[-1] == 0:
        return t.new_zeros((*t.shape[:-1], 1))
    return t.detach().abs().amax(dim=-1, keepdim=True)


def _np_row_peak(x: np.ndarray) -> np.ndarray:
    if x.shape[-1] == 0:
        return np.zeros((*x.shape[:-1], 1), dtype=x.dtype)
    return np.abs(x).max(axis=-1, keepdims=True)


def prepare(x: ArrayT, metric: str) -> ArrayT:
    """Put embeddings in the form the geometry compares: L2-normalised for cosine.

    Norms are computed without overflow: a row of ``1e30`` normalises to the
    same unit vector as a row of ones. NumPy arrays are normalised in float64
    and a row already of unit length is left as it is, so preparing twice gives
    the numbers of preparing once.

    Examples:
        >>> prepare(np.array([[3.0, 4.0]], dtype=np.float32), "cosine").tolist()
        [[0.6000000238418579, 0.800000011920929]]
        >>> prepare(np.full((1, 4), 1e30, dtype=np.float32), "cosine").tolist()
        [[0.5, 0.5, 0.5, 0.5]]
    """
    if check_metric(metric) == "euclidean":
        return x
    if not is_tensor(x):
        return _np_normalize(np.asarray(x, dtype=np.float32))  # type: ignore[return-value]
    import torch

    if not x.is_floating_point() or x.numel() == 0:
        return torch.nn.functional.normalize(x, dim=-1, eps=NORM_EPS)
    down, _ = _scales(_row_peak(x))
    return torch.nn.functional.normalize(x * down, dim=-1, eps=NORM_EPS)


def _np_normalize(x: np.ndarray) -> np.ndarray:
    """Float32 rows divided by their L2 norm, worked out in float64; prepared rows kept.

    Float64 needs no scaling for any float32 row (squares reach 1e77 at most),
    and scaling a row by a power of two scales nothing else. A row already of
    unit length to within ``2**-22`` (the result of a first normalisation,
    which lands within ``2**-23``) is returned as it is, so preparing twice
    gives the same numbers as once: a stored vector searched for is exactly 0
    from itself. Rows of norm below ``1e-12`` are divided by ``1e-12``, as
    ``torch.nn.functional.normalize`` does.
    """
    wide = x.astype(np.float64)
    squared = _row_dot(wide, wide)
    kept = np.abs(squared - 1.0) <= _UNIT_TOLERANCE
    if kept.all():  # the common case (embeddings a unit-sphere encoder made): no division
        return x
    unit = (wide / np.maximum(np.sqrt(squared), NORM_EPS)[..., None]).astype(np.float32)
    return np.where(kept[..., None], x, unit) if kept.any() else unit


def prepare_query(vector: np.ndarray, metric: str) -> np.ndarray:
    """One float32 query ``(D,)`` as :func:`prepare` leaves it, as a ``(1, D)`` row.

    The same numbers as ``prepare(vector[None], metric)``, in fewer NumPy
    calls for the common case, a query already of unit length: a face index's
    single-query path runs right after FAISS has swept the CPU caches, where
    every call costs microseconds.

    Examples:
        >>> q = np.array([0.6, 0.8], dtype=np.float32)
        >>> prepare_query(q, "cosine").tolist() == prepare(q[None], "cosine").tolist()
        True
    """
    row = vector[None]
    if metric == "euclidean":
        return row
    wide = row.astype(np.float64)
    # prepare's own test, on the same float64 squares, so the two decide alike.
    if abs(float(_row_dot(wide, wide)[0]) - 1.0) <= _UNIT_TOLERANCE:
        return row
    return prepare(row, metric)


def index_distances(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    """The face index's distance between rows of ``a`` and ``b``: one number per pair.

    ``a`` and ``b`` are embeddings as a face index keeps them: float32 and
    :func:`prepare`-d (unit length for cosine), of broadcastable shapes
    ``(..., D)``. Every distance a face index reports (search, on any store;
    verify; the pairs and searches calibration measures) is this function's,
    so a pair of faces has one distance whichever entry point computes it,
    and a threshold fitted on it decides the same everywhere. It works from
    the differences in float64 and rounds the result to float32:

    * ``"euclidean"``: ``sqrt(sum((a - b)**2))``;
    * ``"cosine"``: ``sum((a - b)**2) / 2``, which for unit vectors is
      ``1 - cos(a, b)`` (at most 2).

    Working from the differences, two equal embeddings are exactly 0 apart
    (``1 - a.b`` would leave the rounding of the normalisation, about 1e-7;
    FAISS's float32 ``|a|^2 - 2a.b + |b|^2``, more), and float64 leaves no
    overflow for any float32 input. The result agrees with
    :func:`pairwise_distances` to float32 rounding.

    Examples:
        >>> a = np.array([[0.0, 0.0], [1.0, 1.0]], dtype=np.float32)
        >>> b = np.array([[3.0, 4.0]], dtype=np.float32)
        >>> index_distances(a, b, "euclidean").tolist()
        [5.0, 3.605551242828369]
        >>> u = prepare(np.array([[1.0, 0.0], [1.0, 1.0]], dtype=np.float32), "cosine")
        >>> [round(d, 6) for d in index_distances(u, u[:1], "cosine").tolist()]
        [0.0, 0.292893]
    """
    squared = _squared_differences(a, b)
    if check_metric(metric) == "euclidean":
        return np.sqrt(squared).astype(np.float32)
    out = (squared * 0.5).astype(np.float32)
    # Clamped after rounding: float32 rounding keeps order and 2.0 is exact, so
    # this equals clamping first (index_distance_list clamps in Python).
    return np.minimum(out, np.float32(2.0))


def index_distance_list(rows: np.ndarray, query: np.ndarray, metric: str) -> list[float]:
    """:func:`index_distances` of a few ``rows`` to one ``query`` row, as a list.

    The same numbers as ``index_distances(rows, query, metric).tolist()``, with
    fewer NumPy calls: the single-query path of a face index.

    Examples:
        >>> rows = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
        >>> index_distance_list(rows, rows[:1], "cosine")
        [0.0, 1.0]
    """
    squared = _squared_differences(rows, query)
    if metric == "euclidean":
        return np.sqrt(squared).astype(np.float32).tolist()
    return [min(d, 2.0) for d in (squared * 0.5).astype(np.float32).tolist()]


def _squared_differences(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    diff = np.subtract(a, b, dtype=np.float64)
    return _row_dot(diff, diff)


def paired_distances(a: ArrayT, b: ArrayT, metric: str) -> ArrayT:
    """Distance between each row of ``a`` and the same row of ``b``.

    Args:
        a: ``(N, D)`` embeddings.
        b: ``(N, D)`` embeddings.
        metric: ``"euclidean"`` or ``"cosine"``.

    Returns:
        ``(N,)`` distances, a tensor or an array like ``a``.

    Examples:
        >>> paired_distances(np.ones((2, 2)), np.zeros((2, 2)), "euclidean")
        array([1.4142135, 1.4142135], dtype=float32)
    """
    metric = check_metric(metric)
    if not is_tensor(a, b):
        return _np_paired(np.asarray(a, np.float32), np.asarray(b, np.float32), metric)
    ta, tb = _as_tensor(a), _as_tensor(b)
    _check_paired_shapes(tuple(ta.shape), tuple(tb.shape))
    if metric == "euclidean":
        d = _paired_euclidean(ta, tb)
    else:
        d = 1.0 - (prepare(ta, metric) * prepare(tb, metric)).sum(-1)
    return _like(d, a)


def _check_paired_shapes(a: tuple[int, ...], b: tuple[int, ...]) -> None:
    if a != b:
        raise ShapeError(f"paired embeddings differ in shape: {a} vs {b}")


def _paired_euclidean(ta: torch.Tensor, tb: torch.Tensor) -> torch.Tensor:
    if not ta.is_floating_point() or ta.numel() == 0:
        return ((ta - tb) ** 2).sum(-1).clamp_min(NORM_EPS).sqrt()
    import torch

    down, up = _scales(torch.maximum(_row_peak(ta), _row_peak(tb)))
    down, up = down.squeeze(-1), up.squeeze(-1)
    sq = ((ta * down[..., None] - tb * down[..., None]) ** 2).sum(-1)
    # A scalar floor, as before scaling: a tensor one would round to 0 in float16.
    return sq.clamp_min(NORM_EPS).sqrt() * up


def _np_paired(a: np.ndarray, b: np.ndarray, metric: Metric) -> np.ndarray:
    """:func:`paired_distances` of float32 arrays, by the formulas of the torch code."""
    _check_paired_shapes(a.shape, b.shape)
    if metric == "cosine":
        return 1.0 - (_np_normalize(a) * _np_normalize(b)).sum(-1)
    down, up = _np_scales(np.maximum(_np_row_peak(a), _np_row_peak(b)))
    down, up = down[..., 0], up[..., 0]
    sq = ((a * down[..., None] - b * down[..., None]) ** 2).sum(-1)
    return np.sqrt(np.maximum(sq, np.float32(NORM_EPS))) * up


def pairwise_distances(a: ArrayT, b: ArrayT | None, metric: str) -> ArrayT:
    """All distances between the rows of ``a`` and the rows of ``b`` (``a`` itself if None).

    Examples:
        >>> pairwise_distances(np.eye(2), None, "cosine").tolist()
        [[0.0, 1.0], [1.0, 0.0]]
    """
    metric = check_metric(metric)
    if not is_tensor(a, b):
        return _np_pairwise(a, b, metric)  # type: ignore[return-value]
    import torch

    ta = _as_tensor(a)
    tb = ta if b is None else _as_tensor(b)
    _check_sizes(ta.shape[-1], tb.shape[-1])
    if metric == "euclidean":
        d = _pairwise_euclidean(ta, tb)
    else:
        d = 1.0 - prepare(ta, metric) @ prepare(tb, metric).T
    if b is None:
        d = d - torch.diag_embed(torch.diagonal(d))  # self-distance is exactly zero
    return _like(d, a)


def _check_sizes(a: int, b: int) -> None:
    if a != b:
        raise ShapeError(f"embedding sizes differ: {a} vs {b}")


def _pairwise_euclidean(ta: torch.Tensor, tb: torch.Tensor) -> torch.Tensor:
    if ta.is_floating_point() and ta.numel() and tb.numel():
        import torch

        # One scale for all rows: the cross term mixes every row of a with every row of b.
        down, up = _scales(torch.maximum(_row_peak(ta).max(), _row_peak(tb).max()))
        scaled = ta * down
        ta, tb = scaled, scaled if tb is ta else tb * down
    else:
        up = None
    sq = (ta * ta).sum(-1, keepdim=True) - 2 * ta @ tb.T + (tb * tb).sum(-1)
    d = sq.clamp_min(NORM_EPS).sqrt()
    return d if up is None else d * up


def _np_pairwise(a: Any, b: Any | None, metric: Metric) -> np.ndarray:
    """:func:`pairwise_distances` in NumPy, by the formulas of the torch code."""
    a = np.asarray(a, dtype=np.float32)
    itself = b is None
    b = a if itself else np.asarray(b, dtype=np.float32)
    _check_sizes(a.shape[-1], b.shape[-1])
    if metric == "cosine":
        unit = _np_normalize(a)
        d = 1.0 - unit @ (unit if itself else _np_normalize(b)).T
    else:
        d = _np_pairwise_euclidean(a, b, itself)
    if itself:
        diagonal = np.arange(len(d))
        d[diagonal, diagonal] -= d[diagonal, diagonal]  # as torch does: 0, NaN stays NaN
    return d


def _np_pairwise_euclidean(a: np.ndarray, b: np.ndarray, itself: bool) -> np.ndarray:
    up = None
    if a.size and b.size:
        down, up = _np_scales(np.maximum(_np_row_peak(a).max(), _np_row_peak(b).max()))
        a = a * down
        b = a if itself else b * down
    sq = (a * a).sum(-1, keepdims=True) - 2 * a @ b.T + (b * b).sum(-1)
    d = np.sqrt(np.maximum(sq, np.float32(NORM_EPS)))
    return d if up is None else d * up

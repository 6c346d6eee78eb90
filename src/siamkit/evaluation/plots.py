"""The pictures of an evaluation: ROC, DET, distance histograms, CMC, pair and retrieval grids.

Every function draws with Matplotlib's object API (no global pyplot state) and
writes a PNG atomically.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from siamkit._atomic import write_with
from siamkit.evaluation.verification import RocCurve
from siamkit.thresholds import DetCurve, FpirCalibration

GOOD, BAD = "#2e7d32", "#c62828"


def _figure(width: float, height: float) -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


def _save(figure: Any, path: str | os.PathLike) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    write_with(path, lambda handle: handle.write(buffer.getvalue()))


def plot_roc(curves: dict[str, RocCurve], path: str | os.PathLike) -> None:
    """ROC curves (TAR against FAR, FAR on a log axis) of one or more models.

    Examples:
        >>> import tempfile, os
        >>> from siamkit.evaluation import roc_curve
        >>> p = os.path.join(tempfile.mkdtemp(), "roc.png")
        >>> plot_roc({"model": roc_curve([0.1, 0.5, 0.3], [True, False, True])}, p)
        >>> os.path.exists(p)
        True
    """
    figure = _figure(5.5, 4.5)
    ax = figure.subplots()
    for name, curve in curves.items():
        far = np.maximum(curve.far, 1e-5)
        ax.step(far, curve.tar, where="post", label=name)
    ax.set_xscale("log")
    ax.set(xlim=(1e-4, 1.0), ylim=(0, 1.01), xlabel="false accept rate (FAR)",
           ylabel="true accept rate (TAR)", title="ROC on held-out people")  # fmt: skip
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right")
    _save(figure, path)


def plot_det(
    curves: dict[str, DetCurve],
    path: str | os.PathLike,
    points: Sequence[FpirCalibration] = (),
) -> None:
    """DET curves of open-set search: FNIR against FPIR, both on log axes.

    Rates of 0 are drawn at the axes' floor (1e-4). ``points`` marks fitted
    operating points (e.g. FNIR at FPIR 0.01).

    Examples:
        >>> import tempfile, os
        >>> from siamkit.thresholds import OpenSetScores, det_curve
        >>> p = os.path.join(tempfile.mkdtemp(), "det.png")
        >>> plot_det({"model": det_curve(OpenSetScores([0.1, 0.5], [True, True], [0.3]))}, p)
        >>> os.path.exists(p)
        True
    """
    floor = 1e-4
    figure = _figure(5.5, 4.5)
    ax = figure.subplots()
    for name, curve in curves.items():
        ax.step(np.maximum(curve.fpir, floor), np.maximum(curve.fnir, floor), where="post",
                label=name)  # fmt: skip
    for fit in points:
        if fit.fnir is not None:
            ax.plot(max(fit.fpir, floor), max(fit.fnir, floor), "o", color=BAD)
            ax.annotate(f"FPIR {fit.target_fpir:g}", (max(fit.fpir, floor), max(fit.fnir, floor)),
                        textcoords="offset points", xytext=(4, 4), fontsize=8)  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set(xlim=(floor, 1.0), ylim=(floor, 1.05), title="DET of open-set search",
           xlabel="false positive identification rate (FPIR, strangers matched)",
           ylabel="false negative identification rate (FNIR)")  # fmt: skip
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper right")
    _save(figure, path)


def plot_distance_histograms(
    distances: Any, same: Any, threshold: float | None, path: str | os.PathLike
) -> None:
    """Histograms of genuine and impostor pair distances, with the threshold drawn."""
    d = np.asarray(distances, dtype=float)
    s = np.asarray(same, dtype=bool)
    figure = _figure(6, 4)
    ax = figure.subplots()
    bins = np.linspace(d.min(), d.max(), 50)
    ax.hist(d[~s], bins=bins, alpha=0.6, density=True, color=BAD, label=f"impostor ({(~s).sum()})")
    ax.hist(d[s], bins=bins, alpha=0.6, density=True, color=GOOD, label=f"genuine ({s.sum()})")
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3f}")
    ax.set(xlabel="distance (dissimilarity)", ylabel="density", title="Pair distances")
    ax.legend()
    _save(figure, path)


def plot_cmc(cmc: Sequence[float], path: str | os.PathLike) -> None:
    """The cumulative match characteristic: rank-k identification rate against k."""
    figure = _figure(5, 4)
    ax = figure.subplots()
    ranks = np.arange(1, len(cmc) + 1)
    ax.plot(ranks, cmc, marker="o")
    ax.set(xlabel="rank k", ylabel="identification rate", title="CMC", ylim=(0, 1.01))
    ax.grid(alpha=0.3)
    _save(figure, path)


@dataclass(frozen=True)
class PairExample:
    """One pair for :func:`plot_pair_grid`."""

    image_a: Image.Image
    image_b: Image.Image
    distance: float
    same: bool
    predicted_same: bool


def _show(ax: Any, image: Image.Image, colour: str | None = None) -> None:
    ax.imshow(np.asarray(image.convert("L")), cmap="gray", vmin=0, vmax=255)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(colour is not None)
        if colour:
            spine.set_color(colour)
            spine.set_linewidth(4)


def plot_pair_grid(pairs: Sequence[PairExample], path: str | os.PathLike, columns: int = 4) -> None:
    """Pairs of faces side by side, each with its dissimilarity and whether the call was right."""
    rows = max(1, -(-len(pairs) // columns))
    figure = _figure(3.2 * columns, 2.3 * rows)
    axes = figure.subplots(rows, 2 * columns, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for index, pair in enumerate(pairs):
        row, col = divmod(index, columns)
        left, right = axes[row, 2 * col], axes[row, 2 * col + 1]
        right_call = pair.same == pair.predicted_same
        colour = GOOD if right_call else BAD
        for ax, image in ((left, pair.image_a), (right, pair.image_b)):
            ax.set_axis_on()
            _show(ax, image, colour)
        verdict = "same" if pair.predicted_same else "different"
        mark = "right" if right_call else "WRONG"
        left.set_title(
            f"dissimilarity {pair.distance:.3f}: {verdict} ({mark})", loc="left", fontsize=9,
            color=colour,
        )  # fmt: skip
    _save(figure, path)


@dataclass(frozen=True)
class RetrievalExample:
    """One query and its nearest gallery matches for :func:`plot_retrieval_grid`."""

    query: Image.Image
    query_label: str
    matches: Sequence[tuple[Image.Image, str, float]]
    #: Title above the query (default "query" and its label).
    caption: str | None = None
    #: Frame colour of the query (e.g. whether a decision about it was right).
    colour: str | None = None


def plot_retrieval_grid(rows: Sequence[RetrievalExample], path: str | os.PathLike) -> None:
    """Each query beside its top-k gallery matches, right matches green and wrong ones red."""
    k = max((len(r.matches) for r in rows), default=1)
    figure = _figure(1.6 * (k + 1), 2.1 * max(1, len(rows)))
    axes = figure.subplots(max(1, len(rows)), k + 1, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for r, example in enumerate(rows):
        axes[r, 0].set_axis_on()
        _show(axes[r, 0], example.query, example.colour)
        caption = example.caption or f"query\n{example.query_label}"
        axes[r, 0].set_title(caption, fontsize=8, color=example.colour or "black")
        for c, (image, label, distance) in enumerate(example.matches, start=1):
            colour = GOOD if label == example.query_label else BAD
            axes[r, c].set_axis_on()
            _show(axes[r, c], image, colour)
            axes[r, c].set_title(f"{label}\n{distance:.3f}", fontsize=8, color=colour)
    _save(figure, path)

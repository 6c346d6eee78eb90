"""The loss curve picture, with the validation metrics beside it."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import Any

from siamkit._atomic import write_with


def plot_history(history: Sequence[dict[str, Any]], path: str | os.PathLike) -> None:
    """Draw training loss per epoch and, when present, validation AUC and EER, to a PNG.

    Examples:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "loss_plot.png")
        >>> plot_history([{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.3}], p)
        >>> os.path.getsize(p) > 0
        True
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    epochs = [r["epoch"] for r in history]
    has_val = any("val_auc" in r for r in history)
    figure = Figure(figsize=(10 if has_val else 6, 4), dpi=100)
    axes = figure.subplots(1, 2 if has_val else 1, squeeze=False)[0]
    axes[0].plot(epochs, [r["loss"] for r in history], color="tab:blue")
    axes[0].set(xlabel="epoch", ylabel="contrastive loss", title="Training loss")
    axes[0].grid(alpha=0.3)
    if has_val:
        val = [r for r in history if "val_auc" in r]
        ax = axes[1]
        ax.plot(
            [r["epoch"] for r in val],
            [r["val_auc"] for r in val],
            color="tab:green",
            label="ROC AUC",
        )
        ax.set(xlabel="epoch", ylabel="AUC", title="Validation on held-out people")
        ax.grid(alpha=0.3)
        twin = ax.twinx()
        twin.plot(
            [r["epoch"] for r in val],
            [100 * r["val_eer"] for r in val],
            color="tab:red",
            label="EER",
        )
        twin.set_ylabel("EER (%)")
        lines = ax.get_lines() + twin.get_lines()
        ax.legend(lines, [line.get_label() for line in lines], loc="center right")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    write_with(path, lambda handle: handle.write(buffer.getvalue()))

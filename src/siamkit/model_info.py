"""What a saved model is, read back: the library side of ``siamkit info``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from siamkit.runtime.export_files import is_export


@dataclass(frozen=True)
class ModelInfo:
    """A saved model (a folder :meth:`Encoder.save` wrote, or an ONNX export), described.

    Attributes:
        path: What was read.
        kind: ``"pytorch"`` (a model folder) or ``"onnx"`` (an export).
        encoder: The encoder's registered name (None for an export of an
            unregistered class).
        config: The encoder's saved constructor arguments (empty for an export).
        embedding_dim: The size of its embeddings.
        metric: ``"cosine"`` or ``"euclidean"``: the one distance training,
            the index and the thresholds use.
        fingerprint: The SHA-256 a face index checks its encoder against.
        aligner: The face aligner's registered name, or None (images used as they are).
        aligner_config: The aligner's saved settings (detector, threshold, chip size).
        fine_tuning: The face recipe's choice, one line (``"kept frozen: ..."``), or None
            for a model the recipe did not choose.

    Examples:
        >>> import tempfile, siamkit
        >>> folder = siamkit.create_encoder("mlp", input_dim=4, embedding_dim=2).save(
        ...     tempfile.mkdtemp())
        >>> info = model_info(folder)
        >>> info.kind, info.encoder, info.embedding_dim, info.aligner
        ('pytorch', 'mlp', 2, None)
    """

    path: Path
    kind: str
    encoder: str | None
    config: dict[str, Any] = field(default_factory=dict)
    embedding_dim: int = 0
    metric: str = "euclidean"
    fingerprint: str = ""
    aligner: str | None = None
    aligner_config: dict[str, Any] = field(default_factory=dict)
    fine_tuning: str | None = None

    def lines(self) -> list[str]:
        """The description as ``siamkit info`` prints it, a line per field."""

        def settings(config: dict[str, Any]) -> str:
            return ", ".join(f"{key}={value!r}" for key, value in sorted(config.items()))

        aligner = "none (images used as they are)"
        if self.aligner is not None:
            aligner = f"{self.aligner} ({settings(self.aligner_config)})"
        lines = [
            f"model:       {self.path} ({self.kind})",
            f"encoder:     {self.encoder or 'unregistered'}"
            + (f" ({settings(self.config)})" if self.config else ""),
            f"embeddings:  {self.embedding_dim}-d, {self.metric} distance",
            f"aligner:     {aligner}",
            f"fingerprint: {self.fingerprint}",
        ]
        if self.fine_tuning is not None:
            lines.append(f"recipe:      {self.fine_tuning}")
        return lines


def model_info(path: str | os.PathLike) -> ModelInfo:
    """Describe the model at ``path``, loaded and checked as :func:`~siamkit.load_encoder` does.

    An ONNX export is described without PyTorch.

    Raises:
        ModelFileError: ``path`` is not a model, or a file of it is damaged or edited.

    Examples:
        >>> model_info("runs/faces").aligner  # doctest: +SKIP
        'yunet'
    """
    if is_export(path):
        from siamkit.runtime.onnx import OnnxEncoder

        encoder: Any = OnnxEncoder(path)
        # The manifest names the class it was exported from; its config stays with the model.
        name, config, kind, selection = encoder.manifest["encoder"]["name"], {}, "onnx", None
    else:
        from siamkit.encoders.base import encoder_registry, load_encoder
        from siamkit.training.fine_tuning import read_fine_tuning

        encoder = load_encoder(path)
        name = encoder_registry.name_of(type(encoder))
        config, kind = encoder.get_config(), "pytorch"
        selection = read_fine_tuning(path)
    aligner = encoder.aligner.describe() if encoder.aligner is not None else None
    return ModelInfo(
        path=Path(path),
        kind=kind,
        encoder=name,
        config=config,
        embedding_dim=int(encoder.embedding_dim),
        metric=encoder.metric,
        fingerprint=encoder.fingerprint(),
        aligner=None if aligner is None else aligner["name"],
        aligner_config={} if aligner is None else dict(aligner["config"]),
        fine_tuning=None if selection is None else selection.summary(),
    )


__all__ = ["ModelInfo", "model_info"]

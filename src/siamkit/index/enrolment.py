"""Embedding a gallery across the processes of a ``torchrun`` group.

Each process embeds its contiguous share of the images and every process
gets the whole result back, in order, so enrolling a large gallery scales
with the processes. Only used under ``torch.distributed``; torch is imported
when it runs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from siamkit.index._inputs import embed_items


def embed_sharded(
    encoder: Any, items: list[Any], ctx: Any, batch_size: int = 64, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Embed ``items`` across the process group: ``(embeddings (N, D), kept (N,) bool)``.

    Every process must call it with the same ``items``. ``kept`` is False for
    images the encoder's aligner skipped (no face, ``on_missing="skip"``);
    their rows are zeros. With one process this is ``embed_items``.

    Args:
        encoder: The encoder (the same model in every process).
        items: Every image (paths), the same list in every process.
        ctx: The :class:`~siamkit.training.distributed.DistributedContext`.
        batch_size: Images encoded at once.
        progress: Show this process's progress bar.

    Examples:
        >>> import siamkit
        >>> from PIL import Image
        >>> from siamkit.training.distributed import DistributedContext
        >>> encoder = siamkit.create_encoder("compact", channels=[8, 16])
        >>> emb, kept = embed_sharded(encoder, [Image.new("L", (46, 56))], DistributedContext())
        >>> emb.shape, kept.tolist()
        ((1, 128), [True])
    """
    import torch

    from siamkit.training.distributed import gather_rows, split_range

    part = split_range(len(items), ctx)
    dim = int(encoder.embedding_dim)
    local = np.zeros((len(part), dim + 1), dtype=np.float32)  # last column: kept
    if len(part):
        embedded = embed_items(items[part.start : part.stop], encoder, dim, batch_size, progress)
        local[embedded.kept, :dim] = embedded.embeddings
        local[embedded.kept, dim] = 1.0
    rows = gather_rows(torch.from_numpy(local), len(items), ctx).numpy()
    return np.ascontiguousarray(rows[:, :dim]), rows[:, dim] > 0.5

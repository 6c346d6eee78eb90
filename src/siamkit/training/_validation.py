"""Validation metrics and whitening over every rank's share of a set of images."""

from __future__ import annotations

import numpy as np
import torch

from siamkit.encoders.base import Encoder
from siamkit.encoders.whitening import whitening_layers
from siamkit.evaluation.identification import rank1_leave_one_out
from siamkit.evaluation.verification import all_pairs_distances, verification_metrics
from siamkit.model_folder.records import ValidationMetrics
from siamkit.training._sources import ImageSource
from siamkit.training.distributed import DistributedContext, gather_rows, split_range

_EMBED_BATCH = 256


@torch.no_grad()
def embed_all(
    encoder: Encoder, source: ImageSource, ctx: DistributedContext, device: torch.device
) -> np.ndarray:
    """Embeddings of every image of ``source``; each rank embeds its share."""
    share = list(split_range(len(source), ctx))
    parts = [
        torch.from_numpy(encoder.embed(source.batch(share[i : i + _EMBED_BATCH]).to(device)))
        for i in range(0, len(share), _EMBED_BATCH)
    ]
    local = torch.cat(parts) if parts else torch.zeros(0, encoder.embedding_dim)
    return gather_rows(local, len(source), ctx).numpy()


def validation_metrics(
    encoder: Encoder,
    source: ImageSource,
    ctx: DistributedContext,
    device: torch.device,
    metric: str,
) -> ValidationMetrics:
    """AUC, EER (and its threshold) and rank-1 over all pairs of ``source``'s people."""
    embeddings = embed_all(encoder, source, ctx, device)
    distances, same = all_pairs_distances(embeddings, source.labels, metric)
    result = verification_metrics(distances, same)
    return ValidationMetrics(
        auc=float(result.auc),
        eer=float(result.eer),
        threshold=float(result.eer_threshold),
        rank1=float(rank1_leave_one_out(embeddings, source.labels, metric)),
    )


@torch.no_grad()
def fit_whitening(
    encoder: Encoder,
    train: ImageSource,
    ctx: DistributedContext,
    device: torch.device,
    enabled: bool,
) -> bool:
    """Fit the encoder's Whitening layers on the training people; True if there were any."""
    layers = whitening_layers(encoder) if enabled else []
    share = list(split_range(len(train), ctx))
    for layer in layers:
        captured: list[torch.Tensor] = [torch.zeros(0, layer.mean.numel())]
        hook = layer.register_forward_hook(
            lambda _m, inputs, _o, store=captured: store.append(inputs[0].cpu())
        )
        try:
            for start in range(0, len(share), _EMBED_BATCH):
                encoder.embed(train.batch(share[start : start + _EMBED_BATCH]).to(device))
        finally:
            hook.remove()
        layer.fit(gather_rows(torch.cat(captured), len(train), ctx), train.labels)
    return bool(layers)

"""Devices and the data-parallel wrapping of an encoder for :class:`~siamkit.training.Trainer`."""

from __future__ import annotations

import inspect
from contextlib import ExitStack

import torch
from torch import nn

from siamkit.data.sampling import ClassBalancedBatchSampler
from siamkit.exceptions import ConfigError
from siamkit.training._sync_bn import has_batchnorm, synced_batchnorm
from siamkit.training.distributed import DistributedContext


def check_world(sampler: ClassBalancedBatchSampler, ctx: DistributedContext) -> None:
    """Refuse a global batch that cannot be shared out over the ranks.

    Raises:
        ConfigError: the batch does not split evenly, or there are more ranks
            than people in a batch.
    """
    if not ctx.enabled:
        return
    if sampler.batch_size % ctx.world_size:
        raise ConfigError(
            f"a batch of {sampler.batch_size} images ({sampler.classes_per_batch} people x "
            f"{sampler.m_per_class}) does not split over {ctx.world_size} processes: make "
            "batch_size a multiple of the number of processes"
        )
    if ctx.world_size > sampler.classes_per_batch:
        raise ConfigError(
            f"{ctx.world_size} processes but only {sampler.classes_per_batch} people per batch: "
            "use fewer processes or a larger batch_size (it is global, shared by all processes)"
        )


def parallel_model(
    encoder: nn.Module,
    ctx: DistributedContext,
    device: torch.device,
    sync_batchnorm: bool,
    stack: ExitStack,
) -> nn.Module:
    """The module that runs training's forward pass: ``encoder`` itself, or DDP around it.

    With several ranks the encoder's BatchNorm layers are synced (for as long
    as ``stack`` is open, then put back) and the encoder is wrapped in
    ``DistributedDataParallel``, which starts every rank from rank 0's weights
    and averages the gradients.
    """
    if not ctx.enabled:
        return encoder
    if not any(p.requires_grad for p in encoder.parameters()):
        return encoder  # nothing to synchronise: DDP refuses a module without trainable weights
    from torch.nn.parallel import DistributedDataParallel

    synced = sync_batchnorm and has_batchnorm(encoder)
    stack.enter_context(synced_batchnorm(encoder, enabled=synced))
    device_ids = [device.index] if device.type == "cuda" else None
    # Synced layers already agree on the running statistics: no need to send them
    # every step (the name of the switch changed in torch 2.10).
    known = inspect.signature(DistributedDataParallel.__init__).parameters
    switch = "forward_sync_buffers" if "forward_sync_buffers" in known else "broadcast_buffers"
    return DistributedDataParallel(encoder, device_ids=device_ids, **{switch: not synced})

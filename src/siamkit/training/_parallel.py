"""Devices and the data-parallel wrapping of an encoder for :class:`~siamkit.training.Trainer`."""

from __future__ import annotations

import inspect
from contextlib import ExitStack
from typing import Any

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


def training_device(device: torch.device, ctx: DistributedContext) -> torch.device:
    """One GPU per process: ``cuda:LOCAL_RANK`` under torch.distributed, else ``device``."""
    if ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    return device


def resolve_device(name: Any) -> torch.device:
    """The torch device for ``TrainConfig.device``, checked to be usable here."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(
            f"unknown device {name!r}: use 'cpu', 'cuda', 'cuda:N' (the N-th GPU) or 'auto'"
        ) from None
    if device.type == "cuda":
        _check_cuda(name, device)
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {name!r}: Apple MPS is not available here; use 'cpu'")
    elif device.type not in ("cpu", "mps"):
        raise ConfigError(f"device {name!r} is not supported: use 'cpu', 'cuda' or 'auto'")
    return device


def _check_cuda(name: Any, device: torch.device) -> None:
    if not torch.cuda.is_available():
        why = (
            "this torch was built without CUDA"
            if torch.version.cuda is None
            else "no CUDA GPU or driver is usable"
        )
        raise ConfigError(
            f"device {name!r} needs CUDA, but {why} (torch {torch.__version__}): train on "
            "the CPU with device 'cpu' (CLI: --device cpu), or 'auto' to use a GPU when present"
        )
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ConfigError(
            f"device {name!r}: this machine has {count} CUDA device(s), numbered 0 to {count - 1}"
        )

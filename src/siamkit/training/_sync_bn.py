"""Batch normalisation over the global batch of all ranks, on any device.

``torch.nn.SyncBatchNorm`` runs only on GPUs; siamkit also trains on CPUs
with gloo, where a rank's share of a batch can be a handful of images whose
own statistics would differ from the single-process run. :class:`GlobalBatchNorm`
sums each channel's count and sum, then its squared deviations, over the ranks
with a differentiable ``all_reduce``, so training normalises with the global batch's
statistics, as one process would. :func:`synced_batchnorm` swaps the layers in
for the duration of training and puts the originals back (with the weights
and running statistics learned), so the saved encoder stays plain.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class _AllReduceSum(torch.autograd.Function):
    """``all_reduce(SUM)`` whose backward sums the gradients over the ranks too."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        total = tensor.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        # Every rank's loss depends on every rank's statistics: the gradient of a
        # rank's partial sums is the sum of all ranks' gradients of the total.
        total = grad.contiguous().clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total


class GlobalBatchNorm(_BatchNorm):
    """A BatchNorm layer whose training statistics cover every rank's share of the batch.

    Same parameters, buffers and evaluation behaviour as the layer it replaces
    (built with :meth:`wrapping`); in training mode the mean and variance come
    from all ranks.
    """

    @classmethod
    def wrapping(cls, layer: _BatchNorm) -> GlobalBatchNorm:
        """A GlobalBatchNorm sharing ``layer``'s parameters and buffers (no copy)."""
        synced = cls.__new__(cls)
        nn.Module.__init__(synced)
        synced.__dict__.update(
            {k: v for k, v in layer.__dict__.items() if k not in ("_parameters", "_buffers")}
        )
        synced._parameters = layer._parameters
        synced._buffers = layer._buffers
        synced.training = layer.training
        return synced

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training or not (dist.is_available() and dist.is_initialized()):
            return super().forward(input)
        channels = input.shape[1]
        dims = [0, *range(2, input.dim())]
        shape = (1, channels) + (1,) * (input.dim() - 2)
        count = torch.tensor([input.numel() / channels], dtype=input.dtype, device=input.device)
        total = _AllReduceSum.apply(torch.cat([input.sum(dims), count]))
        n = total[-1]
        mean = total[:channels] / n
        # Two passes, as torch's own BatchNorm: the variance of centred values
        # keeps the float error of one process.
        centred = input - mean.view(shape)
        var = _AllReduceSum.apply((centred * centred).sum(dims)) / n
        self._update_running(mean.detach(), var.detach(), float(n.item()))
        out = centred * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out

    @torch.no_grad()
    def _update_running(self, mean: torch.Tensor, var: torch.Tensor, n: float) -> None:
        if not self.track_running_stats or self.running_mean is None:
            return
        self.num_batches_tracked += 1  # type: ignore[operator]
        momentum = (
            1.0 / float(self.num_batches_tracked)  # type: ignore[arg-type]
            if self.momentum is None
            else self.momentum
        )
        unbiased = var * n / max(n - 1.0, 1.0)
        self.running_mean.mul_(1 - momentum).add_(momentum * mean)
        self.running_var.mul_(1 - momentum).add_(momentum * unbiased)  # type: ignore[union-attr]


def has_batchnorm(module: nn.Module) -> bool:
    """True when ``module`` holds a BatchNorm layer.

    Examples:
        >>> has_batchnorm(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)))
        True
    """
    return any(isinstance(m, _BatchNorm) for m in module.modules())


@contextmanager
def synced_batchnorm(module: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """Swap every BatchNorm layer of ``module`` for a :class:`GlobalBatchNorm`, then back.

    The layers share their parameters and buffers with the originals, so what
    training learns stays in the originals.
    """
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    if enabled:
        for parent in list(module.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, _BatchNorm) and not isinstance(child, GlobalBatchNorm):
                    swapped.append((parent, name, child))
                    setattr(parent, name, GlobalBatchNorm.wrapping(child))
    try:
        yield module
    finally:
        for parent, name, original in reversed(swapped):
            original.train(getattr(parent, name).training)
            setattr(parent, name, original)

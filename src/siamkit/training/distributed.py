"""Data-parallel training on ``torch.distributed``: the process group and cross-rank pairs.

siamkit runs on PyTorch's own distributed engine, launched by ``torchrun``
(or ``siamkit train --nproc-per-node N``, which starts the same thing). Every
rank holds a replica of the encoder inside ``DistributedDataParallel`` and
draws its share of one global, class-balanced batch. Pairs must span the
whole batch, not one rank's share, so each rank gathers every rank's
embeddings and labels (:func:`gather_batch`), with gradients flowing back to
the rank that produced them; each rank then mines and scores the same global
batch. DDP averages the parameter gradients over ranks, and the gather's
backward sums the gradient of each shard over ranks, so the update equals the
single-process update on the global batch.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from siamkit._torchrun import launched_by_torchrun
from siamkit.exceptions import ConfigError, TrainingError

#: How long a rank waits for the others in a collective before giving up, so a
#: dead peer ends the run with an error instead of a hang.
DEFAULT_TIMEOUT = datetime.timedelta(minutes=5)


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in the process group (a single process: rank 0 of 1).

    Attributes:
        rank: This process's rank.
        world_size: How many processes train together.
        local_rank: The rank on this machine (which GPU it drives).
        backend: ``"gloo"`` or ``"nccl"``; None for a single process.
        initialised_here: siamkit created the group (and tears it down), rather
            than the user.

    Examples:
        >>> ctx = DistributedContext()
        >>> ctx.is_main, ctx.enabled
        (True, False)
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    initialised_here: bool = False

    @property
    def enabled(self) -> bool:
        """More than one process trains together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and prints."""
        return self.rank == 0


def default_backend(device: torch.device) -> str:
    """NCCL for CUDA devices, gloo for everything else."""
    return "nccl" if device.type == "cuda" else "gloo"


def init_distributed(
    device: torch.device, timeout: datetime.timedelta = DEFAULT_TIMEOUT
) -> DistributedContext:
    """Join (or find) the process group; a single-process context when there is none.

    A group the user already initialised is used as it is. Under ``torchrun``
    the group is created from its environment variables, with the backend
    that suits ``device``. Otherwise training runs in this one process.

    Raises:
        TrainingError: the group cannot be formed (the message says why).
    """
    if dist.is_available() and dist.is_initialized():
        return _context(initialised_here=False)
    if not launched_by_torchrun():
        return DistributedContext()
    if not dist.is_available():
        raise TrainingError("this PyTorch build has no torch.distributed: train in one process")
    backend = default_backend(device)
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        store = _attempt_store(rank, world, timeout)
        dist.init_process_group(
            backend=backend, store=store, rank=rank, world_size=world, timeout=timeout
        )
    except (RuntimeError, ValueError, KeyError) as err:
        raise TrainingError(f"cannot join the {backend} process group: {err}") from None
    return _context(initialised_here=True)


def _attempt_store(rank: int, world: int, timeout: datetime.timedelta) -> dist.Store:
    """The rendezvous store of this attempt of the group.

    After ``torchrun --max-restarts`` restarts a group, the store can still
    hold the addresses the dead attempt's processes published, and a new rank
    would dial them; keys prefixed with the restart count cannot be stale.
    Under torchrun the agent serves the store; otherwise rank 0 does.
    """
    host, port = os.environ.get("MASTER_ADDR", "127.0.0.1"), int(os.environ["MASTER_PORT"])
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(
        host, port, world_size=world, is_master=rank == 0 and not agent, timeout=timeout
    )
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"siamkit/attempt_{attempt}", store)


def _context(initialised_here: bool) -> DistributedContext:
    return DistributedContext(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", dist.get_rank())),
        backend=str(dist.get_backend()),
        initialised_here=initialised_here,
    )


@contextlib.contextmanager
def process_group(
    device: torch.device, timeout: datetime.timedelta = DEFAULT_TIMEOUT
) -> Iterator[DistributedContext]:
    """:func:`init_distributed` for the ``with`` block, then :func:`shutdown`.

    A collective that fails because a peer died or hung becomes one
    :class:`TrainingError` (:func:`lost_peer_error`); a group the caller
    created is left open.

    Examples:
        >>> with process_group(torch.device("cpu")) as ctx:
        ...     ctx.world_size
        1
    """
    ctx = init_distributed(device, timeout)
    try:
        yield ctx
    except Exception as err:
        if ctx.enabled and is_collective_failure(err):
            raise lost_peer_error(err, ctx) from None
        raise
    finally:
        shutdown(ctx)


def shutdown(ctx: DistributedContext) -> None:
    """Destroy the process group if siamkit created it."""
    if ctx.initialised_here and dist.is_initialized():
        dist.destroy_process_group()


def shard(indices: list[int], ctx: DistributedContext) -> list[int]:
    """This rank's contiguous share of a global batch.

    Raises:
        ConfigError: the batch does not split evenly over the ranks.

    Examples:
        >>> shard(list(range(8)), DistributedContext(rank=1, world_size=2))
        [4, 5, 6, 7]
    """
    if len(indices) % ctx.world_size:
        raise ConfigError(
            f"a batch of {len(indices)} images does not split over {ctx.world_size} ranks: "
            "make batch_size a multiple of the number of processes"
        )
    size = len(indices) // ctx.world_size
    return indices[ctx.rank * size : (ctx.rank + 1) * size]


def gather_batch(
    embeddings: torch.Tensor, labels: torch.Tensor, ctx: DistributedContext
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every rank's embeddings (differentiable) and labels, in rank order.

    With one process they come back unchanged.
    """
    if not ctx.enabled:
        return embeddings, labels
    gathered = _GatherWithGradient.apply(embeddings)
    label_parts = [torch.empty_like(labels) for _ in range(ctx.world_size)]
    dist.all_gather(label_parts, labels)
    return gathered, torch.cat(label_parts)


class _GatherWithGradient(torch.autograd.Function):
    """``all_gather`` whose backward hands each rank the summed gradient of its shard.

    Written on the public collectives (``all_gather``, ``all_reduce``), which
    gloo and NCCL both have; torch's own differentiable gathers are private or
    deprecated. Every rank's shard must have the same size (:func:`shard`).
    """

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.rank, ctx.rows = dist.get_rank(), tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        total = grad.contiguous().clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def broadcast_json(value: Any, ctx: DistributedContext, src: int = 0) -> Any:
    """``value`` (JSON-able) as rank ``src`` holds it, on every rank.

    Sent as JSON bytes rather than with ``broadcast_object_list``, which
    unpickles what other processes send.

    Examples:
        >>> broadcast_json({"best_epoch": 3}, DistributedContext())
        {'best_epoch': 3}
    """
    if not ctx.enabled:
        return value
    payload = json.dumps(value).encode() if ctx.rank == src else b""
    device = _comm_device(ctx)
    size = torch.tensor([len(payload)], dtype=torch.long, device=device)
    dist.broadcast(size, src=src)
    buffer = torch.zeros(int(size.item()), dtype=torch.uint8, device=device)
    if ctx.rank == src:
        buffer = torch.frombuffer(bytearray(payload), dtype=torch.uint8).to(device)
    dist.broadcast(buffer, src=src)
    return json.loads(bytes(buffer.cpu().tolist()).decode())


def all_equal(value: Any, ctx: DistributedContext) -> bool:
    """True when every rank holds the same JSON-able ``value`` (a config, a seed)."""
    if not ctx.enabled:
        return True
    digest = hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).digest()
    mine = torch.tensor(list(digest), dtype=torch.uint8, device=_comm_device(ctx))
    parts = [torch.empty_like(mine) for _ in range(ctx.world_size)]
    dist.all_gather(parts, mine)
    return all(torch.equal(part, mine) for part in parts)


def _comm_device(ctx: DistributedContext) -> torch.device:
    # NCCL moves only CUDA tensors; gloo only CPU ones.
    return torch.device("cuda", ctx.local_rank) if ctx.backend == "nccl" else torch.device("cpu")


def split_range(count: int, ctx: DistributedContext) -> range:
    """This rank's contiguous share of ``count`` items, for work that need not be balanced.

    The first ranks get ``ceil(count / world_size)`` items, the last ones what
    is left (possibly nothing); :func:`gather_rows` puts the shares back together.

    Examples:
        >>> split_range(5, DistributedContext(rank=1, world_size=2))
        range(3, 5)
    """
    size = -(-count // ctx.world_size)
    return range(min(count, ctx.rank * size), min(count, (ctx.rank + 1) * size))


def gather_rows(rows: torch.Tensor, count: int, ctx: DistributedContext) -> torch.Tensor:
    """Every rank's :func:`split_range` share of ``count`` rows, in order (not differentiable).

    Examples:
        >>> gather_rows(torch.ones(3, 2), 3, DistributedContext()).shape
        torch.Size([3, 2])
    """
    if not ctx.enabled:
        return rows
    size = -(-count // ctx.world_size)
    device = _comm_device(ctx)
    padded = torch.zeros((size, *rows.shape[1:]), dtype=rows.dtype, device=device)
    padded[: rows.shape[0]] = rows.to(device)
    parts = [torch.empty_like(padded) for _ in range(ctx.world_size)]
    dist.all_gather(parts, padded)
    return torch.cat(parts)[:count].to(rows.device)


def is_collective_failure(err: BaseException) -> bool:
    """True for the errors a collective raises when a peer died or timed out.

    gloo reports a dead peer as a closed connection, NCCL and timeouts as a
    ``DistBackendError``; both are ``RuntimeError``s, like many bugs, so the
    message decides.
    """
    if isinstance(err, getattr(dist, "DistError", ())):
        return True
    text = str(err).lower()
    signs = ("gloo", "nccl", "connection closed", "connection reset", "timed out", "timeout")
    return isinstance(err, RuntimeError) and any(sign in text for sign in signs)


def lost_peer_error(err: BaseException, ctx: DistributedContext) -> TrainingError:
    """A one-line :class:`TrainingError` for a collective that failed (a rank died or hung)."""
    first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
    return TrainingError(
        f"rank {ctx.rank} of {ctx.world_size} lost the other processes ({first}): one of them "
        "died, hung past the process-group timeout, or the network failed. Under torchrun "
        "--max-restarts N with --resume the group restarts from the last checkpoint; otherwise "
        "rerun with --resume"
    )


def barrier(ctx: DistributedContext) -> None:
    """Wait for every rank (no-op for one process)."""
    if ctx.enabled:
        dist.barrier()


def training_device(device: torch.device, ctx: DistributedContext) -> torch.device:
    """One GPU per process: ``cuda:LOCAL_RANK`` under torch.distributed, else ``device``.

    Examples:
        >>> training_device(torch.device("cpu"), DistributedContext())
        device(type='cpu')
    """
    if ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    return device


def resolve_device(name: Any) -> torch.device:
    """The torch device for ``TrainConfig.device``, checked to be usable here.

    Raises:
        ConfigError: an unknown device, or one this machine or torch lacks.

    Examples:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
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

"""Bit-reproducible training: a fixed intra-op thread count and deterministic kernels.

Two seeded runs on the same machine draw the same batches, augmentations and
initial weights, yet could end with different weights: with more than one
thread, the backward pass of an indexing op (the gather of embeddings into
pairs in the contrastive loss) adds its gradients with atomic additions whose
order depends on thread timing, and floating-point addition is not
associative. :func:`reproducible` selects torch's deterministic kernels and a
fixed thread count for the duration of a run, and puts back what it changed.
A different thread count splits reductions differently, so the count is
recorded with every run (``history.json``, the checkpoint and the model's
``extra``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from siamkit.exceptions import ConfigError

#: More intra-op threads than this barely speed up siamkit's small models on a
#: CPU, and a cap makes the default the same on most machines.
MAX_DEFAULT_THREADS = 4
_CUBLAS_KEY = "CUBLAS_WORKSPACE_CONFIG"


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one).

    Examples:
        >>> available_cpus() >= 1
        True
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_num_threads() -> int:
    """The intra-op thread count a run uses when ``TrainConfig.num_threads`` is None.

    ``min(4, available CPUs)``: fixed on a given machine, so seeded runs repeat.
    Under ``torchrun`` the CPUs are shared by the processes of this machine
    (``LOCAL_WORLD_SIZE``), so each takes its share (at least one).

    Examples:
        >>> 1 <= default_num_threads() <= MAX_DEFAULT_THREADS
        True
    """
    try:
        local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        local = 1
    return min(MAX_DEFAULT_THREADS, max(1, available_cpus() // local))


def resolve_num_threads(num_threads: int | None) -> int:
    """``num_threads``, or :func:`default_num_threads` when it is None.

    Raises:
        ConfigError: ``num_threads`` is not a positive integer.

    Examples:
        >>> resolve_num_threads(3)
        3
    """
    if num_threads is None:
        return default_num_threads()
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
        raise ConfigError(f"num_threads must be a positive integer or None, got {num_threads!r}")
    return num_threads


@contextmanager
def reproducible(num_threads: int | None = None, deterministic: bool = True) -> Iterator[dict]:
    """Run the body with a fixed intra-op thread count and, optionally, deterministic kernels.

    Everything changed (thread count, ``torch.use_deterministic_algorithms``,
    cuDNN flags, ``CUBLAS_WORKSPACE_CONFIG``) is put back on exit. An op without
    a deterministic kernel warns instead of failing (``warn_only``). Both
    settings are process-wide, so do not train in two threads of one process.

    Args:
        num_threads: Intra-op threads; None for :func:`default_num_threads`.
        deterministic: Select deterministic kernels (no measurable cost on a CPU).

    Yields:
        The runtime to record with the run: ``num_threads``, ``deterministic``
        and ``torch_version``.

    Examples:
        >>> import torch
        >>> before = torch.get_num_threads()
        >>> with reproducible(num_threads=1) as runtime:
        ...     torch.get_num_threads(), runtime["num_threads"]
        (1, 1)
        >>> torch.get_num_threads() == before
        True
    """
    threads = resolve_num_threads(num_threads)
    saved = _save_state()
    try:
        torch.set_num_threads(threads)
        if deterministic:
            _select_deterministic_kernels()
        yield {
            "num_threads": threads,
            "deterministic": bool(deterministic),
            "torch_version": str(torch.__version__),  # a plain str: checkpoints load it
        }
    finally:
        _restore_state(saved)


def _save_state() -> dict[str, Any]:
    return {
        "threads": torch.get_num_threads(),
        "algorithms": torch.are_deterministic_algorithms_enabled(),
        "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "fill": _fill_flag(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cublas": os.environ.get(_CUBLAS_KEY),
    }


def _select_deterministic_kernels() -> None:
    # cuBLAS reads this when it creates its workspace; without it CUDA matmuls
    # are not deterministic.
    os.environ.setdefault(_CUBLAS_KEY, ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    # Filling every new tensor with NaN only makes reads of uninitialised memory
    # (a kernel bug) repeatable, and costs 5-10% of a CPU training step.
    _set_fill_flag(False)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def _restore_state(saved: dict[str, Any]) -> None:
    torch.set_num_threads(saved["threads"])
    torch.use_deterministic_algorithms(saved["algorithms"], warn_only=saved["warn_only"])
    _set_fill_flag(saved["fill"])
    torch.backends.cudnn.deterministic = saved["cudnn_deterministic"]
    torch.backends.cudnn.benchmark = saved["cudnn_benchmark"]
    if saved["cublas"] is None:
        os.environ.pop(_CUBLAS_KEY, None)
    else:
        os.environ[_CUBLAS_KEY] = saved["cublas"]


def _fill_flag() -> bool | None:
    module = getattr(torch.utils, "deterministic", None)
    return getattr(module, "fill_uninitialized_memory", None)


def _set_fill_flag(value: bool | None) -> None:
    module = getattr(torch.utils, "deterministic", None)
    if value is not None and module is not None:
        module.fill_uninitialized_memory = value


__all__ = ["available_cpus", "default_num_threads", "reproducible", "resolve_num_threads"]

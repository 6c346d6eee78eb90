"""Checks of encoder constructor arguments: impossible settings fail when the encoder is built.

Every check raises :class:`~siamkit.exceptions.ConfigError` naming the argument,
so ``create_encoder``, the Trainer and ``siamkit train --encoder-arg`` refuse a
setting before any work, and :func:`~siamkit.encoders.load_encoder` refuses a
saved configuration that no encoder could have been built with.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Sequence
from typing import Any

from siamkit.exceptions import ConfigError

#: The largest embedding an encoder may produce (a face index accepts no more).
MAX_EMBEDDING_DIM = 1 << 16
#: The largest image side and channel count the built-in encoders accept.
MAX_SIDE = 4096
MAX_WIDTH = 4096


def freeze_before(parts: dict[str, list[Any]], first: str) -> None:
    """Freeze every part (modules by name, in forward order) before the part named ``first``.

    ``first="none"`` (or any name not in ``parts``) freezes them all.

    Examples:
        >>> import torch
        >>> a, b = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
        >>> freeze_before({"a": [a], "b": [b]}, "b")
        >>> a.weight.requires_grad, b.weight.requires_grad
        (False, True)
    """
    frozen = True
    for name, modules in parts.items():
        frozen = frozen and name != first
        for module in modules:
            module.requires_grad_(not frozen)


def _shown(value: Any, limit: int = 80) -> str:
    # A value read from a hostile file may be megabytes long: a message shows its start.
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}..."


def check_int(name: str, value: Any, low: int, high: int) -> int:
    """``value`` as an int if it is an integer from ``low`` to ``high``, else ``ConfigError``.

    Examples:
        >>> check_int("embedding_dim", 64, 1, 65536)
        64
        >>> check_int("embedding_dim", 0, 1, 65536)
        Traceback (most recent call last):
        ...
        siamkit.exceptions.ConfigError: embedding_dim must be an integer from 1 to 65536, got 0
    """
    try:
        number = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        number = None
    if number is None or not low <= number <= high:
        raise ConfigError(f"{name} must be an integer from {low} to {high}, got {_shown(value)}")
    return number


def check_embedding_dim(value: Any, owner: str = "") -> int:
    """``value`` if it is a possible embedding size (1 to ``MAX_EMBEDDING_DIM``).

    Examples:
        >>> check_embedding_dim(-1, "MLPEncoder")
        Traceback (most recent call last):
        ...
        siamkit.exceptions.ConfigError: MLPEncoder: embedding_dim must be an integer from 1 ...
    """
    try:
        return check_int("embedding_dim", value, 1, MAX_EMBEDDING_DIM)
    except ConfigError as err:
        raise ConfigError(f"{owner}: {err}" if owner else str(err)) from None


def check_ints(
    name: str, value: Any, low: int, high: int, *, min_len: int = 0, max_len: int = 64
) -> tuple[int, ...]:
    """A list or tuple of ``min_len`` to ``max_len`` integers from ``low`` to ``high``.

    Examples:
        >>> check_ints("channels", [8, 16], 1, 4096, min_len=1)
        (8, 16)
        >>> check_ints("channels", [8, -1], 1, 4096)
        Traceback (most recent call last):
        ...
        siamkit.exceptions.ConfigError: channels must be a list of integers from 1 to 4096 ...
    """
    ok = isinstance(value, Sequence) and not isinstance(value, (str, bytes))
    if ok and min_len <= len(value) <= max_len:
        try:
            return tuple(check_int(name, item, low, high) for item in value)
        except ConfigError:
            pass
    raise ConfigError(
        f"{name} must be a list of integers from {low} to {high} ({min_len} to {max_len} of "
        f"them), got {_shown(value)}"
    )


def check_input_size(value: Any, high: int = MAX_SIDE) -> tuple[int, int]:
    """``(H, W)``, two integers from 1 to ``high``.

    Examples:
        >>> check_input_size([56, 46])
        (56, 46)
    """
    height, width = check_ints("input_size", value, 1, high, min_len=2, max_len=2)
    return height, width


def check_channels_in(value: Any) -> int:
    """1 (greyscale) or 3 (RGB): what the default transform can produce."""
    if isinstance(value, bool) or value not in (1, 3):
        raise ConfigError(f"in_channels must be 1 (greyscale) or 3 (RGB), got {_shown(value)}")
    return int(value)


def check_flag(name: str, value: Any) -> bool:
    """``value`` if it is True or False (a string such as ``"no"`` would read as true).

    Examples:
        >>> check_flag("normalize", "no")
        Traceback (most recent call last):
        ...
        siamkit.exceptions.ConfigError: normalize must be true or false, got 'no'
    """
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {_shown(value)}")
    return value


def check_dropout(value: Any) -> float:
    """A dropout probability, at least 0 and below 1."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not 0.0 <= value < 1.0:
        raise ConfigError(f"dropout must be a number from 0 to below 1, got {_shown(value)}")
    return float(value)


def check_optional_path(name: str, value: Any) -> str | os.PathLike | None:
    """None, or a path given as a string or ``os.PathLike``."""
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise ConfigError(f"{name} must be a path or None, got {_shown(value)}")
    return value

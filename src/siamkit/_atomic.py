"""Crash-safe file writing: write to a temporary file beside the target, then rename."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file; on success fsync it and rename it onto ``path``.

    A crash at any moment leaves either the old file or the new one, never a mix,
    because ``os.replace`` is atomic on POSIX and Windows.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        honour_umask(fd)
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def honour_umask(fd: int) -> None:
    """Give a file made by ``tempfile.mkstemp`` (always 0600) the mode ``open`` would.

    Examples:
        >>> import tempfile
        >>> fd, name = tempfile.mkstemp()
        >>> honour_umask(fd)
        >>> oct(os.stat(name).st_mode & 0o777) == oct(0o666 & ~current_umask())
        True
        >>> os.close(fd); os.unlink(name)
    """
    with contextlib.suppress(OSError, AttributeError):  # no fchmod on Windows
        os.fchmod(fd, 0o666 & ~current_umask())


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows.

    Examples:
        >>> 0 <= current_umask() <= 0o777
        True
    """
    with contextlib.suppress(OSError, StopIteration, ValueError):
        with open("/proc/self/status") as status:
            line = next(line for line in status if line.startswith("Umask:"))
        return int(line.split()[1], 8)
    # Elsewhere the only way is to set it and put it back (not thread-safe).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not possible on every platform.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Atomically write ``data`` as indented JSON."""
    with atomic_write(path, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")


def write_with(path: str | os.PathLike, writer: Callable[[IO[bytes]], None]) -> None:
    """Atomically write a binary file produced by ``writer(handle)``."""
    with atomic_write(path, "wb") as handle:
        writer(handle)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()

"""Exclusive locks on open files, with a timeout: ``fcntl.flock`` on POSIX, ``msvcrt`` on Windows.

The face index's folder lock and the service's keys file use them. A lock is
held by an open file handle and released when it is unlocked or closed, or
when its process dies (so a ``kill -9`` never leaves a stale lock).
"""

from __future__ import annotations

import time
from typing import IO


def acquire(handle: IO[bytes], timeout: float) -> bool:
    """Lock ``handle``'s file, waiting up to ``timeout`` seconds; False when another holds it.

    Examples:
        >>> import tempfile
        >>> with tempfile.TemporaryFile() as handle:
        ...     acquire(handle, 0.0)
        True
    """
    # Polled rather than blocking: a blocking flock cannot be given a timeout.
    deadline = time.monotonic() + timeout
    pause = 0.002
    while not _try_lock(handle):
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(pause, left))
        pause = min(2 * pause, 0.05)
    return True


def _try_lock(handle: IO[bytes]) -> bool:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        import msvcrt

        handle.seek(0)  # msvcrt locks bytes from the position: always the first one
        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def release(handle: IO[bytes]) -> None:
    """Unlock a file :func:`acquire` locked."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        import msvcrt

        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
        return
    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

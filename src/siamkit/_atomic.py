"""Crash-safe file writing: write to a temporary file beside the target, then rename.

A write that fails (a full disk, no permission, a failed ``torch.save``) raises
:class:`~siamkit.exceptions.WriteError` naming the target and the cause, and
leaves the target as it was.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from siamkit.exceptions import SiamkitError, WriteError


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file; on success fsync it and rename it onto ``path``.

    A crash at any moment leaves either the old file or the new one, never a mix,
    because ``os.replace`` is atomic on POSIX and Windows.

    Raises:
        WriteError: the folder or the file could not be written (an ``OSError``,
            or torch's ``RuntimeError`` for a write that failed under
            ``torch.save``); ``path`` is left as it was and the temporary file
            removed. Other errors raised in the ``with`` block pass unchanged.

    Examples:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "notes.txt"
        >>> with atomic_write(target, "w") as handle:
        ...     _ = handle.write("hello")
        >>> target.read_text()
        'hello'
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise write_error(path, err) from None
    try:
        honour_umask(fd)
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        cause = _io_cause(err)
        if cause is None:
            raise
        raise write_error(path, cause) from None
    fsync_dir(path.parent)


def write_error(path: str | os.PathLike, err: OSError) -> WriteError:
    """The :class:`WriteError` for a failed write of ``path``: the file, the cause, the fix.

    Examples:
        >>> err = write_error("run/checkpoint.pt", OSError(errno.ENOSPC, "No space left on device"))
        >>> str(err).split(";")[0], err.errno == errno.ENOSPC
        ('cannot write run/checkpoint.pt: No space left on device (ENOSPC)', True)
    """
    code = err.errno
    name = errno.errorcode.get(code, str(code)) if code is not None else type(err).__name__
    cause = err.strerror or str(err) or type(err).__name__
    error = WriteError(
        f"cannot write {path}: {cause} ({name}); the previous version, if any, is left in "
        "place. Free disk space or fix the folder's permissions, then try again"
    )
    error.errno = code
    return error


def _io_cause(err: BaseException) -> OSError | None:
    """The system error behind a failed write, or None for an error of the caller's own."""
    if isinstance(err, SiamkitError):
        return None  # raised on purpose, already explained
    if isinstance(err, OSError):
        return err
    if isinstance(err, RuntimeError):
        # torch.save turns a failed write of its stream into a RuntimeError
        # ("unexpected pos ...", "file write failed"), the OSError as its context.
        seen: BaseException | None = err.__cause__ or err.__context__
        while seen is not None:
            if isinstance(seen, OSError) and not isinstance(seen, SiamkitError):
                return seen
            seen = seen.__cause__ or seen.__context__
        if "write failed" in str(err) or "unexpected pos" in str(err):
            return OSError(errno.EIO, f"the write failed ({str(err).splitlines()[0]})")
    return None


#: The names ``tempfile.mkstemp`` gives :func:`atomic_write`'s temporary files.
_RANDOM = r"[a-z0-9_]{8}"


def remove_temporaries(folder: str | os.PathLike, names: Iterable[str]) -> list[Path]:
    """Delete what killed :func:`atomic_write` calls for ``folder/<name>`` left behind.

    Only the temporary names :func:`atomic_write` gives (``.<name>.<8
    characters>.tmp``) of the given ``names`` are touched, in ``folder`` alone.
    Call it where a single writer owns the folder (a training run, a report).

    Returns:
        The files removed.

    Examples:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> for name in (".history.json.k3j_9xq2.tmp", ".notes.txt.k3j_9xq2.tmp"):
        ...     _ = (folder / name).write_text("")
        >>> [p.name for p in remove_temporaries(folder, ["history.json"])]
        ['.history.json.k3j_9xq2.tmp']
    """
    folder = Path(folder)
    pattern = re.compile(
        r"\.(?:" + "|".join(re.escape(name) for name in names) + r")\." + _RANDOM + r"\.tmp"
    )
    removed = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(folder):
            if pattern.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


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


def fsync_dir(directory: Path) -> None:
    """Sync a folder, making the renames in it durable (where the platform allows)."""
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

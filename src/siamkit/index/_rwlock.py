"""A readers-writer lock: many searches at once, or one change alone."""

from __future__ import annotations

import threading
from collections.abc import Callable


class RWLock:
    """Shared reading, exclusive writing; waiting writers go first.

    Writer preference keeps a steady stream of searches from starving adds and
    removes. Not re-entrant: code holding the lock must not take it again.

    Example:
        >>> lock = RWLock()
        >>> with lock.read():
        ...     pass
        >>> with lock.write():
        ...     pass
    """

    def __init__(self) -> None:
        # Entered directly rather than through the Condition, whose __enter__ is Python.
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0
        # One guard object each, reused: a search takes the read lock on its hot
        # path, and a contextlib generator cost it several microseconds.
        self._read_guard = _Guard(self._acquire_read, self._release_read)
        self._write_guard = _Guard(self._acquire_write, self._release_write)

    def read(self) -> _Guard:
        """Hold the lock shared (a context manager)."""
        return self._read_guard

    def write(self) -> _Guard:
        """Hold the lock alone (a context manager)."""
        return self._write_guard

    def _acquire_read(self) -> None:
        with self._mutex:
            while self._writing or self._writers_waiting:
                self._cond.wait()
            self._readers += 1

    def _release_read(self) -> None:
        with self._mutex:
            self._readers -= 1
            # Only writers wait on readers (readers wait on writers alone).
            if not self._readers and self._writers_waiting:
                self._cond.notify_all()

    def _acquire_write(self) -> None:
        with self._mutex:
            self._writers_waiting += 1
            try:
                while self._writing or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writing = True

    def _release_write(self) -> None:
        with self._mutex:
            self._writing = False
            self._cond.notify_all()


class _Guard:
    """``with guard:`` acquires on entry and releases on exit; it holds no state of its
    own, so one instance serves every thread."""

    __slots__ = ("_acquire", "_release")

    def __init__(self, acquire: Callable[[], None], release: Callable[[], None]) -> None:
        self._acquire = acquire
        self._release = release

    def __enter__(self) -> None:
        self._acquire()

    def __exit__(self, *exc_info: object) -> None:
        self._release()

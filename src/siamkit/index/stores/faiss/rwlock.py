"""A readers-writer lock: many searches at once, or one change alone."""

from __future__ import annotations

import threading


class RWLock:
    """Shared reading, exclusive writing; waiting writers go first.

    Writer preference keeps a steady stream of searches from starving adds and
    removes. Not re-entrant: code holding the lock must not take it again.

    Examples:
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
        # path, where a contextlib generator cost several microseconds.
        self._read_guard = _ReadGuard(self)
        self._write_guard = _WriteGuard(self)

    def read(self) -> _ReadGuard:
        """Hold the lock shared (a context manager)."""
        return self._read_guard

    def write(self) -> _WriteGuard:
        """Hold the lock alone (a context manager)."""
        return self._write_guard


class _Guard:
    """A context manager over an :class:`RWLock` holding no state of its own, so one
    serves every thread."""

    __slots__ = ("_lock",)

    def __init__(self, lock: RWLock) -> None:
        self._lock = lock


class _ReadGuard(_Guard):
    """``with`` it to read."""

    __slots__ = ()

    def __enter__(self) -> None:
        lock = self._lock
        with lock._mutex:
            while lock._writing or lock._writers_waiting:
                lock._cond.wait()
            lock._readers += 1

    def __exit__(self, *exc_info: object) -> None:
        lock = self._lock
        with lock._mutex:
            lock._readers -= 1
            # Only writers wait on readers (readers wait on writers alone).
            if not lock._readers and lock._writers_waiting:
                lock._cond.notify_all()


class _WriteGuard(_Guard):
    """``with`` it to write."""

    __slots__ = ()

    def __enter__(self) -> None:
        lock = self._lock
        with lock._mutex:
            lock._writers_waiting += 1
            try:
                while lock._writing or lock._readers:
                    lock._cond.wait()
            finally:
                lock._writers_waiting -= 1
            lock._writing = True

    def __exit__(self, *exc_info: object) -> None:
        lock = self._lock
        with lock._mutex:
            lock._writing = False
            lock._cond.notify_all()

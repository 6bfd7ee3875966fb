"""One database connection per thread, and per process after a fork: the bookkeeping both
backends of the audit log (SQLite and PostgreSQL) share.

Neither driver's connection may be used by two threads at once, and a connection opened
before a fork belongs to the parent: the child opens its own, and neither uses nor closes
the parent's (SQLite forbids carrying a connection across a fork: closing it in the child
may act on files the parent still uses).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

__all__ = ["ThreadConnections"]


class _Closable(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=_Closable)


def _always(conn: object) -> bool:
    return True


class ThreadConnections(Generic[C]):
    """The connections ``connect()`` opened, one per thread of this process; ``get`` returns
    the calling thread's (opening it on first use, or when ``usable(conn)`` says it can no
    longer serve), ``close`` closes them all and makes ``get`` refuse."""

    def __init__(self, connect: Callable[[], C], *,
                 usable: Callable[[C], bool] = _always) -> None:
        self._connect = connect
        self._usable = usable
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[C] = []
        # Connections opened before a fork must not be used, nor closed, by the child; kept
        # referenced so that the child's garbage collector does not close them either.
        self._orphans: list[C] = []
        self._pid = os.getpid()
        self._closed = False

    def get(self) -> C:
        """The calling thread's connection; ``ValueError`` once closed."""
        if self._closed:
            raise ValueError("this TaskLog is closed")
        pid = os.getpid()
        if pid != self._pid:
            with self._lock:
                if pid != self._pid:
                    self._orphans.extend(self._connections)
                    self._connections = []
                    self._local = threading.local()
                    self._pid = pid
        conn: C | None = getattr(self._local, "conn", None)
        if conn is not None and self._usable(conn):
            return conn
        conn = self._connect()  # outside the lock: connecting may take seconds
        with self._lock:
            self._connections.append(conn)
        self._local.conn = conn
        return conn

    def close(self) -> None:
        """Close every connection this process opened (not a parent's); idempotent."""
        with self._lock:
            if self._pid == os.getpid():
                for conn in self._connections:
                    conn.close()
            self._connections = []
            self._closed = True
            self._local = threading.local()

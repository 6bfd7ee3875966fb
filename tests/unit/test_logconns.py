"""The audit log backends' per-thread connection bookkeeping (``_logconns``)."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path

import pytest

from imgtools._logconns import ThreadConnections


class _Conn:
    """A stand-in connection: which one it is, and whether it was closed."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.closed = False

    def close(self) -> None:
        self.closed = True


class _Opener:
    def __init__(self) -> None:
        self.opened: list[_Conn] = []
        self._lock = threading.Lock()

    def __call__(self) -> _Conn:
        with self._lock:
            conn = _Conn(len(self.opened))
            self.opened.append(conn)
            return conn


def _in_threads(count: int, conns: ThreadConnections[_Conn]) -> list[tuple[_Conn, _Conn]]:
    """Each of ``count`` threads' connection, asked for twice; all threads alive at once."""
    barrier = threading.Barrier(count)
    got: list[tuple[_Conn, _Conn]] = []
    lock = threading.Lock()

    def work() -> None:
        first = conns.get()
        barrier.wait()  # no thread ends (and frees its ident) before all have connected
        second = conns.get()
        with lock:
            got.append((first, second))

    threads = [threading.Thread(target=work) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return got


def test_each_thread_has_its_own_connection_and_keeps_it() -> None:
    opener = _Opener()
    conns = ThreadConnections(opener)
    mine = conns.get()
    assert conns.get() is mine
    got = _in_threads(4, conns)
    assert all(first is second for first, second in got)
    assert len({id(first) for first, _ in got} | {id(mine)}) == 5
    assert len(opener.opened) == 5


def test_close_closes_every_threads_connection_and_later_use_is_refused() -> None:
    opener = _Opener()
    conns = ThreadConnections(opener)
    conns.get()
    _in_threads(3, conns)
    assert len(opener.opened) == 4 and not any(c.closed for c in opener.opened)
    conns.close()
    assert all(c.closed for c in opener.opened)
    with pytest.raises(ValueError, match="closed"):
        conns.get()
    conns.close()  # idempotent
    assert len(opener.opened) == 4


def test_an_unusable_connection_is_replaced_for_its_thread_only() -> None:
    opener = _Opener()
    conns = ThreadConnections(opener, usable=lambda conn: not conn.closed)
    first = conns.get()
    first.close()  # as a server that dropped the connection leaves it
    second = conns.get()
    assert second is not first and conns.get() is second
    conns.close()
    assert second.closed


def test_a_failed_open_registers_nothing() -> None:
    calls: list[int] = []

    def refuse() -> _Conn:
        calls.append(1)
        raise OSError("no server")

    conns = ThreadConnections(refuse)
    for _ in range(2):
        with pytest.raises(OSError, match="no server"):
            conns.get()
    assert len(calls) == 2  # nothing cached: every call tries again
    conns.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_opens_its_own_and_never_closes_the_parents(tmp_path: Path) -> None:
    opener = _Opener()
    conns = ThreadConnections(opener)
    parents = conns.get()
    untouched = ThreadConnections(opener)  # the child closes it without using it first
    kept = untouched.get()
    db = tmp_path / "shared.sqlite"
    sqlite_conns = ThreadConnections(lambda: sqlite3.connect(
        db, isolation_level=None, check_same_thread=False))
    sqlite_conns.get().execute("CREATE TABLE t (x INTEGER)")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without running the parent's cleanup
        code = 1
        try:
            os.close(read)
            childs = conns.get()
            sqlite_conns.get().execute("INSERT INTO t VALUES (1)")
            conns.close()
            sqlite_conns.close()
            untouched.close()
            report = {"same": childs is parents, "parents_closed": parents.closed,
                      "childs_closed": childs.closed, "kept_closed": kept.closed}
            os.write(write, json.dumps(report).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        text = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert json.loads(text) == {"same": False, "parents_closed": False, "childs_closed": True,
                                "kept_closed": False}
    assert conns.get() is parents and not parents.closed
    assert untouched.get() is kept
    # The parent's SQLite connection still works after the child closed its own.
    assert sqlite_conns.get().execute("SELECT x FROM t").fetchall() == [(1,)]
    conns.close()
    sqlite_conns.close()
    untouched.close()
    assert parents.closed and kept.closed

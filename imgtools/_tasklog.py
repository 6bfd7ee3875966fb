"""The audit log: every task imgtools observes, kept after the service forgets it.

The service purges a finished task 48 h after it ends and its list gives only stubs, so
imgtools keeps its own record: a ``tasks`` table (one row per task id, the newest state and the
fullest detail seen, and where it was seen) and an ``events`` table (one row per status a task
was seen in, with the time it was first seen). The tables and the merge rules, as SQL, are in
``_logsql``; this module holds ``TaskLog`` and its SQLite backend (the default: a file).

The log returns rows and columns (plain Python and numpy), never DataFrames: ``history``
builds those (``history.log_frame(log)``, ``history.events_frame(log)``).

SQLite choices, for speed and for several writers at once: WAL mode, ``synchronous=NORMAL``
(a committed row survives a killed process; only a power cut can lose the last commits),
``busy_timeout`` plus a retry loop, short ``BEGIN IMMEDIATE`` transactions, one connection per
thread (and per process, after a fork). The schema version is ``PRAGMA user_version``; an
older file is upgraded in place on first open.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import random
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Protocol, Self, TypeVar

from imgtools import _logsql as sql
from imgtools._exceptions import ValidationError
from imgtools._logconns import ThreadConnections
from imgtools._logsql import NAT_US, TEXT_COLUMNS, TIME_COLUMNS, join_columns, plain_chunk
from imgtools._models import Task, TaskStatus
from imgtools._pglog import LogUnavailable, is_url, safe_url
from imgtools._taskfields import UNKNOWN, Origin
from imgtools._times import iso_us, now_us, parse_since, to_us

__all__ = ["LogColumns", "LogUnavailable", "Origin", "TaskLog", "default_log_path",
           "default_log_target", "parse_since"]

_T = TypeVar("_T")

#: Environment variable naming the log file (or a ``postgresql://`` URL).
LOG_ENV: Final = "IMGTOOLS_LOG"
#: Seconds a connection waits for another writer's lock (SQLite ``busy_timeout``).
BUSY_TIMEOUT: Final = 10.0
#: Seconds ``record``/``import_`` keep retrying "database is locked" before giving up.
LOCK_RETRY_DEADLINE: Final = 60.0
#: Rows fetched per step when reading columns (bounds peak memory).
FETCH_CHUNK: Final = 65_536
#: Ids per ``IN (...)`` lookup (below SQLite's variable limit on old builds too).
ID_CHUNK: Final = 900
#: Task lines per transaction when importing a JSON Lines file.
IMPORT_BATCH: Final = 1000
#: Rows the log's writer thread builds between two yields of the GIL (see ``_in_slices``).
WRITER_SLICE: Final = 250

LogColumns = dict[str, Any]

Filter = str | Iterable[str] | None


def default_log_path() -> Path:
    """The local log file: ``$IMGTOOLS_LOG`` when it is a path, else
    ``platformdirs.user_data_dir("imgtools")/tasks.sqlite``."""
    env = os.environ.get(LOG_ENV)
    if env and not is_url(env):
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("imgtools")) / "tasks.sqlite"


def default_log_target() -> str | Path:
    """What ``TaskLog()`` opens: ``$IMGTOOLS_LOG`` (a path or a ``postgresql://`` URL), else
    the local log file."""
    env = os.environ.get(LOG_ENV)
    return env if env and is_url(env) else default_log_path()


class _Backend(Protocol):
    """What ``TaskLog`` needs of a database: one dialect, writes in one transaction,
    reads, and the frame's columns read fast."""

    dialect: sql.Dialect

    def write(self, tasks: Sequence[sql.TaskRow], events: Sequence[sql.EventRow]) -> None: ...

    def fetchall(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def iterate(self, query: str, params: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]: ...

    def columns(self, where: str, params: list[Any]) -> LogColumns: ...

    def close(self) -> None: ...


# -- SQLite --------------------------------------------------------------------------------------

_IMAGE_ID: Final = "coalesce(input_image, result_image)"
_READ_EXPR: Final = {"image_id": _IMAGE_ID}
# The frame's columns travel as one string per chunk (``_logsql.split_chunk``).
_CONCAT: Final = "SELECT count(*), max(id), " + ", ".join(
    [f"group_concat(ifnull({_READ_EXPR.get(c, c)}, char(31)), char(30))" for c in TEXT_COLUMNS]
    + [f"group_concat(ifnull({c}, {NAT_US}), ',')" for c in TIME_COLUMNS])
_PLAIN: Final = ", ".join([*(_READ_EXPR.get(c, c) for c in TEXT_COLUMNS),
                           *(f"coalesce({c}, {NAT_US})" for c in TIME_COLUMNS)])

# v1 -> v2: derived image columns split by the JSON they come from, origin columns added.
_UPGRADE_1_TO_2: Final = [
    "DROP INDEX IF EXISTS tasks_created_at",
    "ALTER TABLE tasks RENAME TO tasks_v1",
    *sql.schema(sql.SQLITE)[:1],
    f"INSERT INTO tasks ({', '.join(sql.TASK_COLUMNS)}) SELECT id, type, status, owner, "
    "created_at, updated_at, expires_at, input, result, message, "
    "CASE WHEN json_valid(input) AND json_type(input, '$.image_uuid') = 'text' "
    "THEN json_extract(input, '$.image_uuid') END, container, "
    "CASE WHEN json_valid(result) AND json_type(result, '$.image_id') = 'text' "
    "THEN json_extract(result, '$.image_id') END, export_location, "
    "first_seen, last_seen, detail, NULL, owner, NULL, NULL FROM tasks_v1",
    "DROP TABLE tasks_v1",
    *(f"ALTER TABLE events ADD COLUMN {c} {t}" for c, t in
      (("region", "TEXT"), ("account", "TEXT"), ("host", "TEXT"), ("emulator", "INTEGER"))),
    "UPDATE events SET account = (SELECT owner FROM tasks WHERE tasks.id = events.task_id)",
]
_UPGRADES: Final = {1: _UPGRADE_1_TO_2}


def _is_locked(error: sqlite3.OperationalError) -> bool:
    text = str(error).lower()
    return "locked" in text or "busy" in text


def _retry(action: Callable[[], _T]) -> _T:
    """Run ``action()``, retrying "database is locked" with jittered backoff.

    ``busy_timeout`` covers most waits; this covers the cases SQLite reports at once
    (switching to WAL, a lock held across the whole timeout by a long reader).
    """
    deadline = time.monotonic() + LOCK_RETRY_DEADLINE
    delay = 0.01
    while True:
        try:
            return action()
        except sqlite3.OperationalError as error:
            if not _is_locked(error) or time.monotonic() > deadline:
                raise
        time.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, 1.0)


class _SQLite:
    """The file backend: one connection per thread (and per process, after a fork)."""

    dialect = sql.SQLITE

    def __init__(self, path: Path) -> None:
        self.path = path
        self._upsert_task = sql.upsert_task(sql.SQLITE)
        self._upsert_event = sql.upsert_event(sql.SQLITE)
        self._connections = ThreadConnections(self._open)
        self._connections.get()  # fail early on an unusable path, and create or upgrade the schema

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None,
                               check_same_thread=False)
        try:
            _retry(lambda: self._setup(conn))
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def _setup(conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"database is locked (journal_mode is {mode})")
        conn.execute("PRAGMA synchronous = NORMAL")
        if conn.execute("PRAGMA user_version").fetchone()[0] == sql.SCHEMA_VERSION:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > sql.SCHEMA_VERSION:
                raise ValidationError(f"the task log was written by a newer imgtools "
                                      f"(schema {version} > {sql.SCHEMA_VERSION})", field="path")
            while 0 < version < sql.SCHEMA_VERSION:  # upgrade in place, step by step
                for statement in _UPGRADES[version]:
                    conn.execute(statement)
                version += 1
            for statement in sql.schema(sql.SQLITE):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {sql.SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def write(self, tasks: Sequence[sql.TaskRow], events: Sequence[sql.EventRow]) -> None:
        def attempt() -> None:
            conn = self._connections.get()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(self._upsert_task, tasks)
                conn.executemany(self._upsert_event, events)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

        _retry(attempt)

    def drain(self, send: Callable[[list[sql.TaskRow], list[sql.EventRow]], None]) -> int:
        """``send(rows, events)`` everything in the log, then delete it, in one transaction
        (a failed ``send`` keeps it all); returns the number of task rows sent."""
        def attempt() -> int:
            conn = self._connections.get()
            conn.execute("BEGIN IMMEDIATE")
            try:
                rows = conn.execute(f"SELECT {', '.join(sql.TASK_COLUMNS)} FROM tasks").fetchall()
                events = conn.execute(
                    f"SELECT {', '.join(sql.EVENT_COLUMNS)} FROM events").fetchall()
                if rows or events:
                    send(rows, events)
                conn.execute("DELETE FROM tasks")
                conn.execute("DELETE FROM events")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return len(rows)

        return _retry(attempt)

    def fetchall(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._connections.get().execute(query, params).fetchall()

    def iterate(self, query: str, params: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]:
        cursor = self._connections.get().execute(query, params)
        while rows := cursor.fetchmany(1000):
            yield from rows

    def columns(self, where: str, params: list[Any]) -> LogColumns:
        """The frame's columns as whole arrays, read ``FETCH_CHUNK`` rows at a time in key
        order (``id > last``: a range scan of the table's one B-tree).

        Per chunk, one query concatenates each column into a single string in SQLite
        (``group_concat``) and Python splits it: that makes a few large objects instead of a
        tuple and a dozen objects per row, which is what makes reading 1,000,000 rows fast and
        keeps transient memory to one chunk. All columns come from the same scan, so they line
        up row for row. A separator found inside a value (the split count disagrees) sends that
        chunk through an ordinary row fetch instead.
        """
        conn = self._connections.get()
        parts: dict[str, list[Any]] = {name: [] for name in TEXT_COLUMNS + TIME_COLUMNS}
        clause = f"{where} AND" if where else " WHERE"
        last = ""
        while True:
            bounds = [*params, last, FETCH_CHUNK]
            chunk_sql = f"SELECT * FROM tasks{clause} id > ? ORDER BY id LIMIT ?"
            row = conn.execute(f"{_CONCAT} FROM ({chunk_sql})", bounds).fetchone()
            count, high = row[0], row[1]
            if count == 0:
                break
            chunk = sql.split_chunk(count, row[2:])
            if chunk is None:
                rows = conn.execute(f"SELECT {_PLAIN} FROM ({chunk_sql})", bounds).fetchall()
                chunk = plain_chunk(rows)
            for name, values in chunk.items():
                parts[name].append(values)
            if count < FETCH_CHUNK:
                break
            last = high
        return join_columns(parts)

    def close(self) -> None:
        self._connections.close()


# -- the log ---------------------------------------------------------------------------------

_logger = logging.getLogger("imgtools")
# Logs with writes queued: flushed at interpreter exit, so nothing queued is dropped.
_OPEN_LOGS: weakref.WeakSet[_WriteBehind] = weakref.WeakSet()


@atexit.register
def _flush_all() -> None:
    for behind in list(_OPEN_LOGS):
        behind.flush()


# A queued write: builds its rows and events when the writer takes it.
_Job = Callable[[], tuple[Sequence[sql.TaskRow], Sequence[sql.EventRow]]]


class _WriteBehind:
    """One writer thread per log (started on first use, per process) for the ``..._later``
    calls: it takes every job queued so far and writes them in one transaction."""

    def __init__(self, log: TaskLog) -> None:
        self._log = weakref.ref(log)
        self._cond = threading.Condition()
        self._queue: list[tuple[_Job, int]] = []
        self._busy = False
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def put(self, job: _Job, count: int) -> None:
        with self._cond:
            if self._pid != os.getpid():  # a fork: the parent's thread and queue are not ours
                self._queue, self._busy, self._thread = [], False, None
                self._pid = os.getpid()
            self._queue.append((job, count))
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, daemon=True,
                                                name="imgtools-log-writer")
                self._thread.start()
                _OPEN_LOGS.add(self)
            self._cond.notify_all()

    def flush(self) -> None:
        if not self._queue and not self._busy:  # the common case: nothing queued, no lock
            return
        with self._cond:
            while (self._queue or self._busy) and self._pid == os.getpid():
                self._cond.wait()

    def stop(self) -> None:
        """Write what is queued, then let the writer thread end (a later ``put`` starts
        another): a closed log keeps no thread waiting forever."""
        self.flush()
        with self._cond:
            self._thread = None
            self._cond.notify_all()

    def _work(self) -> None:
        me = threading.current_thread()
        while True:
            with self._cond:
                while not self._queue:
                    if self._thread is not me:  # stopped (or replaced): nothing left to do
                        return
                    self._cond.wait()
                # Busy before the queue empties: flush()'s unlocked check never sees both idle.
                self._busy = True
                batch, self._queue = self._queue, []
            try:
                self._write(batch)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _write(self, batch: list[tuple[_Job, int]]) -> None:
        log = self._log()
        if log is None:
            return
        rows: list[sql.TaskRow] = []
        events: list[sql.EventRow] = []
        for job, count in batch:
            try:
                job_rows, job_events = job()
            except Exception:  # a damaged page: dropped alone, and said
                _logger.warning("could not record %d listed task(s) in the audit log", count,
                                exc_info=True)
                continue
            rows.extend(job_rows)
            events.extend(job_events)
        if not rows:
            return
        try:
            log._backend.write(rows, events)
        except Exception:
            _logger.warning("could not record %d listed task(s) in the audit log", len(rows),
                            exc_info=True)


def _in_slices(count: int, rows_of: Callable[[int, int], tuple[list[sql.TaskRow],
                                                                 list[sql.EventRow]]]
               ) -> tuple[list[sql.TaskRow], list[sql.EventRow]]:
    """The rows and events of ``count`` tasks, built ``WRITER_SLICE`` at a time by the writer
    thread, which lets go of the GIL between slices.

    Building 20,000 rows is a few long C calls (``zip``) that never release the GIL, and a
    thread waiting for it waits the whole switch interval (5 ms) at each turn: the caller's
    own work right after a listing (closing the client, showing the frame) was slowed that
    way by ~15 ms. ``sleep(0)`` hands the GIL over at once; the SQLite writes that follow
    release it on every row anyway. One damaged slice still drops the whole job (raises)."""
    rows: list[sql.TaskRow] = []
    events: list[sql.EventRow] = []
    for start in range(0, count, WRITER_SLICE):
        part_rows, part_events = rows_of(start, min(start + WRITER_SLICE, count))
        rows.extend(part_rows)
        events.extend(part_events)
        time.sleep(0)
    return rows, events


class _class_or_instance:
    """A method that also works on the class: ``TaskLog.import_(path)`` merges into the default
    log (``$IMGTOOLS_LOG`` or the user's), ``log.import_(path)`` into that one."""

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func
        self.__doc__ = func.__doc__

    def __get__(self, obj: Any, owner: type) -> Callable[..., Any]:
        if obj is not None:
            return lambda *args, **kwargs: self.func(obj, *args, **kwargs)

        def into_default(path: str | os.PathLike[str]) -> Any:
            with owner() as log:
                return self.func(log, path)

        return into_default


def _values(value: Filter) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else [str(v) for v in value]


class TaskLog:
    """The audit log of tasks (see the module docstring).

    ``TaskLog(path=None)``: the SQLite file at ``path``, else ``$IMGTOOLS_LOG``, else
    ``<user data dir>/imgtools/tasks.sqlite``; created on first use. A ``postgresql://`` URL
    (as ``path`` or in ``$IMGTOOLS_LOG``) opens the team log on that server instead (its
    tables made by ``imgtools log init URL``); ``spool`` is the local file where writes it
    cannot take wait (default: one per URL in the user data dir). Both have the same
    semantics. Safe to share between threads, and to open from several processes, hosts or
    notebooks at once.
    """

    #: ``record`` takes ``origin=`` (the client passes where it saw the tasks).
    records_origin: Final = True

    def __init__(self, path: str | os.PathLike[str] | None = None, *,
                 spool: str | os.PathLike[str] | None = None) -> None:
        target = path if path is not None else default_log_target()
        self._backend: _Backend
        #: The SQLite file (``None`` for a team log on PostgreSQL).
        self.path: Path | None
        #: The team log's URL without its password (``None`` for a file).
        self.url: str | None
        if is_url(target):
            from imgtools._pglog import Postgres

            self.path, self.url = None, safe_url(str(target))
            self._backend = Postgres(str(target), None if spool is None
                                     else Path(spool).expanduser(), TaskLog)
        else:
            self.path, self.url = Path(target).expanduser(), None
            self._backend = _SQLite(self.path)
        self._d = self._backend.dialect
        self._behind = _WriteBehind(self)

    @classmethod
    def default(cls) -> TaskLog:
        """The log at the default path (``$IMGTOOLS_LOG`` or the user data dir)."""
        return cls()

    def __repr__(self) -> str:
        return f"TaskLog({str(self.path) if self.url is None else self.url!r})"

    def close(self) -> None:
        """Write what ``record_bodies_later`` queued, then close every connection this log
        opened (in this process). Idempotent."""
        self._behind.stop()
        self._backend.close()

    def flush(self) -> None:
        """Wait until what ``record_bodies_later`` queued is written (or failed: logged)."""
        self._behind.flush()

    def _read(self) -> _Backend:
        # Read-your-writes: whatever this process queued is in the database first.
        self._behind.flush()
        return self._backend

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- writing -------------------------------------------------------------------------------

    def record(self, tasks: Iterable[Task], *, seen_at: datetime | None = None,
               origin: Origin | None = None) -> None:
        """Upsert ``tasks`` in one transaction and add an event for each status not seen yet.

        ``seen_at`` (default now, UTC) is when the tasks were observed, ``origin`` the service
        they were seen through (region, account, host, emulator). Idempotent: the same state
        twice changes nothing but ``last_seen``. A stub never erases known
        input/result/message, and an older ``updated_at`` never overwrites a newer state.
        """
        seen = to_us(seen_at) if seen_at is not None else now_us()
        where = origin if origin is not None else UNKNOWN
        self.write_rows([sql.task_row(task, seen, where) for task in tasks])

    def record_bodies(self, bodies: Iterable[Mapping[str, Any]], *,
                      seen_at: datetime | None = None, origin: Origin | None = None) -> None:
        """``record`` for task bodies as the service sent them (list stubs or full bodies),
        without building ``Task`` objects for stubs: the fast path for big listings.
        A damaged body raises ``ResponseError`` and nothing of the batch is written."""
        seen = to_us(seen_at) if seen_at is not None else now_us()
        where = origin if origin is not None else UNKNOWN
        self.write_rows([sql.body_row(body, seen, where) for body in bodies])

    def record_bodies_later(self, bodies: Sequence[Mapping[str, Any]], *,
                            seen_at: datetime | None = None,
                            origin: Origin | None = None) -> None:
        """``record_bodies`` on this log's writer thread: returns at once, so that recording a
        big listing overlaps fetching and framing it instead of adding to them. Pages queued
        together are written in one transaction. Every read of this log, ``flush()``,
        ``close()`` and the end of the process wait for what was queued; a page that cannot
        be written (a damaged body, the database gone) is logged as a warning, never raised
        (an audit log must not break a listing)."""
        seen = to_us(seen_at) if seen_at is not None else now_us()
        where = origin if origin is not None else UNKNOWN

        def rows_of(part: Sequence[Mapping[str, Any]]
                    ) -> tuple[list[sql.TaskRow], list[sql.EventRow]]:
            rows = [sql.body_row(body, seen, where) for body in part]
            return rows, [sql.event_of(r) for r in rows]

        self._behind.put(lambda: _in_slices(len(bodies), lambda a, b: rows_of(bodies[a:b])),
                         len(bodies))

    def record_stubs_later(self, columns: Mapping[str, Any], *,
                           seen_at: datetime | None = None,
                           origin: Origin | None = None) -> None:
        """``record_bodies_later`` for list stubs given as whole columns
        (``_logsql.STUB_COLUMNS``: the ids, types, statuses, owners and int64 epoch-us times
        a frame builder parsed already), so no Python object is made per field."""
        seen = to_us(seen_at) if seen_at is not None else now_us()
        where = origin if origin is not None else UNKNOWN
        count = len(columns["id"])

        def rows_of(start: int, stop: int) -> tuple[list[sql.TaskRow], list[sql.EventRow]]:
            part = {name: values[start:stop] for name, values in columns.items()}
            return sql.stub_rows(part, seen, where)

        self._behind.put(lambda: _in_slices(count, rows_of), count)

    def write_rows(self, rows: Sequence[sql.TaskRow],
                   events: Sequence[sql.EventRow] | None = None) -> None:
        """Upsert raw rows (``_logsql.TASK_COLUMNS`` order) and their events in one
        transaction; the events default to one per row (its status, first seen now)."""
        if rows:
            self._behind.flush()  # after what was queued before: arrival order is kept
            self._backend.write(rows, [sql.event_of(r) for r in rows] if events is None
                                else events)

    def copy_into(self, other: TaskLog) -> int:
        """Merge every task and event of this log into ``other`` with the log's upsert rules
        (so copying twice changes nothing); returns the number of tasks copied."""
        count = 0
        batch: list[sql.TaskRow] = []
        for row in self._read().iterate(f"SELECT {', '.join(sql.TASK_COLUMNS)} FROM tasks"):
            batch.append(row)
            if len(batch) >= IMPORT_BATCH * 10:
                other.write_rows(batch, [])
                count, batch = count + len(batch), []
        if batch:
            other.write_rows(batch, [])
            count += len(batch)
        events: list[sql.EventRow] = []
        for event in self._read().iterate(f"SELECT {', '.join(sql.EVENT_COLUMNS)} FROM events"):
            events.append(event)
            if len(events) >= IMPORT_BATCH * 10:
                other.write_events(events)
                events = []
        if events:
            other.write_events(events)
        return count

    def write_events(self, events: Sequence[sql.EventRow]) -> None:
        """Upsert raw events (``_logsql.EVENT_COLUMNS`` order) in one transaction."""
        if events:
            self._behind.flush()
            self._backend.write([], events)

    def drain_into(self, send: Callable[[list[sql.TaskRow], list[sql.EventRow]], None]) -> int:
        """Hand every row and event to ``send`` and delete them if it returns, in one
        transaction (a file log only: the spool of a team log)."""
        drain = getattr(self._backend, "drain", None)
        if drain is None:
            raise ValidationError("only a file log can be drained", field="path")
        self._behind.flush()
        return int(drain(send))

    def pending(self) -> int:
        """Task rows a team log keeps in its local spool, waiting for the server (0 for a
        file log)."""
        pending = getattr(self._backend, "pending", None)
        return int(pending()) if pending is not None else 0

    def push_pending(self) -> int:
        """Send a team log's spool to the server now; the number of task rows sent."""
        push = getattr(self._backend, "push_pending", None)
        return int(push()) if push is not None else 0

    # -- reading -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self._read().fetchall("SELECT count(*) FROM tasks")[0][0])

    def __contains__(self, task_id: object) -> bool:
        return bool(self._read().fetchall(
            f"SELECT 1 FROM tasks WHERE id = {self._d.mark}", (task_id,)))

    def get(self, task_id: str) -> Task | None:
        """The logged task (a stub unless its detail is known), or ``None``."""
        found = self._read().fetchall(
            f"SELECT {', '.join(sql.TASK_COLUMNS)} FROM tasks WHERE id = {self._d.mark}",
            (task_id,))
        return sql.row_to_task(found[0]) if found else None

    def tasks(self, since: str | datetime | timedelta | None = None, status: Filter = None,
              type: Filter = None, *, region: Filter = None, account: Filter = None,
              emulator: bool | None = None) -> Iterator[Task]:
        """Logged tasks, oldest ``created_at`` first, filtered like ``columns``."""
        where, params = self.where(since, status, type, region=region, account=account,
                                   emulator=emulator)
        for row in self._read().iterate(
                f"SELECT {', '.join(sql.TASK_COLUMNS)} FROM tasks{where} "
                f"ORDER BY created_at, id", params):
            yield sql.row_to_task(row)

    def complete_ids(self, ids: Iterable[str]) -> set[str]:
        """Those of ``ids`` whose input/result/message the log holds for their stored status."""
        wanted = list(ids)
        found: set[str] = set()
        for start in range(0, len(wanted), ID_CHUNK):
            part = wanted[start:start + ID_CHUNK]
            found.update(r[0] for r in self._read().fetchall(
                f"SELECT id FROM tasks WHERE detail = 1 AND id IN ({self._d.marks(len(part))})",
                part))
        return found

    def where(self, since: str | datetime | timedelta | None = None, status: Filter = None,
              type: Filter = None, *, region: Filter = None, account: Filter = None,
              emulator: bool | None = None) -> tuple[str, list[Any]]:
        """The ``WHERE`` clause (with a leading space, or empty) and its parameters for
        these filters on ``tasks``."""
        clauses: list[str] = []
        params: list[Any] = []
        start = parse_since(since)
        if start is not None:
            clauses.append(f"created_at >= {self._d.mark}")
            params.append(to_us(start))
        for column, value in (("status", status), ("type", type), ("region", region),
                              ("account", account)):
            values = _values(value)
            if values is not None:
                clauses.append(f"{column} IN ({self._d.marks(len(values))})")
                params.extend(values)
        if emulator is not None:
            clauses.append("emulator = 1" if emulator else "coalesce(emulator, 0) = 0")
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

    def columns(self, since: str | datetime | timedelta | None = None, status: Filter = None,
                type: Filter = None, *, region: Filter = None, account: Filter = None,
                emulator: bool | None = None) -> LogColumns:
        """The logged tasks as whole columns (``TEXT_COLUMNS``: object arrays with ``None``;
        ``TIME_COLUMNS``: int64 epoch microseconds, ``NAT_US`` for null), in storage order.

        ``since``: tasks created at or after it (``"7d"``, ``"12h"``, a datetime...);
        ``status`` / ``type`` / ``region`` / ``account``: one value or several; ``emulator``:
        only tasks seen through the embedded emulator (true) or not (false).
        ``history.log_frame(log)`` makes the standard frame of them.
        """
        where, params = self.where(since, status, type, region=region, account=account,
                                   emulator=emulator)
        return self._read().columns(where, params)

    def event_rows(self, task_id: str | None = None) -> list[tuple[Any, ...]]:
        """Status changes seen, oldest first: ``(task_id, status, seen_at, updated_at, region,
        account)`` with times in epoch microseconds."""
        where, params = ((f" WHERE task_id = {self._d.mark}", [task_id])
                         if task_id is not None else ("", []))
        return self._read().fetchall(
            f"SELECT task_id, status, seen_at, updated_at, region, account FROM events{where}"
            " ORDER BY seen_at, task_id", params)

    # -- moving logs between machines ----------------------------------------------------------

    def _lines(self) -> Iterator[dict[str, Any]]:
        """Every task with its events as one JSON-ready dict (the export line)."""
        mark = self._d.mark
        batch: list[tuple[Any, ...]] = []

        def flush() -> Iterator[dict[str, Any]]:
            found: dict[str, list[dict[str, Any]]] = {}
            for task_id, status, seen, updated, *where in self._read().fetchall(
                    f"SELECT {', '.join(sql.EVENT_COLUMNS)} FROM events WHERE task_id IN "
                    f"({', '.join([mark] * len(batch))}) ORDER BY seen_at",
                    [r[0] for r in batch]):
                found.setdefault(task_id, []).append(
                    {"status": status, "seen_at": iso_us(seen), "updated_at": iso_us(updated),
                     **dict(zip(("region", "account", "host", "emulator"), where, strict=True))})
            for row in batch:
                yield _line(row, found.get(row[0], []))

        for row in self._read().iterate(
                f"SELECT {', '.join(sql.TASK_COLUMNS)} FROM tasks ORDER BY id"):
            batch.append(row)
            if len(batch) >= ID_CHUNK:
                yield from flush()
                batch = []
        if batch:
            yield from flush()

    def export(self, path: str | os.PathLike[str]) -> int:
        """Write the whole log as JSON Lines (one task per line, with its events) to ``path``;
        returns the number of tasks written. Times are ISO 8601 UTC with microseconds."""
        target = Path(path).expanduser()
        count = 0
        tmp = target.with_name(target.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as out:
            for line in self._lines():
                out.write(json.dumps(line, separators=(",", ":")) + "\n")
                count += 1
        tmp.replace(target)  # readers never see half a file
        return count

    @_class_or_instance
    def import_(self, path: str | os.PathLike[str]) -> int:
        """Merge a JSON Lines export (from ``export``) into this log with the same upsert rules
        as ``record``, events included; returns the number of task lines read.

        A damaged line raises ``ValidationError`` naming its line number; lines before
        the failing batch of ``IMPORT_BATCH`` are kept.
        """
        rows: list[sql.TaskRow] = []
        events: list[sql.EventRow] = []
        count = 0
        with Path(path).expanduser().open(encoding="utf-8") as src:
            for number, text in enumerate(src, 1):
                if not text.strip():
                    continue
                try:
                    row, row_events = _parse_line(text)
                except (ValueError, KeyError, TypeError) as error:
                    raise ValidationError(f"{path}: line {number}: not a task log line ({error})",
                                          field="path") from None
                rows.append(row)
                events.extend(row_events)
                count += 1
                if len(rows) >= IMPORT_BATCH:
                    self.write_rows(rows, events)
                    rows, events = [], []
        if rows:
            self.write_rows(rows, events)
        return count


def _line(row: Sequence[Any], events: list[dict[str, Any]]) -> dict[str, Any]:
    c = sql.COL
    return {
        "id": row[c["id"]], "type": row[c["type"]], "status": row[c["status"]],
        "owner": row[c["owner"]], "created_at": iso_us(row[c["created_at"]]),
        "updated_at": iso_us(row[c["updated_at"]]), "expires_at": iso_us(row[c["expires_at"]]),
        "input": sql.loads(row[c["input"]]), "result": sql.loads(row[c["result"]]),
        "message": row[c["message"]], "detail": bool(row[c["detail"]]),
        "first_seen": iso_us(row[c["first_seen"]]), "last_seen": iso_us(row[c["last_seen"]]),
        "region": row[c["region"]], "account": row[c["account"]], "host": row[c["host"]],
        "emulator": None if row[c["emulator"]] is None else bool(row[c["emulator"]]),
        "events": events,
    }


def _us_field(data: Mapping[str, Any], name: str, *, required: bool = True) -> int | None:
    value = data.get(name)
    if value is None:
        if required:
            raise KeyError(name)
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    parsed = parse_since(str(value))  # ISO text (the span forms never appear in exports)
    assert parsed is not None
    return to_us(parsed)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _flag(value: Any) -> int | None:
    return None if value is None else int(bool(value))


def _parse_line(text: str) -> tuple[sql.TaskRow, list[sql.EventRow]]:
    from imgtools import _taskfields as fields

    data = json.loads(text)
    if not isinstance(data, dict):
        raise TypeError("expected a JSON object")
    status = TaskStatus(data["status"]).value
    if not isinstance(data["id"], str) or not isinstance(data["type"], str):
        raise TypeError("id and type must be strings")
    updated = _us_field(data, "updated_at")
    created = _us_field(data, "created_at")
    assert updated is not None and created is not None
    first = _us_field(data, "first_seen", required=False)
    last = _us_field(data, "last_seen", required=False)
    first = updated if first is None else first
    for name in ("input", "result"):
        if data.get(name) is not None and not isinstance(data[name], dict):
            raise TypeError(f"{name} must be an object or null")
    inp, res = data.get("input"), data.get("result")
    owner = _text(data.get("owner"))
    account = _text(data.get("account"))
    where = (_text(data.get("region")), account if account is not None else owner,
             _text(data.get("host")), _flag(data.get("emulator")))
    row = (data["id"], data["type"], status, owner, created, updated,
           _us_field(data, "expires_at", required=False), sql.dumps(inp), sql.dumps(res),
           fields.message(data.get("message")), fields.input_image(inp), fields.container(inp),
           fields.result_image(res), fields.export_location(res),
           first, last if last is not None else first,
           int(bool(data.get("detail", "input" in data))), *where)
    events: list[sql.EventRow] = []
    for event in data.get("events") or []:
        seen = _us_field(event, "seen_at")
        at = _us_field(event, "updated_at", required=False)
        assert seen is not None
        event_where = tuple(event.get(k, w) for k, w in
                            zip(("region", "account", "host"), where, strict=False))
        events.append((row[0], TaskStatus(event["status"]).value, seen,
                       updated if at is None else at, *event_where,
                       _flag(event.get("emulator", where[3]))))
    if not events:
        events.append((row[0], status, first, updated, *where))
    return row, events

"""The local audit log: every task imgtools observes, kept after the service forgets it.

The service purges a finished task 48 h after it ends and its list gives only stubs, so
imgtools keeps its own record in SQLite (stdlib): a ``tasks`` table (one row per task id,
the newest state and the fullest detail seen) and an ``events`` table (one row per status a
task was seen in, with the time it was first seen).

Storage choices, for speed and for several writers at once:

* times are INTEGER epoch **microseconds** UTC: they sort, compare and turn into
  ``datetime64[us, UTC]`` without parsing;
* WAL mode, ``synchronous=NORMAL`` (a committed row survives a killed process; only a power
  cut can lose the last commits), ``busy_timeout`` plus a retry loop, short ``BEGIN IMMEDIATE``
  transactions, and one connection per thread (and per process, after a fork).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import re
import sqlite3
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self, TypeVar

from imgtools._exceptions import ResponseError, ValidationError
from imgtools._models import Task, TaskStatus, parse_time

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["TaskLog", "default_log_path", "parse_since"]

_T = TypeVar("_T")

#: Environment variable naming the log file.
LOG_ENV: Final = "IMGTOOLS_LOG"
#: Seconds a connection waits for another writer's lock (SQLite ``busy_timeout``).
BUSY_TIMEOUT: Final = 10.0
#: Seconds ``record``/``import_`` keep retrying "database is locked" before giving up.
LOCK_RETRY_DEADLINE: Final = 60.0
#: Rows fetched per step when building a frame (bounds peak memory).
FETCH_CHUNK: Final = 65_536
#: Ids per ``IN (...)`` lookup (below SQLite's variable limit on old builds too).
ID_CHUNK: Final = 900

_SCHEMA_VERSION: Final = 1
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS tasks (
    id              TEXT PRIMARY KEY,
    type            TEXT NOT NULL,
    status          TEXT NOT NULL,
    owner           TEXT,
    created_at      INTEGER NOT NULL,   -- epoch microseconds, UTC
    updated_at      INTEGER NOT NULL,
    expires_at      INTEGER,
    input           TEXT,               -- JSON object or NULL
    result          TEXT,
    message         TEXT,               -- NULL when the service sent "None" or ""
    image_id        TEXT,
    container       TEXT,
    export_location TEXT,
    first_seen      INTEGER NOT NULL,
    last_seen       INTEGER NOT NULL,
    detail          INTEGER NOT NULL    -- 1: input/result/message match the stored status
);
CREATE INDEX IF NOT EXISTS tasks_created_at ON tasks (created_at);
CREATE TABLE IF NOT EXISTS events (
    task_id    TEXT NOT NULL,
    status     TEXT NOT NULL,
    seen_at    INTEGER NOT NULL,        -- first time this status was seen, epoch us UTC
    updated_at INTEGER NOT NULL,        -- the task's updated_at when it was seen
    PRIMARY KEY (task_id, status)
) WITHOUT ROWID;
"""

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_US: Final = timedelta(microseconds=1)
# Lifecycle order: breaks ties between two states with the same (seconds) updated_at.
_RANK: Final = {"pending": 0, "processing": 1, "success": 2, "failure": 2}
_COLUMNS: Final = ("id", "type", "status", "owner", "created_at", "updated_at", "expires_at",
                   "input", "result", "message", "image_id", "container", "export_location",
                   "first_seen", "last_seen", "detail")


def default_log_path() -> Path:
    """``$IMGTOOLS_LOG``, else ``platformdirs.user_data_dir("imgtools")/tasks.sqlite``."""
    env = os.environ.get(LOG_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("imgtools")) / "tasks.sqlite"


_SINCE_RE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_SINCE_UNITS: Final = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_since(value: str | datetime | timedelta | None, *,
                now: datetime | None = None) -> datetime | None:
    """A point in time (aware UTC) from ``"7d"``, ``"12h"``, ``"30m"``, ``"90s"``, ``"2w"``
    (that long before ``now``), an ISO date/datetime, a ``timedelta`` or a ``datetime``
    (naive means UTC). ``None`` stays ``None``."""
    if value is None:
        return None
    now = _aware(now) if now is not None else datetime.now(UTC)
    if isinstance(value, datetime):
        return _aware(value)
    if isinstance(value, timedelta):
        return now - value
    if not isinstance(value, str):
        raise ValidationError(f"since: expected text like '7d', got {type(value).__name__}",
                              field="since")
    match = _SINCE_RE.match(value)
    if match:
        return now - timedelta(seconds=float(match[1]) * _SINCE_UNITS[match[2].lower()])
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        return _aware(datetime.fromisoformat(text))
    except ValueError:
        raise ValidationError(
            f"since: {value!r} is neither a span like '7d', '12h', '30m' nor an ISO date",
            field="since", problems=("use <number><s|m|h|d|w> or YYYY-MM-DD[THH:MM[:SS]]",),
        ) from None


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _to_us(value: datetime) -> int:
    return (_aware(value) - _EPOCH) // _US


def _time_us(value: Any) -> int | None:
    """A service timestamp as epoch microseconds; the common ``...Z`` form without
    ``parse_time``'s detours (Python 3.11's ``fromisoformat`` reads ``Z`` itself)."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            return (parsed - _EPOCH) // _US
    parsed_or_none = parse_time(value)  # None/"" -> None; damage -> ResponseError
    return None if parsed_or_none is None else _to_us(parsed_or_none)


def _from_us(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


def _iso(value: int | None) -> str | None:
    if value is None:
        return None
    return _from_us(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _dumps(value: Mapping[str, Any] | None) -> str | None:
    if value is None:
        return None
    return json.dumps(dict(value), sort_keys=True, separators=(",", ":"), default=str)


def _loads(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    value = json.loads(text)
    return value if isinstance(value, dict) else None


def _derived(input_json: str | None, result_json: str | None
             ) -> tuple[str | None, str | None, str | None]:
    """(image_id, container, export_location): the same rules as ``Task``'s properties."""
    if input_json is None and result_json is None:
        return None, None, None
    probe = Task(id="", type="", status=TaskStatus.PENDING, created_at=_EPOCH,
                 updated_at=_EPOCH, input=_loads(input_json), result=_loads(result_json))
    return probe.image_id, probe.container, probe.export_location


@dataclass(frozen=True, slots=True)
class _Row:
    """One ``tasks`` row; times in epoch microseconds, input/result as JSON text."""

    id: str
    type: str
    status: str
    owner: str | None
    created_at: int
    updated_at: int
    expires_at: int | None
    input: str | None
    result: str | None
    message: str | None
    first_seen: int
    last_seen: int
    detail: bool
    # Derived from input/result (kept with them so writes need not re-parse the JSON).
    image_id: str | None = None
    container: str | None = None
    export_location: str | None = None

    @classmethod
    def from_task(cls, task: Task, seen: int) -> _Row:
        full = not task.is_stub
        return cls(
            id=task.id, type=task.type, status=task.status.value, owner=task.owner,
            created_at=_to_us(task.created_at), updated_at=_to_us(task.updated_at),
            expires_at=None if task.expires_at is None else _to_us(task.expires_at),
            input=_dumps(task.input) if full else None,
            result=_dumps(task.result) if full else None,
            message=task.message if full else None,
            first_seen=seen, last_seen=seen, detail=full,
            image_id=task.image_id if full else None,
            container=task.container if full else None,
            export_location=task.export_location if full else None,
        )

    @classmethod
    def from_body(cls, body: Mapping[str, Any], seen: int) -> _Row:
        if "input" in body or not isinstance(body, Mapping):
            return cls.from_task(Task.from_json(body), seen)
        try:
            task_id, task_type, status = body["id"], body["type"], body["status"]
            created, updated = _time_us(body["created_at"]), _time_us(body["updated_at"])
        except KeyError as missing:
            raise ResponseError(f"task is missing field: {missing}") from None
        if status not in _RANK:
            raise ResponseError(f"unknown task status: {status!r}")
        if not isinstance(task_id, str) or not isinstance(task_type, str):
            raise ResponseError("task id and type must be strings")
        if created is None or updated is None:
            raise ResponseError("task has empty created_at/updated_at")
        expires = _time_us(body.get("expires_at"))
        owner = body.get("owner")
        return cls(id=task_id, type=task_type, status=status,
                   owner=None if owner is None else str(owner),
                   created_at=created, updated_at=updated, expires_at=expires,
                   input=None, result=None, message=None,
                   first_seen=seen, last_seen=seen, detail=False)

    @classmethod
    def from_db(cls, row: Sequence[Any]) -> _Row:
        # Column order is _COLUMNS.
        return cls(id=row[0], type=row[1], status=row[2], owner=row[3], created_at=row[4],
                   updated_at=row[5], expires_at=row[6], input=row[7], result=row[8],
                   message=row[9], image_id=row[10], container=row[11], export_location=row[12],
                   first_seen=row[13], last_seen=row[14], detail=bool(row[15]))

    def rederived(self) -> _Row:
        """This row with image_id/container/export_location recomputed from input/result."""
        image_id, container, export_location = _derived(self.input, self.result)
        return replace(self, image_id=image_id, container=container,
                       export_location=export_location)

    def to_db(self) -> tuple[Any, ...]:
        return (self.id, self.type, self.status, self.owner, self.created_at, self.updated_at,
                self.expires_at, self.input, self.result, self.message, self.image_id,
                self.container, self.export_location, self.first_seen, self.last_seen,
                int(self.detail))

    def to_task(self) -> Task:
        return Task(
            id=self.id, type=self.type, status=TaskStatus(self.status),
            created_at=_from_us(self.created_at), updated_at=_from_us(self.updated_at),
            owner=self.owner,
            expires_at=None if self.expires_at is None else _from_us(self.expires_at),
            input=_frozen(_loads(self.input)) if self.detail or self.input else None,
            result=_frozen(_loads(self.result)) if self.detail else None,
            message=self.message if self.detail else None,
            is_stub=not self.detail,
        )

    @property
    def key(self) -> tuple[int, int]:
        return self.updated_at, _RANK.get(self.status, 0)


def _frozen(value: dict[str, Any] | None) -> Mapping[str, Any] | None:
    # Reuse the model's read-only mapping so tasks read back behave like fresh ones.
    from imgtools._models import _frozen as freeze

    return freeze(value)


def _merge(old: _Row, new: _Row) -> _Row:
    """The log's upsert rule for one task seen twice (``new`` arriving after ``old``).

    * The state (status, updated_at, expires_at) comes from whichever copy is newer by
      ``(updated_at, lifecycle rank)``; on a tie the arriving copy wins, so repeats are no-ops.
    * A stub never erases known input/result/message.
    * ``detail`` stays true only while the stored input/result/message belong to the stored
      status, so a later stub with a new status marks the row for re-fetching.
    * ``first_seen`` is the earliest, ``last_seen`` the latest observation.
    """
    new_wins = new.key >= old.key
    state, other = (new, old) if new_wins else (old, new)
    # ``source``: the one row input, result and message all come from (its derived columns
    # then hold); ``None`` when they are mixed and must be derived again.
    source: _Row | None
    if new_wins:
        if new.detail:
            source = new if new.input is not None or old.input is None else None
            input_, result, message, detail = new.input or old.input, new.result, new.message, True
        else:
            source, detail = old, old.detail and old.status == new.status
            input_, result, message = old.input, old.result, old.message
    elif old.detail:
        source = old if old.input is not None or new.input is None else None
        input_, result, message, detail = old.input or new.input, old.result, old.message, True
    elif new.detail and new.status == old.status:
        source, detail = new, True
        input_, result, message = new.input, new.result, new.message
    else:
        # An older full copy: its input never changes, its result/message belong to a past state.
        source = old if old.input is not None or new.input is None else None
        input_ = old.input or new.input
        result, message, detail = old.result, old.message, False
    merged = replace(
        state,
        owner=state.owner if state.owner is not None else other.owner,
        created_at=min(old.created_at, new.created_at),
        expires_at=state.expires_at if state.expires_at is not None
        else (other.expires_at if other.status == state.status else None),
        input=input_, result=result, message=message, detail=detail,
        first_seen=min(old.first_seen, new.first_seen),
        last_seen=max(old.last_seen, new.last_seen),
    )
    if source is None:
        return merged.rederived()
    return replace(merged, image_id=source.image_id, container=source.container,
                   export_location=source.export_location)


_UPSERT: Final = (
    f"INSERT INTO tasks ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
    "ON CONFLICT(id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS[1:])
)
# The same (task, status) twice adds nothing; from another machine's log the earliest wins.
_EVENT: Final = (
    "INSERT INTO events (task_id, status, seen_at, updated_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT(task_id, status) DO UPDATE SET "
    "seen_at = min(seen_at, excluded.seen_at), updated_at = min(updated_at, excluded.updated_at) "
    "WHERE excluded.seen_at < events.seen_at OR excluded.updated_at < events.updated_at"
)


# The frame's columns: text columns travel as one string per chunk, values separated by
# "\x1e" (ASCII record separator) and NULL written as "\x1f" (unit separator; not NUL, which
# numpy strips from strings); times as decimal text.
_FRAME_TEXT: Final = ("id", "type", "status", "owner", "image_id", "container",
                      "export_location", "message")
_FRAME_INTS: Final = ("created_at", "updated_at", "expires_at")
_NULL: Final = "\x1f"
_SEP: Final = "\x1e"
_NAT_US: Final = -9223372036854775808  # NaT in datetime64, as an integer
_FRAME_CONCAT: Final = "SELECT count(*), " + ", ".join(
    [f"group_concat(ifnull({c}, char(31)), char(30))" for c in _FRAME_TEXT]
    + [f"group_concat(ifnull({c}, {_NAT_US}), ',')" for c in _FRAME_INTS])
_FRAME_PLAIN: Final = ", ".join(
    [*_FRAME_TEXT, *(f"ifnull({c}, {_NAT_US})" for c in _FRAME_INTS)])


def _split_chunk(row: Sequence[Any]) -> dict[str, Any] | None:
    """One ``_FRAME_CONCAT`` answer as columns, or ``None`` if a value held a separator."""
    import numpy as np

    count = row[0]
    if count == 0:
        return {}
    out: dict[str, Any] = {}
    for at, name in enumerate(_FRAME_TEXT, 1):
        split = row[at].split(_SEP)
        if len(split) != count:
            return None
        values = np.fromiter(split, dtype=object, count=count)
        if _NULL in row[at]:
            values[values == _NULL] = None
        out[name] = values
    for at, name in enumerate(_FRAME_INTS, 1 + len(_FRAME_TEXT)):
        # numpy's C text parser; a short read (bad text) shows as a count mismatch.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            numbers = np.fromstring(row[at], dtype=np.int64, sep=",")
        if len(numbers) != count:
            return None
        out[name] = numbers
    return out


def _plain_chunk(rows: Sequence[Sequence[Any]]) -> dict[str, Any]:
    import numpy as np

    if not rows:
        return {}
    columns = list(zip(*rows, strict=True))
    out: dict[str, Any] = {name: np.array(columns[at], dtype=object)
                           for at, name in enumerate(_FRAME_TEXT)}
    for at, name in enumerate(_FRAME_INTS, len(_FRAME_TEXT)):
        out[name] = np.array(columns[at], dtype=np.int64)
    return out


def _join(parts: list[Any]) -> Any:
    import numpy as np

    if not parts:
        return []
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _is_locked(error: sqlite3.OperationalError) -> bool:
    text = str(error).lower()
    return "locked" in text or "busy" in text


class _class_or_instance:
    """A method that also works on the class: ``TaskLog.import_(path)`` merges into the default
    log (``$IMGTOOLS_LOG`` or the user's), ``log.import_(path)`` into that one."""

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func
        self.__doc__ = func.__doc__

    def __get__(self, obj: Any, owner: type) -> Callable[..., Any]:
        if obj is not None:
            return functools.partial(self.func, obj)

        def into_default(path: str | os.PathLike[str]) -> Any:
            with owner() as log:
                return self.func(log, path)

        return into_default


class TaskLog:
    """The SQLite audit log of tasks (see the module docstring).

    ``TaskLog(path=None)``: the file at ``path``, else ``$IMGTOOLS_LOG``, else
    ``<user data dir>/imgtools/tasks.sqlite``; created on first use. Safe to share between
    threads, and to open from several processes or notebooks at once.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_log_path()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        # Connections opened before a fork must not be used, nor closed, by the child.
        self._orphans: list[sqlite3.Connection] = []
        self._pid = os.getpid()
        self._closed = False
        self._connect()  # fail early on an unusable path, and create the schema

    @classmethod
    def default(cls) -> TaskLog:
        """The log at the default path (``$IMGTOOLS_LOG`` or the user data dir)."""
        return cls()

    def __repr__(self) -> str:
        return f"TaskLog({str(self.path)!r})"

    # -- connections ---------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
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
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None,
                               check_same_thread=False)
        try:
            self._retry(lambda: self._setup(conn))
        except BaseException:
            conn.close()
            raise
        with self._lock:
            self._connections.append(conn)
        self._local.conn = conn
        return conn

    @staticmethod
    def _setup(conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"database is locked (journal_mode is {mode})")
        conn.execute("PRAGMA synchronous = NORMAL")
        if conn.execute("PRAGMA user_version").fetchone()[0] == _SCHEMA_VERSION:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > _SCHEMA_VERSION:
                raise ValidationError(f"the task log was written by a newer imgtools "
                                      f"(schema {version} > {_SCHEMA_VERSION})", field="path")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    @staticmethod
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

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        """Close every connection this log opened (in this process). Idempotent."""
        with self._lock:
            if self._pid == os.getpid():
                for conn in self._connections:
                    conn.close()
            self._connections = []
            self._closed = True
            self._local = threading.local()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- writing -------------------------------------------------------------------------------

    def record(self, tasks: Iterable[Task], *, seen_at: datetime | None = None) -> None:
        """Upsert ``tasks`` in one transaction and add an event for each status not seen yet.

        ``seen_at`` (default now, UTC) is when the tasks were observed. Idempotent: the
        same state twice changes nothing but ``last_seen``. A stub never erases known
        input/result/message, and an older ``updated_at`` never overwrites a newer state.
        """
        seen = _to_us(seen_at) if seen_at is not None else _to_us(datetime.now(UTC))
        rows = [_Row.from_task(task, seen) for task in tasks]
        if rows:
            events = [(r.id, r.status, seen, r.updated_at) for r in rows]
            self._retry(functools.partial(self._upsert, rows, events))

    def record_bodies(self, bodies: Iterable[Mapping[str, Any]], *,
                      seen_at: datetime | None = None) -> None:
        """``record`` for task bodies as the service sent them (list stubs or full bodies),
        without building ``Task`` objects for stubs: the fast path for big listings.
        A damaged body raises ``ResponseError`` and nothing of the batch is written."""
        seen = _to_us(seen_at) if seen_at is not None else _to_us(datetime.now(UTC))
        rows = [_Row.from_body(body, seen) for body in bodies]
        if rows:
            events = [(r.id, r.status, seen, r.updated_at) for r in rows]
            self._retry(functools.partial(self._upsert, rows, events))

    def _upsert(self, rows: Sequence[_Row], events: Sequence[tuple[str, str, int, int]]) -> None:
        # Fold duplicates inside the batch first, in arrival order.
        batch: dict[str, _Row] = {}
        for row in rows:
            known = batch.get(row.id)
            batch[row.id] = row if known is None else _merge(known, row)
        ids = list(batch)
        with self._write() as conn:
            for start in range(0, len(ids), ID_CHUNK):
                part = ids[start:start + ID_CHUNK]
                marks = ",".join("?" * len(part))
                for db_row in conn.execute(
                        f"SELECT {', '.join(_COLUMNS)} FROM tasks WHERE id IN ({marks})", part):
                    old = _Row.from_db(db_row)
                    batch[old.id] = _merge(old, batch[old.id])
            conn.executemany(_UPSERT, [row.to_db() for row in batch.values()])
            conn.executemany(_EVENT, events)

    # -- reading -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self._connect().execute("SELECT count(*) FROM tasks").fetchone()[0])

    def __contains__(self, task_id: object) -> bool:
        return self._connect().execute(
            "SELECT 1 FROM tasks WHERE id = ?", (task_id,)).fetchone() is not None

    def get(self, task_id: str) -> Task | None:
        """The logged task (a stub unless its detail is known), or ``None``."""
        row = self._connect().execute(
            f"SELECT {', '.join(_COLUMNS)} FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return None if row is None else _Row.from_db(row).to_task()

    def tasks(self, since: str | datetime | timedelta | None = None,
              status: str | Iterable[str] | None = None,
              type: str | Iterable[str] | None = None) -> Iterator[Task]:
        """Logged tasks, oldest ``created_at`` first, filtered like ``frame``."""
        where, params = self._where(since, status, type)
        cursor = self._connect().execute(
            f"SELECT {', '.join(_COLUMNS)} FROM tasks{where} ORDER BY created_at, id", params)
        while rows := cursor.fetchmany(1000):
            for row in rows:
                yield _Row.from_db(row).to_task()

    def complete_ids(self, ids: Iterable[str]) -> set[str]:
        """Those of ``ids`` whose input/result/message the log holds for their stored status."""
        conn = self._connect()
        wanted = list(ids)
        found: set[str] = set()
        for start in range(0, len(wanted), ID_CHUNK):
            part = wanted[start:start + ID_CHUNK]
            marks = ",".join("?" * len(part))
            found.update(r[0] for r in conn.execute(
                f"SELECT id FROM tasks WHERE detail = 1 AND id IN ({marks})", part))
        return found

    @staticmethod
    def _where(since: str | datetime | timedelta | None, status: str | Iterable[str] | None,
               type: str | Iterable[str] | None) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        start = parse_since(since)
        if start is not None:
            clauses.append("created_at >= ?")
            params.append(_to_us(start))
        for column, value in (("status", status), ("type", type)):
            if value is None:
                continue
            values = [value] if isinstance(value, str) else [str(v) for v in value]
            clauses.append(f"{column} IN ({','.join('?' * len(values))})")
            params.extend(values)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

    def frame(self, since: str | datetime | timedelta | None = None,
              status: str | Iterable[str] | None = None,
              type: str | Iterable[str] | None = None) -> pd.DataFrame:
        """The logged tasks as the standard tasks frame (``source`` = ``"log"``).

        ``since``: tasks created at or after it (``"7d"``, ``"12h"``, a datetime...);
        ``status`` / ``type``: one value or several. Columns and dtypes are those of
        ``imgtools.history.tasks_frame``.
        """
        from imgtools.history import _frame_from_log_columns

        where, params = self._where(since, status, type)
        return _frame_from_log_columns(self._frame_columns(where, params))

    def _frame_columns(self, where: str, params: list[Any]) -> dict[str, Any]:
        """The frame's columns as whole lists/arrays, read ``FETCH_CHUNK`` rowids at a time.

        Per chunk, one query concatenates each column into a single string in SQLite
        (``group_concat``) and Python splits it: that makes a few large objects instead of a
        tuple and eleven objects per row, which is what makes reading 1,000,000 rows fast and
        keeps transient memory to one chunk. All columns come from the same scan, so they line
        up row for row. A separator found inside a value (the split count disagrees) sends that
        chunk through an ordinary row fetch instead.
        """
        conn = self._connect()
        low, high = conn.execute("SELECT min(rowid), max(rowid) FROM tasks").fetchone()
        parts: dict[str, list[Any]] = {name: [] for name in _FRAME_TEXT + _FRAME_INTS}
        if low is None:
            return {name: _join([]) for name in parts}
        clause = f"{where} AND" if where else " WHERE"
        for start in range(low - 1, high, FETCH_CHUNK):
            bounds = [*params, start, start + FETCH_CHUNK]
            row = conn.execute(f"{_FRAME_CONCAT} FROM tasks{clause} rowid > ? AND rowid <= ?",
                               bounds).fetchone()
            chunk = _split_chunk(row)
            if chunk is None:
                rows = conn.execute(f"SELECT {_FRAME_PLAIN} FROM tasks{clause} rowid > ? "
                                    f"AND rowid <= ?", bounds).fetchall()
                chunk = _plain_chunk(rows)
            for name, values in chunk.items():
                parts[name].append(values)
        return {name: _join(values) for name, values in parts.items()}

    def events_frame(self, task_id: str | None = None) -> pd.DataFrame:
        """Status changes seen: ``task_id``, ``status`` (categorical), ``seen_at`` (first
        seen) and ``updated_at`` (the task's own time then), UTC; oldest first."""
        from imgtools.history import _events_frame

        where, params = (" WHERE task_id = ?", [task_id]) if task_id is not None else ("", [])
        rows = self._connect().execute(
            f"SELECT task_id, status, seen_at, updated_at FROM events{where}"
            " ORDER BY seen_at, task_id", params).fetchall()
        return _events_frame(rows)

    # -- moving logs between machines ----------------------------------------------------------

    def export(self, path: str | os.PathLike[str]) -> int:
        """Write the whole log as JSON Lines (one task per line, with its events) to ``path``;
        returns the number of tasks written. Times are ISO 8601 UTC with microseconds."""
        conn = self._connect()
        target = Path(path).expanduser()
        count = 0
        tmp = target.with_name(target.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as out:
            cursor = conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM tasks ORDER BY id")
            while rows := cursor.fetchmany(1000):
                found: dict[str, list[dict[str, Any]]] = {}
                marks = ",".join("?" * len(rows))
                for task_id, status, seen, updated in conn.execute(
                        f"SELECT task_id, status, seen_at, updated_at FROM events "
                        f"WHERE task_id IN ({marks}) ORDER BY seen_at", [r[0] for r in rows]):
                    found.setdefault(task_id, []).append(
                        {"status": status, "seen_at": _iso(seen), "updated_at": _iso(updated)})
                for db_row in rows:
                    row = _Row.from_db(db_row)
                    line = {
                        "id": row.id, "type": row.type, "status": row.status, "owner": row.owner,
                        "created_at": _iso(row.created_at), "updated_at": _iso(row.updated_at),
                        "expires_at": _iso(row.expires_at), "input": _loads(row.input),
                        "result": _loads(row.result), "message": row.message,
                        "detail": row.detail, "first_seen": _iso(row.first_seen),
                        "last_seen": _iso(row.last_seen), "events": found.get(row.id, []),
                    }
                    out.write(json.dumps(line, separators=(",", ":")) + "\n")
                    count += 1
        tmp.replace(target)  # readers never see half a file
        return count

    @_class_or_instance
    def import_(self, path: str | os.PathLike[str]) -> int:
        """Merge a JSON Lines export (from ``export``) into this log with the same upsert rules
        as ``record``, events included; returns the number of task lines read.

        A damaged line raises ``ValidationError`` naming its line number; lines before
        the failing batch of 1,000 are kept.
        """
        rows: list[_Row] = []
        events: list[tuple[str, str, int, int]] = []
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
                if len(rows) >= 1000:
                    self._retry(functools.partial(self._upsert, rows, events))
                    rows, events = [], []
        if rows:
            self._retry(functools.partial(self._upsert, rows, events))
        return count


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
    return _to_us(parsed)


def _parse_line(text: str) -> tuple[_Row, list[tuple[str, str, int, int]]]:
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
    detail = bool(data.get("detail", "input" in data))
    message = data.get("message")
    row = _Row(
        id=data["id"], type=data["type"], status=status,
        owner=None if data.get("owner") is None else str(data["owner"]),
        created_at=created, updated_at=updated,
        expires_at=_us_field(data, "expires_at", required=False),
        input=_dumps(data.get("input")), result=_dumps(data.get("result")),
        message=None if message in (None, "", "None", "null") else str(message),
        first_seen=first, last_seen=last if last is not None else first, detail=detail,
    ).rederived()
    events = []
    for event in data.get("events") or []:
        seen = _us_field(event, "seen_at")
        at = _us_field(event, "updated_at", required=False)
        assert seen is not None
        events.append((row.id, TaskStatus(event["status"]).value, seen,
                       updated if at is None else at))
    if not events:
        events.append((row.id, status, first, updated))
    return row, events

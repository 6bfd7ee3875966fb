"""The team audit log on PostgreSQL (psycopg 3): the same tables and the same upsert as the
SQLite log (``_logsql``), for several operators, hosts and notebooks at once.

* Concurrency: every write is one transaction of conditional upserts evaluated by the server
  against the stored row; rows are sent in key order so two writers lock shared rows in the
  same order (no deadlock), and a deadlock or serialization failure is retried.
* Roles: ``init_schema`` (``imgtools log init URL``) creates or upgrades the tables; a writer
  then needs only SELECT/INSERT/UPDATE, a reader only SELECT. Opening a log never runs DDL.
* Secrets: the URL's password is never shown: ``safe_url`` is what reprs and errors print.
* Outages: a write the server cannot take is kept in a local SQLite spool beside the user's
  data and sent first by the next write that succeeds (or by ``imgtools log push``); the
  caller gets ``LogUnavailable``, so the operation it was recording is not lost.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import urlsplit, urlunsplit

from imgtools import _logsql as sql
from imgtools._exceptions import LogUnavailable, ValidationError
from imgtools._logconns import ThreadConnections

if TYPE_CHECKING:
    import psycopg

__all__ = ["LogUnavailable", "init_schema", "is_url", "safe_url"]

_T = TypeVar("_T")

#: Environment variable naming the folder of spools (default: the user data dir).
SPOOL_ENV: Final = "IMGTOOLS_SPOOL_DIR"
#: Seconds to wait for the server when connecting.
CONNECT_TIMEOUT: Final = 10
#: Attempts of a write that met a deadlock or a serialization failure.
CONFLICT_ATTEMPTS: Final = 8
#: Heap pages per chunk when reading columns (8 KiB each: ~60,000 rows of a typical log).
CHUNK_PAGES: Final = 4096
SCHEMES: Final = ("postgresql://", "postgres://")


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise LogUnavailable("a team log on PostgreSQL needs psycopg 3: "
                             "pip install 'imgtools[team]'") from None
    return psycopg


def is_url(target: object) -> bool:
    return isinstance(target, str) and target.startswith(SCHEMES)


def safe_url(url: str) -> str:
    """The URL without its password (and without any query, which may hold one)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _redact(text: str, url: str) -> str:
    password = urlsplit(url).password
    for secret in (password, os.environ.get("PGPASSWORD")):
        if secret:
            text = text.replace(secret, "********")
    return text.replace(url, safe_url(url))


def _schema_statements() -> list[str]:
    return [*sql.schema(sql.POSTGRES),
            "CREATE TABLE IF NOT EXISTS imgtools_schema (version INTEGER NOT NULL)"]


def init_schema(url: str) -> int:
    """Create (or upgrade) the team log's tables at ``url``; returns the schema version.
    Needs the right to create tables; idempotent."""
    psycopg = _psycopg()

    try:
        with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT, autocommit=True) as conn, \
                conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(724100)")  # one initialiser at once
                for statement in _schema_statements():
                    conn.execute(statement)
                row = conn.execute("SELECT max(version) FROM imgtools_schema").fetchone()
                version = row[0] if row else None
                if version is not None and version > sql.SCHEMA_VERSION:
                    raise ValidationError(f"the team log was written by a newer imgtools "
                                          f"(schema {version} > {sql.SCHEMA_VERSION})",
                                          field="url")
                conn.execute("DELETE FROM imgtools_schema")
                conn.execute("INSERT INTO imgtools_schema (version) VALUES (%s)",
                             (sql.SCHEMA_VERSION,))
    except psycopg.Error as error:
        raise LogUnavailable(f"team log {safe_url(url)}: {_redact(str(error), url)}") from None
    return sql.SCHEMA_VERSION


def default_spool(url: str) -> Path:
    """Where writes the server could not take wait: one SQLite file per team log."""
    folder = os.environ.get(SPOOL_ENV)
    if folder:
        base = Path(folder).expanduser()
    else:
        import platformdirs

        base = Path(platformdirs.user_data_dir("imgtools")) / "unsent"
    digest = hashlib.sha256(safe_url(url).encode()).hexdigest()[:16]
    return base / f"team-{digest}.sqlite"


def _expr(column: str) -> str:
    return "coalesce(input_image, result_image)" if column == "image_id" else column


def _unnest(columns: Sequence[str], key: str) -> str:
    types = sql.column_types(sql.POSTGRES, columns)
    arrays = ", ".join(f"%s::{t}[]" for t in types)
    return (f"SELECT * FROM unnest({arrays}) AS n({', '.join(columns)}) ORDER BY {key}")


def _rounds(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[tuple[Any, ...]]]:
    """``rows`` split so that no key (its first ``width`` fields) repeats within a part: one
    statement may not update a row twice. Part k holds each key's k-th arrival, so running
    the parts in order is running the rows in order."""
    parts: list[list[tuple[Any, ...]]] = []
    seen: dict[Any, int] = {}
    for row in rows:
        key = row[0] if width == 1 else row[:width]
        at = seen.get(key, 0)
        seen[key] = at + 1
        if at == len(parts):
            parts.append([])
        parts[at].append(row)
    return parts


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * width


class Postgres:
    """The PostgreSQL backend of ``TaskLog``: one connection per thread (and per process)."""

    dialect = sql.POSTGRES

    def __init__(self, url: str, spool: Path | None,
                 open_spool: Callable[[Path], Any]) -> None:
        self.url = url
        self.safe = safe_url(url)
        self._spool_path = spool if spool is not None else default_spool(url)
        self._open_spool = open_spool
        self._spool: Any = None
        self._spool_lock = threading.Lock()
        # A connection the server dropped is closed (``broken`` implies ``closed``): the
        # thread's next call connects again.
        self._connections: ThreadConnections[psycopg.Connection[Any]] = ThreadConnections(
            self._open, usable=lambda conn: not conn.closed)
        # One statement per batch: the rows travel as one typed array per column and the
        # server unnests them in key order (no round trip, no statement, per row).
        self._upsert_task = sql.upsert_task(sql.POSTGRES, _unnest(sql.TASK_COLUMNS, "id"))
        self._upsert_event = sql.upsert_event(sql.POSTGRES, _unnest(sql.EVENT_COLUMNS,
                                                                    "task_id, status"))
        psycopg = _psycopg()
        # Checked on the first connection: a server that is down now must not stop the
        # operation being recorded (its writes wait in the spool), a wrong schema must.
        self._checked = False
        try:
            self._connections.get()
        except psycopg.OperationalError:
            pass
        except psycopg.Error as error:
            raise self._unavailable(error) from None

    def __repr__(self) -> str:
        return f"Postgres({self.safe!r})"

    def _cause(self, error: BaseException) -> str:
        """``Type: message`` of a driver's error, without the password."""
        return f"{type(error).__name__}: {_redact(str(error).strip(), self.url)}"

    def _unavailable(self, error: BaseException) -> LogUnavailable:
        return LogUnavailable(f"team log {self.safe}: {self._cause(error)}")

    @staticmethod
    def _version(conn: psycopg.Connection[Any]) -> int | None:
        import psycopg

        try:
            row = conn.execute("SELECT max(version) FROM imgtools_schema").fetchone()
        except psycopg.errors.UndefinedTable:
            return None
        return None if row is None else row[0]

    # -- connections ---------------------------------------------------------------------------

    def _open(self) -> psycopg.Connection[Any]:
        import psycopg

        conn = psycopg.connect(self.url, connect_timeout=CONNECT_TIMEOUT, autocommit=True,
                               application_name="imgtools")
        if not self._checked:
            version = self._version(conn)
            if version != sql.SCHEMA_VERSION:
                conn.close()
                raise LogUnavailable(
                    f"team log {self.safe}: schema version {version}, this imgtools needs "
                    f"{sql.SCHEMA_VERSION}: run `imgtools log init URL` (with a role that may "
                    f"create tables)")
            self._checked = True
        return conn

    def _guard(self, action: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        """``action(connection)`` with psycopg's errors as ``LogUnavailable`` (password
        removed)."""
        import psycopg

        try:
            return action(self._connections.get())
        except psycopg.Error as error:
            raise self._unavailable(error) from None

    # -- writing -------------------------------------------------------------------------------

    def write(self, tasks: Sequence[sql.TaskRow], events: Sequence[sql.EventRow]) -> None:
        import psycopg

        # Key order: concurrent writers lock shared rows in one order. The sort is stable,
        # so repeats of one task keep their arrival order.
        tasks = sorted(tasks, key=lambda row: row[0])
        events = sorted(events, key=lambda row: (row[0], row[1]))
        try:
            self._send_spool()
            self._write_now(tasks, events)
        except LogUnavailable as refused:
            raise refused from None
        except (psycopg.OperationalError, OSError) as error:
            kept = self._keep(tasks, events)
            raise LogUnavailable(
                f"team log {self.safe} is unreachable ({self._cause(error)}); {kept} task "
                f"row(s) kept in {self._spool_path} until the next write or `imgtools log push`",
                spooled=kept) from None
        except psycopg.Error as error:
            raise self._unavailable(error) from None

    def _write_now(self, tasks: Sequence[sql.TaskRow], events: Sequence[sql.EventRow]) -> None:
        import psycopg

        task_rounds = _rounds(tasks, 1)
        event_rounds = _rounds(events, 2)
        for attempt in range(CONFLICT_ATTEMPTS):
            conn = self._connections.get()
            try:
                with conn.transaction(), conn.cursor() as cur:
                    for part in task_rounds:
                        cur.execute(self._upsert_task, _columns(part, len(sql.TASK_COLUMNS)))
                    for part in event_rounds:
                        cur.execute(self._upsert_event, _columns(part, len(sql.EVENT_COLUMNS)))
                return
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
                if attempt == CONFLICT_ATTEMPTS - 1:
                    raise
                time.sleep(0.01 * (2 ** attempt) * (0.5 + random.random()))

    def _keep(self, tasks: Sequence[sql.TaskRow], events: Sequence[sql.EventRow]) -> int:
        spool = self._spool_log()
        spool.write_rows(list(tasks), list(events))
        return len(tasks)

    def _spool_log(self) -> Any:
        with self._spool_lock:
            if self._spool is None:
                self._spool = self._open_spool(self._spool_path)
            return self._spool

    def _send_spool(self) -> None:
        """Send what earlier writes could not, then forget it (only what was sent)."""
        if self._spool is None and not self._spool_path.exists():
            return
        self._spool_log().drain_into(lambda rows, events: self._write_now(
            sorted(rows, key=lambda r: r[0]), sorted(events, key=lambda e: (e[0], e[1]))))

    def pending(self) -> int:
        """Task rows waiting in the spool."""
        if self._spool is None and not self._spool_path.exists():
            return 0
        return len(self._spool_log())

    def push_pending(self) -> int:
        """Send the spool now; returns the number of task rows sent."""
        if self._spool is None and not self._spool_path.exists():
            return 0
        count = self.pending()
        self._guard(lambda conn: self._send_spool())
        return count

    # -- reading -------------------------------------------------------------------------------

    def fetchall(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._guard(lambda conn: conn.execute(query, params).fetchall())

    def iterate(self, query: str, params: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]:
        """Rows of ``query`` through a server-side cursor, a few thousand at a time (a
        whole log is never held in memory at once)."""
        import psycopg

        conn = self._guard(lambda conn: conn)
        try:
            with conn.transaction(), conn.cursor(name=f"imgtools_{id(self):x}") as cur:
                cur.itersize = 5000
                cur.execute(query, params)
                yield from cur
        except psycopg.Error as error:
            raise self._unavailable(error) from None

    def columns(self, where: str, params: list[Any]) -> dict[str, Any]:
        """The frame's columns, read as the file log reads them: per chunk of the table's
        pages (a TID range scan), one query concatenates each column into a single string on
        the server (``string_agg``) and Python splits it, so a million rows make a few large
        objects instead of a tuple and a dozen objects per row. All aggregates of one query
        consume the same scan, row by row (no parallel plan), so the columns line up; a
        separator inside a value (a split count that disagrees) sends that chunk through an
        ordinary fetch instead. One REPEATABLE READ snapshot for all chunks."""
        text = [f"string_agg(coalesce({_expr(c)}, E'\\x1f'), E'\\x1e')"
                for c in sql.TEXT_COLUMNS]
        times = [f"string_agg(coalesce({c}, {sql.NAT_US})::text, ',')" for c in sql.TIME_COLUMNS]
        concat = f"SELECT count(*), {', '.join(text + times)} FROM tasks"
        plain = (f"SELECT {', '.join(_expr(c) for c in sql.TEXT_COLUMNS)}, "
                 f"{', '.join(f'coalesce({c}, {sql.NAT_US})' for c in sql.TIME_COLUMNS)} "
                 f"FROM tasks")
        clause = f"{where} AND" if where else " WHERE"
        parts: dict[str, list[Any]] = {name: [] for name in sql.TEXT_COLUMNS + sql.TIME_COLUMNS}

        def read(conn: psycopg.Connection[Any]) -> None:
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                conn.execute("SET LOCAL max_parallel_workers_per_gather = 0")
                pages = conn.execute("SELECT pg_relation_size('tasks') / "
                                     "current_setting('block_size')::bigint").fetchone()
                for start in range(0, int(pages[0] if pages else 0) + 1, CHUNK_PAGES):
                    bounds = (f"{clause} ctid >= '({start},0)'::tid "
                              f"AND ctid < '({start + CHUNK_PAGES},0)'::tid")
                    row = conn.execute(concat + bounds, params).fetchone()
                    if row is None or row[0] == 0:
                        continue
                    chunk = sql.split_chunk(int(row[0]), row[1:])
                    if chunk is None:
                        chunk = sql.plain_chunk(conn.cursor(binary=True).execute(
                            plain + bounds, params).fetchall())
                    for name, values in chunk.items():
                        parts[name].append(values)

        self._guard(read)
        return sql.join_columns(parts)

    def close(self) -> None:
        self._connections.close()
        with self._spool_lock:
            if self._spool is not None:
                self._spool.close()
                self._spool = None

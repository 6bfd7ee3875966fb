"""The audit log's tables and statements, shared by the SQLite and the PostgreSQL backend.

Both backends run the same SQL: where the dialects differ (placeholders, ``min``/``LEAST``,
``WITHOUT ROWID``) the difference is in ``Dialect``, and nowhere else. The merge rules of the
log are one conditional upsert (``INSERT ... ON CONFLICT DO UPDATE``), evaluated by the
database against the stored row, so writers in several processes or hosts never read a row in
Python and write it back.

Rows travel as plain tuples in ``TASK_COLUMNS`` / ``EVENT_COLUMNS`` order; no pandas here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any, Final

from imgtools import _taskfields as fields
from imgtools._exceptions import ResponseError
from imgtools._models import Task
from imgtools._taskfields import Origin
from imgtools._times import time_us, to_us

__all__ = ["EVENT_COLUMNS", "POSTGRES", "SCHEMA_VERSION", "SQLITE", "TASK_COLUMNS", "Dialect"]

#: Version of the tables below; SQLite keeps it in ``PRAGMA user_version``, PostgreSQL in the
#: ``imgtools_schema`` table. 1: imgtools <= 0.x (no origin); 2: origin columns.
SCHEMA_VERSION: Final = 2

TASK_COLUMNS: Final = (
    "id", "type", "status", "owner", "created_at", "updated_at", "expires_at",
    "input", "result", "message", "input_image", "container", "result_image", "export_location",
    "first_seen", "last_seen", "detail", "region", "account", "host", "emulator")
EVENT_COLUMNS: Final = ("task_id", "status", "seen_at", "updated_at",
                        "region", "account", "host", "emulator")
# Positions used when rows are read back.
COL: Final = {name: at for at, name in enumerate(TASK_COLUMNS)}

TaskRow = tuple[Any, ...]
EventRow = tuple[Any, ...]

# Lifecycle order: breaks ties between two states with the same (seconds) updated_at.
RANK: Final = {"pending": 0, "processing": 1, "success": 2, "failure": 2}


@dataclass(frozen=True, slots=True)
class Dialect:
    """What differs between the two SQL dialects the log speaks."""

    name: str
    mark: str          # parameter placeholder
    least: str         # two-argument minimum
    greatest: str
    int64: str         # column type of epoch microseconds
    table_suffix: str  # table option: SQLite keeps rows in their primary key's B-tree

    def marks(self, count: int) -> str:
        return ", ".join([self.mark] * count)


# WITHOUT ROWID: one B-tree per table instead of a rowid tree plus a key index (a third less
# work per recorded task).
SQLITE: Final = Dialect("sqlite", "?", "min", "max", "INTEGER", " WITHOUT ROWID")
POSTGRES: Final = Dialect("postgresql", "%s", "LEAST", "GREATEST", "BIGINT", "")


def schema(d: Dialect) -> list[str]:
    """The statements creating the current tables (idempotent)."""
    i64 = d.int64
    return [
        f"""CREATE TABLE IF NOT EXISTS tasks (
    id              TEXT PRIMARY KEY,
    type            TEXT NOT NULL,
    status          TEXT NOT NULL,
    owner           TEXT,
    created_at      {i64} NOT NULL,    -- epoch microseconds, UTC
    updated_at      {i64} NOT NULL,
    expires_at      {i64},
    input           TEXT,              -- JSON object or NULL
    result          TEXT,
    message         TEXT,              -- NULL when the service sent "None" or ""
    input_image     TEXT,              -- derived from input: input.image_uuid
    container       TEXT,              -- derived from input
    result_image    TEXT,              -- derived from result: result.image_id
    export_location TEXT,              -- derived from result
    first_seen      {i64} NOT NULL,
    last_seen       {i64} NOT NULL,
    detail          INTEGER NOT NULL,  -- 1: input/result/message match the stored status
    region          TEXT,              -- where it was seen (NULL: unknown)
    account         TEXT,              -- the tenant it was seen through
    host            TEXT,              -- the service endpoint's host[:port]
    emulator        INTEGER            -- 1: the embedded emulator; NULL: unknown (older log)
){d.table_suffix}""",
        "CREATE INDEX IF NOT EXISTS tasks_created_at ON tasks (created_at)",
        f"""CREATE TABLE IF NOT EXISTS events (
    task_id    TEXT NOT NULL,
    status     TEXT NOT NULL,
    seen_at    {i64} NOT NULL,         -- first time this status was seen, epoch us UTC
    updated_at {i64} NOT NULL,         -- the task's updated_at when it was seen
    region     TEXT,
    account    TEXT,
    host       TEXT,
    emulator   INTEGER,
    PRIMARY KEY (task_id, status)
){d.table_suffix}""",
    ]


def upsert_task(d: Dialect, source: str | None = None) -> str:
    """The one statement that records a task, with the log's merge rules in SQL.

    ``source``: a query giving the rows (default: one row of parameters).

    ``n`` is the arriving copy (``excluded``), ``o`` the stored row:

    * the state (type, status, updated_at, expires_at) comes from whichever is newer by
      ``(updated_at, lifecycle rank)``; on a tie the arriving copy wins, so repeats are no-ops;
    * a stub never erases known input/result/message;
    * ``detail`` stays 1 only while the stored input/result/message belong to the stored
      status, so a later stub with a new status marks the row for re-fetching;
    * derived columns move with the JSON they come from (input_image/container with input,
      result_image/export_location with result);
    * ``first_seen`` is the earliest, ``last_seen`` the latest observation; the origin is the
      first one known.
    """
    def rank(side: str) -> str:
        return (f"(CASE {side}.status WHEN 'pending' THEN 0 WHEN 'processing' THEN 1 "
                f"ELSE 2 END)")

    n, o = "excluded", "tasks"
    wins = (f"({n}.updated_at > {o}.updated_at OR ({n}.updated_at = {o}.updated_at "
            f"AND {rank(n)} >= {rank(o)}))")
    same = f"{n}.status = {o}.status"
    late_detail = f"({o}.detail = 0 AND {n}.detail = 1 AND {same})"
    input_new = (f"(CASE WHEN {wins} THEN ({n}.detail = 1 AND {n}.input IS NOT NULL) "
                 f"ELSE ({late_detail} OR {o}.input IS NULL) END)")
    result_new = f"(CASE WHEN {wins} THEN {n}.detail = 1 ELSE {late_detail} END)"
    detail = (f"CASE WHEN {wins} THEN (CASE WHEN {n}.detail = 1 OR ({o}.detail = 1 AND {same}) "
              f"THEN 1 ELSE 0 END) ELSE (CASE WHEN {o}.detail = 1 OR {late_detail} THEN 1 "
              f"ELSE 0 END) END")

    def pick(column: str, cond: str) -> str:
        return f"{column} = CASE WHEN {cond} THEN {n}.{column} ELSE {o}.{column} END"

    sets = [
        pick("type", wins), pick("status", wins), pick("updated_at", wins),
        f"owner = CASE WHEN {wins} THEN coalesce({n}.owner, {o}.owner) "
        f"ELSE coalesce({o}.owner, {n}.owner) END",
        f"created_at = {d.least}({o}.created_at, {n}.created_at)",
        f"expires_at = CASE WHEN {wins} THEN coalesce({n}.expires_at, "
        f"CASE WHEN {same} THEN {o}.expires_at END) ELSE coalesce({o}.expires_at, "
        f"CASE WHEN {same} THEN {n}.expires_at END) END",
        *(pick(c, input_new) for c in ("input", "input_image", "container")),
        *(pick(c, result_new) for c in ("result", "message", "result_image", "export_location")),
        f"detail = {detail}",
        f"first_seen = {d.least}({o}.first_seen, {n}.first_seen)",
        f"last_seen = {d.greatest}({o}.last_seen, {n}.last_seen)",
        *(f"{c} = coalesce({o}.{c}, {n}.{c})" for c in ("region", "account", "host", "emulator")),
    ]
    rows = source if source is not None else f"VALUES ({d.marks(len(TASK_COLUMNS))})"
    return (f"INSERT INTO tasks ({', '.join(TASK_COLUMNS)}) {rows} "
            f"ON CONFLICT (id) DO UPDATE SET {', '.join(sets)}")


def upsert_event(d: Dialect, source: str | None = None) -> str:
    """One event per (task, status); from another machine's log the earliest sighting wins."""
    n, o = "excluded", "events"
    rows = source if source is not None else f"VALUES ({d.marks(len(EVENT_COLUMNS))})"
    return (f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) {rows} "
            f"ON CONFLICT (task_id, status) DO UPDATE SET "
            f"seen_at = {d.least}({o}.seen_at, {n}.seen_at), "
            f"updated_at = {d.least}({o}.updated_at, {n}.updated_at), "
            + ", ".join(f"{c} = coalesce({o}.{c}, {n}.{c})"
                        for c in ("region", "account", "host", "emulator"))
            + f" WHERE {n}.seen_at < {o}.seen_at OR {n}.updated_at < {o}.updated_at"
            f" OR ({o}.region IS NULL AND {n}.region IS NOT NULL)"
            f" OR ({o}.host IS NULL AND {n}.host IS NOT NULL)")


def column_types(d: Dialect, columns: Sequence[str]) -> list[str]:
    """Each column's SQL type (for typed arrays of a whole batch)."""
    ints = {"created_at", "updated_at", "expires_at", "first_seen", "last_seen", "seen_at"}
    return [d.int64 if c in ints else "INTEGER" if c in ("detail", "emulator") else "TEXT"
            for c in columns]


# -- rows ----------------------------------------------------------------------------------------

#: Null in int64 time columns (datetime64's NaT as an integer).
NAT_US: Final = -9223372036854775808

#: Columns of ``TaskLog.columns()``: text columns are object arrays (``None`` for null),
#: times int64 epoch microseconds (``NAT_US`` for null).
TEXT_COLUMNS: Final = ("id", "type", "status", "owner", "image_id", "container",
                       "export_location", "message", "region", "account")
TIME_COLUMNS: Final = ("created_at", "updated_at", "expires_at")


# Columns read fast travel as one string per chunk: values separated by "\x1e" (ASCII record
# separator) and NULL written as "\x1f" (unit separator; not NUL, which numpy strips); times as
# decimal text. Both backends build such strings in SQL (group_concat / string_agg).
NULL_MARK: Final = "\x1f"
SEPARATOR: Final = "\x1e"
#: Text columns with few distinct values: within a chunk, repeats share one string object, so
#: a million rows do not hold a million copies of "success" or of the region at once.
FEW_VALUES: Final = frozenset(("type", "status", "owner", "container", "message", "region",
                               "account"))


def split_chunk(count: int, row: Sequence[str]) -> dict[str, Any] | None:
    """One chunk's concatenated ``TEXT_COLUMNS + TIME_COLUMNS`` of ``count`` rows as arrays,
    or ``None`` if a value held a separator (the split count disagrees)."""
    import warnings

    import numpy as np

    out: dict[str, Any] = {}
    for at, name in enumerate(TEXT_COLUMNS):
        split = row[at].split(SEPARATOR)
        if len(split) != count:
            return None
        if name in FEW_VALUES:
            first: dict[str, str] = {}
            split = list(map(first.setdefault, split, split))
        values = np.fromiter(split, dtype=object, count=count)
        if NULL_MARK in row[at]:
            values[values == NULL_MARK] = None
        out[name] = values
    for at, name in enumerate(TIME_COLUMNS, len(TEXT_COLUMNS)):
        # numpy's C text parser; a short read (bad text) shows as a count mismatch.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            numbers = np.fromstring(row[at], dtype=np.int64, sep=",")
        if len(numbers) != count:
            return None
        out[name] = numbers
    return out


def plain_chunk(rows: Sequence[Sequence[Any]]) -> dict[str, Any]:
    """Rows of ``TEXT_COLUMNS + TIME_COLUMNS`` (times with ``NAT_US`` for null) as columns."""
    import numpy as np

    if not rows:
        return {}
    columns = list(zip(*rows, strict=True))
    out: dict[str, Any] = {name: np.array(columns[at], dtype=object)
                           for at, name in enumerate(TEXT_COLUMNS)}
    for at, name in enumerate(TIME_COLUMNS, len(TEXT_COLUMNS)):
        out[name] = np.array(columns[at], dtype=np.int64)
    return out


def join_columns(parts: Mapping[str, list[Any]]) -> dict[str, Any]:
    import numpy as np

    out: dict[str, Any] = {}
    for name, values in parts.items():
        dtype = np.int64 if name in TIME_COLUMNS else object
        if not values:
            out[name] = np.empty(0, dtype=dtype)
        else:
            out[name] = values[0] if len(values) == 1 else np.concatenate(values)
    return out


def dumps(value: Mapping[str, Any] | None) -> str | None:
    if value is None:
        return None
    return json.dumps(dict(value), sort_keys=True, separators=(",", ":"), default=str)


def loads(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    value = json.loads(text)
    return value if isinstance(value, dict) else None


def _origin(origin: Origin, owner: str | None) -> tuple[Any, ...]:
    # The task's owner is the tenant it ran in: the account when the client did not say.
    return (origin.region, origin.account if origin.account is not None else owner,
            origin.host, int(origin.emulator))


def task_row(task: Task, seen: int, origin: Origin) -> TaskRow:
    """A ``tasks`` row for ``task`` observed at ``seen`` (epoch us) through ``origin``."""
    if task.is_stub:
        inp = res = msg = None
    else:
        inp, res, msg = task.input, task.result, task.message
    return (task.id, task.type, task.status.value, task.owner, to_us(task.created_at),
            to_us(task.updated_at), None if task.expires_at is None else to_us(task.expires_at),
            dumps(inp), dumps(res), msg, fields.input_image(inp), fields.container(inp),
            fields.result_image(res), fields.export_location(res),
            seen, seen, 0 if task.is_stub else 1, *_origin(origin, task.owner))


def body_row(body: Any, seen: int, origin: Origin) -> TaskRow:
    """``task_row`` for a body as the service sent it; a list stub is read without building
    a ``Task`` (the fast path of big listings). A damaged body raises ``ResponseError``."""
    if not isinstance(body, Mapping) or "input" in body:
        return task_row(Task.from_json(body), seen, origin)
    try:
        task_id, task_type, status = body["id"], body["type"], body["status"]
        created, updated = time_us(body["created_at"]), time_us(body["updated_at"])
    except KeyError as missing:
        raise ResponseError(f"task is missing field: {missing}") from None
    if status not in RANK:
        raise ResponseError(f"unknown task status: {status!r}")
    if not isinstance(task_id, str) or not isinstance(task_type, str):
        raise ResponseError("task id and type must be strings")
    if created is None or updated is None:
        raise ResponseError("task has empty created_at/updated_at")
    owner = body.get("owner")
    owner = None if owner is None else str(owner)
    return (task_id, task_type, status, owner, created, updated,
            time_us(body.get("expires_at")), None, None, None, None, None, None, None,
            seen, seen, 0, *_origin(origin, owner))


#: What ``stub_rows`` reads: whole columns of a listing, times as int64 epoch us.
STUB_COLUMNS: Final = ("id", "type", "status", "owner", "created_at", "updated_at",
                       "expires_at")


def stub_rows(columns: Mapping[str, Any], seen: int, origin: Origin
              ) -> tuple[list[TaskRow], list[EventRow]]:
    """Rows and events for list stubs given as whole columns (``STUB_COLUMNS``; time columns
    int64 arrays or lists with ``NAT_US`` for null), assembled by ``zip`` in C rather than
    one Python object per field: the cheap path of a big listing, whose columns the frame
    builder has parsed already. Damage raises ``ResponseError``."""
    ids, types, statuses = (list(columns[c]) for c in ("id", "type", "status"))
    owners = [None if o is None else str(o) for o in columns["owner"]]
    created, updated, expires = (_ints(columns[c]) for c in
                                 ("created_at", "updated_at", "expires_at"))
    if not set(statuses) <= RANK.keys():
        raise ResponseError(f"unknown task status: {sorted(set(statuses) - RANK.keys())!r}")
    if not set(map(type, ids)) | set(map(type, types)) <= {str}:
        raise ResponseError("task id and type must be strings")
    if NAT_US in created or NAT_US in updated:
        raise ResponseError("task has empty created_at/updated_at")
    expires_or_null: list[int | None] = list(expires)
    if NAT_US in expires:
        expires_or_null = [None if e == NAT_US else e for e in expires]
    accounts: Sequence[Any] = owners if origin.account is None else [origin.account] * len(ids)
    region, host, emulator = origin.region, origin.host, int(origin.emulator)
    rows = list(zip(ids, types, statuses, owners, created, updated, expires_or_null,
                    *([repeat(None)] * 7), repeat(seen), repeat(seen), repeat(0),
                    repeat(region), accounts, repeat(host), repeat(emulator)))
    events = list(zip(ids, statuses, repeat(seen), updated, repeat(region), accounts,
                      repeat(host), repeat(emulator)))
    return rows, events


def _ints(values: Iterable[Any]) -> list[int]:
    tolist = getattr(values, "tolist", None)  # numpy: Python ints in one C call
    return list(tolist() if callable(tolist) else values)


def event_of(row: TaskRow) -> EventRow:
    """The event a freshly built row records: its status, first seen now."""
    return (row[0], row[2], row[14], row[5], row[17], row[18], row[19], row[20])


def row_to_task(row: TaskRow) -> Task:
    """A stored row (``TASK_COLUMNS`` order) as a ``Task``: a stub unless its detail is known."""
    from imgtools._models import TaskStatus, _frozen
    from imgtools._times import from_us

    detail = bool(row[16])
    return Task(
        id=row[0], type=row[1], status=TaskStatus(row[2]),
        created_at=from_us(row[4]), updated_at=from_us(row[5]), owner=row[3],
        expires_at=None if row[6] is None else from_us(row[6]),
        input=_frozen(loads(row[7])) if detail or row[7] else None,
        result=_frozen(loads(row[8])) if detail else None,
        message=row[9] if detail else None,
        is_stub=not detail,
    )

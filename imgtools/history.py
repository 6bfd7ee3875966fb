"""Task history as pandas tables: from the service, from the audit log, or both merged.

Every frame has the same columns and dtypes, also when empty (see ``COLUMNS``):

=================  =========================================================================
``id``             string (pandas ``str``)
``type``           categorical: ``export``, ``import`` (then any other type seen, sorted)
``status``         categorical in lifecycle order: ``pending``, ``processing``, ``success``,
                   ``failure``
``owner``          string (tenant id)
``created_at``     ``datetime64[us, UTC]``; ``updated_at`` and ``expires_at`` likewise
``duration``       ``timedelta64[us]``: ``updated_at - created_at`` for finished tasks, else NaT
``image_id``       export: ``input.image_uuid``; import: ``result.image_id``
``container``      export: ``input.receiving_swift_container``; import: the container of
                   ``input.import_from``
``export_location`` ``result.export_location`` (``<container>/<uuid>.vhd``)
``message``        string; null when the service sent ``"None"`` or ``""``
``source``         categorical: ``service`` (the service said so now) or ``log`` (only the
                   audit log still knows)
``region``         string: the region the task was seen in (null when unknown)
``account``        string: the account (tenant) it was seen through
=================  =========================================================================

Columns are built whole (lists, numpy, vectorised parsing), never row by row through pandas.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, cast

import numpy as np
import numpy.typing as npt
import pandas as pd

from imgtools import _taskfields as fields
from imgtools._models import Task
from imgtools._taskfields import Origin, origin_of
from imgtools._tasklog import TaskLog
from imgtools._times import EPOCH as _EPOCH_US
from imgtools._times import ONE_US as _ONE_US
from imgtools._times import parse_since

__all__ = [
    "COLUMNS",
    "DETAILS_CONCURRENCY",
    "SOURCE_CATEGORIES",
    "STATUS_CATEGORIES",
    "STATUS_STYLES",
    "SUMMARY_GROUPS",
    "TYPE_CATEGORIES",
    "UNKNOWN_GROUP",
    "Summary",
    "empty_frame",
    "events_frame",
    "filter_tasks",
    "format_duration",
    "log_frame",
    "merged",
    "parse_since",
    "style_tasks",
    "summary",
    "tasks_frame",
    "tasks_frame_async",
]

_logger = logging.getLogger("imgtools")

COLUMNS: Final = ("id", "type", "status", "owner", "created_at", "updated_at", "expires_at",
                  "duration", "image_id", "container", "export_location", "message", "source",
                  "region", "account")
TYPE_CATEGORIES: Final = ("export", "import")
STATUS_CATEGORIES: Final = ("pending", "processing", "success", "failure")
SOURCE_CATEGORIES: Final = ("service", "log")
#: Concurrent ``GET /v2/tasks/{id}`` requests when ``details=True``.
DETAILS_CONCURRENCY: Final = 8

# pandas' default string dtype (NaN for missing), so our frames match what users build.
_STR: Final = pd.StringDtype(na_value=np.nan)
_TIME: Final = pd.DatetimeTZDtype(unit="us", tz="UTC")
_NAT: Final = np.iinfo(np.int64).min  # datetime64's NaT, as an integer

_ObjArray = npt.NDArray[np.object_]
_IntArray = npt.NDArray[np.int64]


# -- building frames ---------------------------------------------------------------------------

def _categorical(values: Sequence[Any] | _ObjArray, fixed: Sequence[str]) -> Any:
    """A categorical with ``fixed`` categories first, so empty frames and ``value_counts``
    keep a stable shape; a value outside them is kept (appended, sorted), never turned null."""
    # Factorise once, then put the fixed categories first (a cheap recode of the codes).
    cat: Any = pd.Categorical(values)
    seen = [str(c) for c in cat.categories]
    unknown = sorted(c for c in seen if c not in fixed)
    cat = cat.set_categories([*fixed, *unknown])
    return cat


def _strings(values: Sequence[Any] | _ObjArray) -> pd.api.extensions.ExtensionArray:
    return pd.array(np.asarray(values, dtype=object), dtype=_STR)


def _times(micros: _IntArray) -> pd.DatetimeIndex:
    # int64 microseconds (NaT as int64 min) reinterpreted, not parsed.
    return pd.DatetimeIndex(micros.view("M8[us]")).tz_localize("UTC")


def _assemble(
    *, ids: Sequence[Any] | _ObjArray, types: Sequence[Any] | _ObjArray,
    statuses: Sequence[Any] | _ObjArray, owners: Sequence[Any] | _ObjArray,
    created: _IntArray, updated: _IntArray, expires: _IntArray,
    image_ids: Sequence[Any] | _ObjArray, containers: Sequence[Any] | _ObjArray,
    locations: Sequence[Any] | _ObjArray, messages: Sequence[Any] | _ObjArray,
    source: str | Sequence[str] | _ObjArray,
    regions: str | Sequence[Any] | _ObjArray | None = None,
    accounts: str | Sequence[Any] | _ObjArray | None = None,
) -> pd.DataFrame:
    """The standard frame from whole columns; times are int64 epoch microseconds."""
    status = _categorical(statuses, STATUS_CATEGORIES)
    finished = np.isin(status.codes, (2, 3))  # success, failure
    duration = np.where(finished & (updated != _NAT) & (created != _NAT),
                        updated - created, _NAT)
    message = _messages(np.asarray(messages, dtype=object))
    if isinstance(source, str):
        code = SOURCE_CATEGORIES.index(source)
        source_col = pd.Categorical.from_codes(np.full(len(ids), code, dtype=np.int8),
                                               categories=pd.Index(list(SOURCE_CATEGORIES)))
    else:
        source_col = _categorical(source, SOURCE_CATEGORIES)
    frame = pd.DataFrame({
        "id": _strings(ids),
        "type": _categorical(types, TYPE_CATEGORIES),
        "status": status,
        "owner": _strings(owners),
        "created_at": _times(created),
        "updated_at": _times(updated),
        "expires_at": _times(expires),
        "duration": pd.TimedeltaIndex(duration.view("m8[us]")),
        "image_id": _strings(image_ids),
        "container": _strings(containers),
        "export_location": _strings(locations),
        "message": _strings(message),
        "source": source_col,
        "region": _constant_or(regions, len(ids)),
        "account": _constant_or(accounts, len(ids)),
    }, copy=False)
    return frame


def _constant_or(values: str | Sequence[Any] | _ObjArray | None, count: int
                 ) -> pd.api.extensions.ExtensionArray:
    """A string column: ``values`` itself, or one value (``None``: null) repeated."""
    if values is None or isinstance(values, str):
        column = np.empty(count, dtype=object)
        column[:] = values
        return _strings(column)
    return _strings(values)


def empty_frame() -> pd.DataFrame:
    """A tasks frame with no rows and every column typed."""
    none: list[Any] = []
    no_times = np.empty(0, dtype=np.int64)
    return _assemble(ids=none, types=none, statuses=none, owners=none, created=no_times,
                     updated=no_times, expires=no_times, image_ids=none, containers=none,
                     locations=none, messages=none, source="service")


def _frame_from_tasks(tasks: Sequence[Task], source: str = "service",
                      origin: Origin | None = None) -> pd.DataFrame:
    """The standard frame from ``Task`` objects: one list comprehension per column."""
    n = len(tasks)
    epoch = _EPOCH_US
    return _assemble(
        ids=[t.id for t in tasks],
        types=[t.type for t in tasks],
        statuses=[t.status.value for t in tasks],
        owners=[t.owner for t in tasks],
        created=np.fromiter(((t.created_at - epoch) // _ONE_US for t in tasks), np.int64, n),
        updated=np.fromiter(((t.updated_at - epoch) // _ONE_US for t in tasks), np.int64, n),
        expires=np.fromiter((_NAT if t.expires_at is None else (t.expires_at - epoch) // _ONE_US
                             for t in tasks), np.int64, n),
        image_ids=[t.image_id for t in tasks],
        containers=[t.container for t in tasks],
        locations=[t.export_location for t in tasks],
        messages=[t.message for t in tasks],
        source=source,
        regions=None if origin is None else origin.region,
        accounts=_accounts(origin, [t.owner for t in tasks]),
    )


def _accounts(origin: Origin | None, owners: list[Any]) -> Sequence[Any] | str:
    """The account column: the client's tenant, else each task's owner (the tenant it ran
    in), as the log stores it."""
    if origin is not None and origin.account is not None:
        return origin.account
    return [None if o is None else str(o) for o in owners]


def _parse_iso(values: list[Any]) -> _IntArray:
    """ISO 8601 texts (the service's ``...Z`` form, or with offset/fraction) to int64 us;
    ``None`` to NaT. One vectorised parse."""
    if not values:
        return np.empty(0, dtype=np.int64)
    parsed = pd.to_datetime(np.asarray(values, dtype=object), utc=True, format="ISO8601")
    return np.asarray(parsed.as_unit("us").asi8, dtype=np.int64)


def _frame_from_items(items: Sequence[Mapping[str, Any]], source: str = "service",
                      origin: Origin | None = None, record_in: TaskLog | None = None,
                      seen_at: datetime | None = None) -> pd.DataFrame:
    """The standard frame straight from task bodies as the service sent them (list stubs or
    full bodies), without building ``Task`` objects: the fast path for big listings.

    ``record_in``: a log to record the bodies in too, on its writer thread, from the columns
    parsed here (so recording a listing costs no second parse)."""
    has_detail = any("input" in d or "result" in d for d in items)
    if has_detail:
        image_ids = [fields.image_id(d.get("input"), d.get("result")) for d in items]
        containers = [fields.container(d.get("input")) for d in items]
        locations = [fields.export_location(d.get("result")) for d in items]
        messages = [d.get("message") for d in items]
    else:
        image_ids = containers = locations = messages = [None] * len(items)
    owners = [None if d.get("owner") is None else str(d["owner"]) for d in items]
    ids = [d.get("id") for d in items]
    types = [d.get("type") for d in items]
    statuses = [d.get("status") for d in items]
    created = _parse_iso([d.get("created_at") for d in items])
    updated = _parse_iso([d.get("updated_at") for d in items])
    expires = _parse_iso([d.get("expires_at") for d in items])
    stubs = {"id": ids, "type": types, "status": statuses, "owner": owners,
             "created_at": created, "updated_at": updated, "expires_at": expires}
    frame = _assemble(
        ids=ids, types=types, statuses=statuses, owners=owners,
        created=created, updated=updated, expires=expires,
        image_ids=image_ids, containers=containers, locations=locations, messages=messages,
        source=source, regions=None if origin is None else origin.region,
        accounts=_accounts(origin, owners),
    )
    if record_in is not None and items:
        # Queued once the frame is built, so the writer does not compete with building it.
        if has_detail:
            record_in.record_bodies_later(items, seen_at=seen_at, origin=origin)
        else:
            record_in.record_stubs_later(stubs, seen_at=seen_at, origin=origin)
    return frame


def _shared(values: _ObjArray) -> _ObjArray:
    """The same strings, with repeats sharing one object: owner, container and message take
    a handful of values, and a million copies of each would cost ~60 MB per column."""
    if len(values) == 0:
        return values
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    table = np.empty(len(uniques) + 1, dtype=object)  # code -1 (null) -> the last slot, None
    table[:-1] = np.asarray(uniques, dtype=object)
    return cast(_ObjArray, table[codes])


def _messages(values: _ObjArray) -> _ObjArray:
    """Messages with the service's "None" / "" / blanks as null, repeats sharing one object.

    Failure messages repeat, so the check runs once per distinct text, not once per row."""
    if len(values) == 0:
        return values
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    table = np.empty(len(uniques) + 1, dtype=object)
    table[:-1] = [fields.message(u) for u in uniques]
    return cast(_ObjArray, table[codes])


def _chronological(created: _IntArray, ids: _ObjArray) -> Any:
    """Row order oldest ``created_at`` first, ties (whole-second stamps are common) by id,
    so two logs holding the same tasks give identical frames. ``slice(None)`` if in order."""
    order: Any = np.argsort(created, kind="stable")
    ranked = created[order]
    tied = np.zeros(len(order), dtype=bool)
    same = ranked[1:] == ranked[:-1]
    tied[1:] |= same
    tied[:-1] |= same
    if tied.any():
        # Re-sort only the tied rows by (created_at, id); their slots stay where they are.
        slots = np.flatnonzero(tied)
        sub = pd.DataFrame({"c": ranked[slots], "i": ids[order[slots]]})
        order[slots] = order[slots][sub.sort_values(["c", "i"], kind="stable").index]
    if bool((order[1:] > order[:-1]).all()):
        return slice(None)  # already in order: skip the copies
    return order


def _frame_from_log_columns(columns: Mapping[str, Any]) -> pd.DataFrame:
    """The standard frame from ``TaskLog.columns()``, oldest ``created_at`` first
    (ties by id)."""
    created = np.asarray(columns["created_at"], dtype=np.int64)
    order = _chronological(created, np.asarray(columns["id"], dtype=object))

    def text(name: str, share: bool = False) -> _ObjArray:
        values = np.asarray(columns[name], dtype=object)[order]
        return _shared(values) if share else values

    def ints(name: str) -> _IntArray:
        return cast(_IntArray, np.asarray(columns[name], dtype=np.int64)[order])

    return _assemble(ids=text("id"), types=text("type"), statuses=text("status"),
                     owners=text("owner", True), created=created[order],
                     updated=ints("updated_at"), expires=ints("expires_at"),
                     image_ids=text("image_id"), containers=text("container", True),
                     locations=text("export_location"), messages=text("message"),
                     source="log", regions=text("region", True),
                     accounts=text("account", True))


def log_frame(log: TaskLog, *, since: str | datetime | None = None,
              status: str | Iterable[str] | None = None,
              type: str | Iterable[str] | None = None,
              region: str | Iterable[str] | None = None,
              account: str | Iterable[str] | None = None,
              emulator: bool | None = None) -> pd.DataFrame:
    """The logged tasks as the standard tasks frame (``source`` = ``"log"``), oldest first.

    ``since``: tasks created at or after it (``"7d"``, ``"12h"``, a datetime...);
    ``status`` / ``type`` / ``region`` / ``account``: one value or several; ``emulator``: only
    tasks seen through the embedded emulator (true) or only others (false). The filters run in
    the database.
    """
    return _frame_from_log_columns(log.columns(since, status, type, region=region,
                                               account=account, emulator=emulator))


def events_frame(log: TaskLog, task_id: str | None = None) -> pd.DataFrame:
    """Status changes the log saw: ``task_id``, ``status`` (categorical), ``seen_at`` (first
    seen) and ``updated_at`` (the task's own time then), UTC; oldest first. (Where each was
    seen is in ``log.event_rows()``.)"""
    rows = log.event_rows(task_id)
    columns = list(zip(*rows, strict=True)) if rows else [()] * 4
    return pd.DataFrame({
        "task_id": _strings(list(columns[0])),
        "status": _categorical(list(columns[1]), STATUS_CATEGORIES),
        "seen_at": _times(np.array(columns[2], dtype=np.int64)),
        "updated_at": _times(np.array(columns[3], dtype=np.int64)),
    })


def _conform(frame: pd.DataFrame) -> pd.DataFrame:
    """Column order and dtypes of the standard frame, after concat/merge may have widened them."""
    out = frame.loc[:, list(COLUMNS)].copy()
    for column, fixed in (("type", TYPE_CATEGORIES), ("status", STATUS_CATEGORIES),
                          ("source", SOURCE_CATEGORIES)):
        if not isinstance(out[column].dtype, pd.CategoricalDtype) or \
                list(out[column].cat.categories[:len(fixed)]) != list(fixed):
            out[column] = _categorical(out[column].astype(object).to_numpy(), fixed)
    for column in ("id", "owner", "image_id", "container", "export_location", "message",
                   "region", "account"):
        if out[column].dtype != _STR:
            out[column] = out[column].astype(_STR)
    for column in ("created_at", "updated_at", "expires_at"):
        if out[column].dtype != _TIME:
            out[column] = pd.to_datetime(out[column], utc=True).dt.as_unit("us")
    if out["duration"].dtype != np.dtype("m8[us]"):
        out["duration"] = pd.to_timedelta(out["duration"]).dt.as_unit("us")
    return out.reset_index(drop=True)


# -- sources -----------------------------------------------------------------------------------

def _is_client(source: object) -> bool:
    return callable(getattr(source, "tasks", None)) and callable(getattr(source, "get_task", None))


def _is_async(client: object) -> bool:
    return inspect.iscoroutinefunction(getattr(client, "get_task", None))


def _page_source(client: Any) -> Callable[[], Any] | None:
    pages = getattr(client, "iter_task_pages", None)
    return pages if callable(pages) else None


def _service_items(client: Any) -> list[Mapping[str, Any]] | list[Task]:
    """Every task the service lists: raw bodies when the client offers ``iter_task_pages()``
    (no ``Task`` objects: the fast path; the caller records them), else ``Task`` objects
    from ``tasks()`` (such a client records what it lists itself)."""
    pages = _page_source(client)
    if pages is None:
        return list(client.tasks())
    items: list[Mapping[str, Any]] = []
    for page in pages():
        items.extend(page)
    return items


def _framed(client: Any, items: list[Any], record: bool) -> pd.DataFrame:
    """The frame of a listing, recorded in the client's log unless ``record`` is false."""
    origin = origin_of(client)
    if items and not isinstance(items[0], Task):
        log = _client_log(client) if record else None
        return _frame_from_items(items, origin=origin, record_in=log,
                                 seen_at=datetime.now(UTC))
    return _frame_from_tasks(items, origin=origin)


def _record_listing(client: Any, items: list[Any], record: bool) -> None:
    """Record raw listed bodies (the ``details=True`` path, which frames them itself)."""
    log = _client_log(client) if record else None
    if log is not None and items and not isinstance(items[0], Task):
        log.record_bodies_later(items, origin=origin_of(client))


async def _collect_async(client: Any) -> list[Any]:
    pages = _page_source(client)
    if pages is None:
        return [task async for task in client.tasks()]
    raw: list[Any] = []
    async for page in pages():
        raw.extend(page)
    return raw


def _run(coroutine: Awaitable[Any]) -> Any:
    """Run a coroutine to completion from sync code, also inside a running loop (Jupyter):
    then it runs on a private loop in a worker thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(cast(Any, coroutine))
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(cast(Any, coroutine))
        except BaseException as error:  # re-raised in the caller's thread
            box["error"] = error

    worker = threading.Thread(target=target, name="imgtools-history")
    worker.start()
    worker.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _client_log(client: Any) -> TaskLog | None:
    log = getattr(client, "log", None)
    return log if isinstance(log, TaskLog) else None


async def _fetch_details(client: Any, ids: Sequence[str], concurrency: int) -> list[Task]:
    """``GET /v2/tasks/{id}`` for each id, at most ``concurrency`` at a time; a task the
    service has purged meanwhile (404) is skipped."""
    from imgtools._exceptions import NotFound

    limit = asyncio.Semaphore(max(1, concurrency))
    getter: Callable[[str], Any] = client.get_task
    asynchronous = _is_async(client)

    async def one(task_id: str) -> Task | None:
        async with limit:
            try:
                if asynchronous:
                    return cast(Task, await getter(task_id))
                # A sync client (httpx.Client is thread-safe): the semaphore bounds the threads.
                return cast(Task, await asyncio.to_thread(getter, task_id))
            except NotFound:
                return None

    found = await asyncio.gather(*(one(task_id) for task_id in ids))
    return [task for task in found if task is not None]


def _with_details(client: Any, items: list[Any], concurrency: int) -> pd.DataFrame:
    """Fill stubs: from the log when it holds the task in full, else from the service."""
    if items and isinstance(items[0], Task):
        tasks: list[Task] = list(items)
    else:
        tasks = [Task.from_json(item) for item in items]
    stubs = [t.id for t in tasks if t.is_stub]
    log = _client_log(client)
    known: dict[str, Task] = {}
    if log is not None and stubs:
        for task_id in log.complete_ids(stubs):
            logged = log.get(task_id)
            if logged is not None:
                known[task_id] = logged
    missing = [task_id for task_id in stubs if task_id not in known]
    if missing:
        fetched = _run(_fetch_details(client, missing, concurrency))
        known.update((task.id, task) for task in fetched)
        if log is not None and fetched and not getattr(client, "records_gets", False):
            # idempotent: harmless if the client recorded them already
            log.record(fetched, origin=origin_of(client))
    return _frame_from_tasks([_prefer(task, known.get(task.id)) for task in tasks],
                             origin=origin_of(client))


def _prefer(listed: Task, full: Task | None) -> Task:
    """The listed task with the detail of ``full`` where that belongs to the same state.

    Never goes backwards: a detail copy older than the listing is used only if its status is
    the same (list and detail views may round a timestamp differently), and then the
    listing's times win."""
    if full is None or full.updated_at >= listed.updated_at:
        return full if full is not None else listed
    if full.status != listed.status:
        return listed
    return dataclasses.replace(full, updated_at=listed.updated_at,
                               expires_at=listed.expires_at or full.expires_at)


def tasks_frame(source: Any, *, details: bool = False, record: bool = True,
                concurrency: int = DETAILS_CONCURRENCY,
                region: str | Iterable[str] | None = None,
                account: str | Iterable[str] | None = None) -> pd.DataFrame:
    """Tasks as a typed DataFrame (columns in the module docstring, also when empty).

    ``source``: a ``Client`` / ``AsyncClient`` (every page of ``GET /v2/tasks``;
    ``source="service"``), a ``TaskLog`` (``source="log"``) or an iterable of ``Task``.
    ``details=True`` (clients only) fills each stub's input/result/message: from the client's
    log when it holds the task in full, else by ``GET /v2/tasks/{id}``, ``concurrency`` at a
    time (default ``DETAILS_CONCURRENCY``). ``record`` (default true): what the listing shows
    goes into the client's audit log too (a worker thread writes while pages arrive).
    ``region`` / ``account``: keep only tasks seen there (one value or several).
    """
    frame = _tasks_frame(source, details=details, record=record, concurrency=concurrency)
    if region is None and account is None:
        return frame
    return filter_tasks(frame, region=region, account=account)


def _tasks_frame(source: Any, *, details: bool, record: bool, concurrency: int
                 ) -> pd.DataFrame:
    from imgtools._exceptions import ValidationError

    if isinstance(source, TaskLog):
        if details:
            raise ValidationError("details=True needs a client; a TaskLog already holds "
                                  "every detail it has seen", field="details")
        return log_frame(source)
    if _is_client(source):
        if _is_async(source):
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                pass
            else:
                # Its connections belong to this loop; driving them from another would break.
                raise ValidationError(
                    "tasks_frame: an AsyncClient inside a running event loop (a notebook): "
                    "use `await imgtools.history.tasks_frame_async(client)`", field="source")
            return asyncio.run(tasks_frame_async(
                source, details=details, record=record, concurrency=concurrency))
        items = _service_items(source)
        if details:
            _record_listing(source, items, record)
            return _with_details(source, items, concurrency)
        return _framed(source, items, record)
    if details:
        raise ValidationError("details=True needs a client to fetch from", field="details")
    if isinstance(source, (str, bytes, Mapping)) or not isinstance(source, Iterable):
        raise ValidationError(
            f"tasks_frame: expected a Client, AsyncClient, TaskLog or iterable of Task, "
            f"got {type(source).__name__}", field="source")
    tasks = list(source)
    bad = next((t for t in tasks if not isinstance(t, Task)), None)
    if bad is not None:
        raise ValidationError(f"tasks_frame: expected Task items, got {type(bad).__name__}",
                              field="source")
    return _frame_from_tasks(tasks)


async def tasks_frame_async(client: Any, *, details: bool = False, record: bool = True,
                            concurrency: int = DETAILS_CONCURRENCY) -> pd.DataFrame:
    """``tasks_frame`` for an ``AsyncClient`` inside a running event loop (notebooks)."""
    items = await _collect_async(client)
    origin = origin_of(client)
    if not details:
        return _framed(client, items, record)
    _record_listing(client, items, record)
    tasks = [t if isinstance(t, Task) else Task.from_json(t) for t in items]
    stubs = [t.id for t in tasks if t.is_stub]
    log = _client_log(client)
    known = {}
    if log is not None and stubs:
        known = {tid: t for tid in log.complete_ids(stubs) if (t := log.get(tid)) is not None}
    fetched = await _fetch_details(client, [tid for tid in stubs if tid not in known],
                                   concurrency)
    if log is not None and fetched:
        log.record(fetched, origin=origin)
    known.update((t.id, t) for t in fetched)
    return _frame_from_tasks([_prefer(t, known.get(t.id)) for t in tasks], origin=origin)


def merged(client: Any, log: TaskLog | None = None, *,
           region: str | Iterable[str] | None = None,
           account: str | Iterable[str] | None = None) -> pd.DataFrame:
    """Service tasks and logged tasks in one frame, one row per task id, oldest first.

    A task the service still lists keeps its current state (``source="service"``) with
    image/container/location/message filled from the log where the service gave only a stub;
    a task the service has purged comes from the log (``source="log"``). ``log`` defaults to
    the client's log, else ``TaskLog.default()``. ``region`` / ``account``: keep only tasks
    seen there.
    """
    if log is None:
        log = _client_log(client) or TaskLog.default()
    service = tasks_frame(client).set_index("id")
    logged = log_frame(log).set_index("id")
    filled = logged.reindex(service.index)
    for column in ("owner", "expires_at", "image_id", "container", "export_location", "message",
                   "region", "account"):
        service[column] = service[column].fillna(filled[column])
    only_logged = logged.loc[logged.index.difference(service.index)]
    both = pd.concat([service, only_logged]) if len(only_logged) else service
    both = both.reset_index().rename(columns={"index": "id"})
    frame = _conform(both.sort_values(["created_at", "id"], kind="stable"))
    if region is None and account is None:
        return frame
    return filter_tasks(frame, region=region, account=account)


def filter_tasks(frame: pd.DataFrame, *, since: str | datetime | None = None,
                 status: str | Iterable[str] | None = None,
                 type: str | Iterable[str] | None = None,
                 region: str | Iterable[str] | None = None,
                 account: str | Iterable[str] | None = None) -> pd.DataFrame:
    """Rows of a tasks frame created at/after ``since`` (``"7d"``, ``"12h"``, ISO...), with
    one of the given statuses, types, regions and accounts; for the CLI's ``--since``,
    ``--status``, ``--type``, ``--region`` and ``--account``."""
    mask = np.ones(len(frame), dtype=bool)
    start = parse_since(since)
    if start is not None:
        mask &= (frame["created_at"] >= pd.Timestamp(start)).to_numpy()
    for column, wanted in (("status", status), ("type", type), ("region", region),
                           ("account", account)):
        if wanted is not None:
            values = [wanted] if isinstance(wanted, str) else list(wanted)
            mask &= frame[column].isin(values).to_numpy()
    return frame.loc[mask].reset_index(drop=True)


# -- presentation ------------------------------------------------------------------------------

#: Background / text colours per status (readable on light and dark notebook themes).
STATUS_STYLES: Final = {
    "pending": "background-color: #e5e7eb; color: #111827",
    "processing": "background-color: #dbeafe; color: #1e3a8a",
    "success": "background-color: #dcfce7; color: #14532d",
    "failure": "background-color: #fee2e2; color: #7f1d1d; font-weight: bold",
}


def format_duration(value: Any) -> str:
    """``timedelta`` as ``"1 h 02 min"``, ``"15 min 37 s"`` or ``"42 s"``; empty for NaT."""
    if value is None or pd.isna(value):
        return ""
    seconds = int(pd.Timedelta(value).total_seconds())
    sign, seconds = ("-" if seconds < 0 else ""), abs(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{sign}{days} d {hours:02d} h"
    if hours:
        return f"{sign}{hours} h {minutes:02d} min"
    if minutes:
        return f"{sign}{minutes} min {secs:02d} s"
    return f"{sign}{secs} s"


def _format_time(value: Any) -> str:
    return "" if value is None or pd.isna(value) else pd.Timestamp(value).strftime(
        "%Y-%m-%d %H:%M:%S")


def style_tasks(frame: pd.DataFrame) -> Any:
    """A pandas ``Styler`` for a tasks frame: status colours, readable durations, UTC times
    to the second, empty cells for nulls, no index, and a fixed table uuid so notebook
    outputs stay the same from run to run."""
    def status_css(value: Any) -> str:
        return STATUS_STYLES.get(str(value), "")

    time_columns = [c for c in ("created_at", "updated_at", "expires_at") if c in frame]
    styler = frame.style.set_uuid("imgtools-tasks").hide(axis="index")
    if "status" in frame:
        styler = styler.map(status_css, subset=["status"])
    formats: dict[Any, str | Callable[[object], str] | None] = {
        c: _format_time for c in time_columns}
    if "duration" in frame:
        formats["duration"] = format_duration
    return styler.format(formats, na_rep="")


# -- summaries ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Summary:
    """Audit tables from a tasks frame; each is a small DataFrame.

    ``counts``: tasks per type (rows) and status (columns), with totals.
    ``success_rate``: per type, finished / succeeded / failed and ``success_rate`` (0..1,
    succeeded / finished; NaN when nothing finished).
    ``durations``: per type, ``p50`` / ``p90`` / ``max`` of finished tasks' durations.
    ``failures``: failed tasks grouped by type and message: ``count``, ``first``, ``last``.
    ``per_day``: tasks created per UTC day, by status, with a total.
    """

    counts: pd.DataFrame
    success_rate: pd.DataFrame
    durations: pd.DataFrame
    failures: pd.DataFrame
    per_day: pd.DataFrame
    tables: dict[str, pd.DataFrame] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tables", {
            "counts": self.counts, "success_rate": self.success_rate,
            "durations": self.durations, "failures": self.failures, "per_day": self.per_day})


#: Columns a summary can group by (``summary(frame, by=...)``).
SUMMARY_GROUPS: Final = ("type", "region", "account")
#: The group of tasks whose region or account is not known.
UNKNOWN_GROUP: Final = "(unknown)"


def _group_key(frame: pd.DataFrame, by: str) -> pd.Series:
    if by == "type":
        return frame["type"]
    values = frame[by].astype(object).where(frame[by].notna(), UNKNOWN_GROUP)
    return pd.Series(pd.Categorical(values, categories=sorted(set(values))), index=frame.index,
                     name=by)


def summary(frame: pd.DataFrame, *, by: str = "type") -> Summary:
    """The audit summary of a tasks frame (from ``tasks_frame``, ``merged`` or a log).

    ``by``: what the rows of ``counts``, ``success_rate``, ``durations`` and ``failures``
    are: ``"type"`` (default), ``"region"`` or ``"account"`` (unknown ones grouped as
    ``UNKNOWN_GROUP``)."""
    if by not in SUMMARY_GROUPS:
        from imgtools._exceptions import ValidationError

        raise ValidationError(f"summary: by must be one of {', '.join(SUMMARY_GROUPS)}, "
                              f"not {by!r}", field="by")
    frame = _conform(frame) if len(frame) else empty_frame()
    keys = _group_key(frame, by)
    counts = pd.crosstab(keys, frame["status"], dropna=False)
    counts = counts.reindex(index=keys.cat.categories, columns=frame["status"].cat.categories,
                            fill_value=0)
    counts["total"] = counts.sum(axis=1)
    counts.loc["total"] = counts.sum(axis=0)
    counts.index.name, counts.columns.name = by, "status"

    success = (frame["status"] == "success").groupby(keys, observed=False).sum()
    failure = (frame["status"] == "failure").groupby(keys, observed=False).sum()
    finished = success + failure
    rate = pd.DataFrame({"finished": finished, "succeeded": success, "failed": failure})
    rate.loc["all"] = rate.sum(axis=0)
    rate = rate.astype("int64")
    rate["success_rate"] = (rate["succeeded"] / rate["finished"].where(rate["finished"] > 0))
    rate.index.name = by

    finished_rows = frame["duration"].notna()
    done = pd.DataFrame({"key": keys[finished_rows], "duration": frame.loc[finished_rows,
                                                                          "duration"]})
    groups = [(str(k), done.loc[done["key"] == k, "duration"])
              for k in keys.cat.categories] + [("all", done["duration"])]
    durations = pd.DataFrame({
        "count": pd.array([len(v) for _, v in groups], dtype="int64"),
        **{name: pd.to_timedelta([v.quantile(q) if len(v) else pd.NaT for _, v in groups])
           .as_unit("us") for name, q in (("p50", 0.5), ("p90", 0.9), ("max", 1.0))},
    }, index=pd.Index([name for name, _ in groups]))
    durations.index.name = by

    failing = frame["status"] == "failure"
    failed = pd.DataFrame({by: keys[failing], "message": frame.loc[failing, "message"],
                           "created_at": frame.loc[failing, "created_at"]})
    failed["message"] = failed["message"].fillna("(no message)")
    failures = (failed.groupby([by, "message"], observed=True)["created_at"]
                .agg(count="count", first="min", last="max").reset_index()
                .sort_values(["count", "last"], ascending=[False, False], kind="stable")
                .reset_index(drop=True))
    failures["count"] = failures["count"].astype("int64")

    day = frame["created_at"].dt.floor("D").dt.tz_localize(None).dt.date
    per_day = pd.crosstab(day, frame["status"], dropna=False) if len(frame) else \
        pd.DataFrame(columns=list(frame["status"].cat.categories), dtype="int64")
    per_day = per_day.reindex(columns=frame["status"].cat.categories, fill_value=0)
    per_day["total"] = per_day.sum(axis=1)
    per_day.index.name, per_day.columns.name = "day", "status"
    return Summary(counts=counts, success_rate=rate, durations=durations, failures=failures,
                   per_day=per_day.astype("int64"))

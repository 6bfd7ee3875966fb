"""Task history as pandas tables: from the service, from the audit log, or both merged.

Every frame has the same columns and dtypes, also when empty: ``COLUMNS``, described in
``imgtools._frames`` (which builds them for this module and for ``details``). Columns are built
whole (lists, numpy, vectorised parsing), never row by row through pandas.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, cast

import numpy as np
import pandas as pd

from imgtools._frames import (
    COLUMNS,
    SOURCE_CATEGORIES,
    STATUS_CATEGORIES,
    TYPE_CATEGORIES,
    ListedPage,
    _categorical,
    _conform,
    _frame_from_log_columns,
    _frame_from_pages,
    _frame_from_tasks,
    _strings,
    _times,
    decode_stub_page,
    empty_frame,
    listed_page,
)
from imgtools._models import Task
from imgtools._sources import AsyncTaskSource, TaskSource
from imgtools._syncrun import loop_running, run_to_end
from imgtools._taskfields import origin_of
from imgtools._tasklog import TaskLog
from imgtools._times import parse_since
from imgtools.details import DETAILS_CONCURRENCY, check_details, fetch_details, has_details
from imgtools.failures import failure_table

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


# -- frames from the log ------------------------------------------------------------------------

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


# -- sources -----------------------------------------------------------------------------------

def _is_client(source: object) -> bool:
    return callable(getattr(source, "tasks", None)) and callable(getattr(source, "get_task", None))


def _is_async(client: object) -> bool:
    return inspect.iscoroutinefunction(getattr(client, "get_task", None))


def _page_source(client: Any) -> Callable[[], Any] | None:
    pages = getattr(client, "iter_task_pages", None)
    return pages if callable(pages) else None


def _shaped_source(client: Any) -> Callable[..., Any] | None:
    shaped = getattr(client, "_shaped_task_pages", None)
    return shaped if callable(shaped) else None


def _service_items(client: Any, *, keep: bool = False) -> list[ListedPage] | list[Task]:
    """Every task the service lists: listed pages (raw bodies and their columns, taken by
    an imgtools client while the next page is on its way) when the client lists raw pages
    (no ``Task`` objects: the fast path; the caller records them), else ``Task`` objects
    from ``tasks()`` (such a client records what it lists itself). ``keep``: keep the list
    stubs' bodies too (the frame alone needs only their columns)."""
    shape = functools.partial(listed_page, keep=keep)
    shaped = _shaped_source(client)
    if shaped is not None:
        return list(shaped(shape, None if keep else decode_stub_page))
    pages = _page_source(client)
    if pages is None:
        return list(client.tasks())
    return [shape(page) for page in pages()]


def _bodies(items: list[Any]) -> list[Any]:
    """Listed pages as their bodies, one list; ``Task`` objects as they are."""
    if items and isinstance(items[0], ListedPage):
        return [body for page in items for body in page.items]
    return items


def _framed(client: Any, items: list[Any], record: bool) -> pd.DataFrame:
    """The frame of a listing, recorded in the client's log unless ``record`` is false."""
    origin = origin_of(client)
    if items and isinstance(items[0], ListedPage):
        log = _client_log(client) if record else None
        return _frame_from_pages(items, origin=origin, record_in=log,
                                 seen_at=datetime.now(UTC))
    return _frame_from_tasks(items, origin=origin)


def _record_listing(client: Any, items: list[Any], record: bool) -> None:
    """Record raw listed bodies (the ``details=True`` path, which frames them itself)."""
    log = _client_log(client) if record else None
    if log is not None and items and not isinstance(items[0], Task):
        log.record_bodies_later(items, origin=origin_of(client))


async def _collect_async(client: Any, *, keep: bool = False) -> list[Any]:
    shape = functools.partial(listed_page, keep=keep)
    shaped = _shaped_source(client)
    if shaped is not None:
        return [page async for page in shaped(shape, None if keep else decode_stub_page)]
    pages = _page_source(client)
    if pages is None:
        return [task async for task in client.tasks()]
    return [shape(page) async for page in pages()]


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
        fetched = run_to_end(_fetch_details(client, missing, concurrency),
                             thread_name="imgtools-history")
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


def tasks_frame(source: TaskSource | AsyncTaskSource | TaskLog | Iterable[Task], *,
                details: bool | str = False, record: bool = True,
                concurrency: int = DETAILS_CONCURRENCY,
                region: str | Iterable[str] | None = None,
                account: str | Iterable[str] | None = None) -> pd.DataFrame:
    """Tasks as a typed DataFrame (columns in the module docstring, also when empty).

    ``source``: a ``Client`` / ``AsyncClient`` (every page of ``GET /v2/tasks``;
    ``source="service"``), a ``TaskLog`` (``source="log"``) or an iterable of ``Task``.
    ``details=True`` (clients only) fills each stub's input/result/message: from the client's
    log when it holds the task in full, else by ``GET /v2/tasks/{id}``, ``concurrency`` at a
    time (default ``DETAILS_CONCURRENCY``); also ``details="failures"`` (failures only) or
    ``"all"`` (every task again), see ``imgtools.details``. ``record`` (default true): what the
    listing shows goes into the client's audit log too (a worker thread writes while pages
    arrive). ``region`` / ``account``: keep only tasks seen there (one value or several).
    """
    frame = _tasks_frame(source, details=details, record=record, concurrency=concurrency)
    if region is None and account is None:
        return frame
    return filter_tasks(frame, region=region, account=account)


def _tasks_frame(source: Any, *, details: bool | str, record: bool, concurrency: int
                 ) -> pd.DataFrame:
    from imgtools._exceptions import ValidationError

    mode = check_details(details)
    if mode in ("failures", "all") and _is_client(source):
        listed = tasks_frame(source, record=record)
        return fetch_details(listed, source, details=mode, concurrency=concurrency).frame
    details = mode == "missing"

    if isinstance(source, TaskLog):
        if details:
            raise ValidationError("details=True needs a client; a TaskLog already holds "
                                  "every detail it has seen", field="details")
        return log_frame(source)
    if _is_client(source):
        if _is_async(source):
            if loop_running():
                # Its connections belong to this loop; driving them from another would break.
                raise ValidationError(
                    "tasks_frame: an AsyncClient inside a running event loop (a notebook): "
                    "use `await imgtools.history.tasks_frame_async(client)`", field="source")
            return asyncio.run(tasks_frame_async(
                cast(AsyncTaskSource, source), details=details, record=record,
                concurrency=concurrency))
        items = _service_items(source, keep=details)
        if details:
            bodies = _bodies(items)
            _record_listing(source, bodies, record)
            return _with_details(source, bodies, concurrency)
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


async def tasks_frame_async(client: AsyncTaskSource, *, details: bool = False, record: bool = True,
                            concurrency: int = DETAILS_CONCURRENCY) -> pd.DataFrame:
    """``tasks_frame`` for an ``AsyncClient`` inside a running event loop (notebooks)."""
    items = await _collect_async(client, keep=details)
    origin = origin_of(client)
    if not details:
        return _framed(client, items, record)
    items = _bodies(items)
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


def merged(client: TaskSource | AsyncTaskSource, log: TaskLog | None = None, *,
           details: str = "none", concurrency: int = DETAILS_CONCURRENCY,
           progress: Any = None, region: str | Iterable[str] | None = None,
           account: str | Iterable[str] | None = None) -> pd.DataFrame:
    """Service tasks and logged tasks in one frame, one row per task id, oldest first.

    A task the service still lists keeps its current state (``source="service"``) with
    image/container/location/message filled from the log where the service gave only a stub;
    a task the service has purged comes from the log (``source="log"``). ``log`` defaults to
    the client's log, else ``TaskLog.default()``. ``region`` / ``account``: keep only tasks
    seen there. ``details`` (``"missing"``, ``"failures"``, ``"all"``, default ``"none"``),
    ``concurrency`` and ``progress``: see ``imgtools.details.fetch_details``, run on the
    tasks in view (after the region/account filter).
    """
    mode = check_details(details)
    if log is None:
        # Not `or`: an empty TaskLog is falsy (len 0), and the default log is another log.
        log = _client_log(client)
        log = log if log is not None else TaskLog.default()
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
    if region is not None or account is not None:
        frame = filter_tasks(frame, region=region, account=account)
    if mode == "none":
        return frame
    return fetch_details(frame, client, log, details=mode, concurrency=concurrency,
                         progress=progress).frame


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
    ``failures``: failed tasks grouped by type and category (``failures.py``): ``count``,
    ``first``, ``last``, ``messages`` (raw wordings) and the most frequent raw ``message``.
    ``per_day``: tasks created per UTC day, by status, with a total.
    ``without_details``: tasks with no details anywhere (purged, never seen in full here);
    ``not_fetched``: tasks the service lists whose details were not fetched.
    """

    counts: pd.DataFrame
    success_rate: pd.DataFrame
    durations: pd.DataFrame
    failures: pd.DataFrame
    per_day: pd.DataFrame
    without_details: int = 0
    not_fetched: int = 0
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

    failures = failure_table(frame, by=by, keys=keys)
    known = has_details(frame)
    listed = (frame["source"] == "service").to_numpy()

    day = frame["created_at"].dt.floor("D").dt.tz_localize(None).dt.date
    per_day = pd.crosstab(day, frame["status"], dropna=False) if len(frame) else \
        pd.DataFrame(columns=list(frame["status"].cat.categories), dtype="int64")
    per_day = per_day.reindex(columns=frame["status"].cat.categories, fill_value=0)
    per_day["total"] = per_day.sum(axis=1)
    per_day.index.name, per_day.columns.name = "day", "status"
    return Summary(counts=counts, success_rate=rate, durations=durations, failures=failures,
                   per_day=per_day.astype("int64"),
                   without_details=int((~known & ~listed).sum()),
                   not_fetched=int((~known & listed).sum()))

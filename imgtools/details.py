"""Task details where the audit needs them: ``GET /v2/tasks/{id}`` for the tasks in view that
the service lists only as stubs and the audit log does not hold in full.

The service lists tasks without ``input``, ``result`` or ``message``; those come only from the
detail call. ``fetch_details`` fills a tasks frame (from ``tasks_frame``, ``merged`` or
``filter_tasks``) before its tables are made: first from the log, then from the service, a
bounded number of requests at a time, with a progress bar. Every task fetched goes into the
audit log, so a second run fetches nothing. A task the service no longer lists cannot be
fetched: what the log holds is all there is, and ``Details.without_details`` counts the tasks
in view with no details anywhere (purged from the service and never seen in full here).

Modes (``details=``): ``"missing"`` (default) every task in view the log does not hold in
full; ``"failures"`` only failures (the least an audit needs, for big views); ``"all"``
every task in view the service lists, again (the log's copy may be older); ``"none"``
nothing.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

import numpy as np
import numpy.typing as npt
import pandas as pd

from imgtools._exceptions import NotFound, ValidationError
from imgtools._frames import _frame_from_tasks
from imgtools._models import Task
from imgtools._syncrun import loop_running, run_to_end
from imgtools._tasklog import TaskLog

__all__ = [
    "DEFAULT_DETAILS",
    "DETAILS_CONCURRENCY",
    "DETAILS_MODES",
    "Details",
    "DetailsMode",
    "check_details",
    "fetch_details",
    "fetch_details_async",
    "fill_rows",
    "has_details",
]

DetailsMode = Literal["missing", "failures", "all", "none"]
DETAILS_MODES: Final = ("missing", "failures", "all", "none")
#: What the audit fetches when not told otherwise: every task in view it lacks.
DEFAULT_DETAILS: Final = "missing"
#: ``GET /v2/tasks/{id}`` requests in flight at once.
DETAILS_CONCURRENCY: Final = 8
#: Columns only a task's details carry; all null means "a stub".
DETAIL_COLUMNS: Final = ("image_id", "container", "export_location", "message")
#: Columns a fetched task may bring up to date (with its details).
_REFRESHED: Final = ("status", "owner", "updated_at", "expires_at", "duration",
                     *DETAIL_COLUMNS)

#: ``progress``: a callback ``(done, total)``, ``True`` for a tqdm bar, or ``None``.
Progress = Callable[[int, int], Any] | bool | None


@dataclass(frozen=True)
class Details:
    """The frame with details filled in, and what it took.

    ``fetched``: tasks read from the service now; ``purged``: tasks it no longer had when
    asked (404); ``from_log``: rows filled from the audit log; ``without_details``: tasks in
    view with no details anywhere (the service purged them and this machine never saw them in
    full); ``not_fetched``: tasks the service still lists whose details were not asked for
    (``details="none"`` / ``"failures"``).
    """

    frame: pd.DataFrame
    mode: str
    fetched: int
    purged: int
    from_log: int
    without_details: int
    not_fetched: int

    def __str__(self) -> str:
        parts = [f"details: {self.fetched} task(s) fetched from the service",
                 f"{self.from_log} filled from the audit log"]
        if self.purged:
            parts.append(f"{self.purged} purged meanwhile")
        if self.not_fetched:
            parts.append(f"{self.not_fetched} listed but not fetched (details={self.mode!r})")
        parts.append(f"{self.without_details} with no details anywhere (purged from the "
                     "service, never seen in full here)")
        return "; ".join(parts)


def has_details(frame: pd.DataFrame) -> npt.NDArray[np.bool_]:
    """Per row: does the frame hold the task's details (input, result or message)?

    Every export names its container in its input and every import its object, so a task
    seen in full always has ``container``; a stub has none of the detail columns."""
    known = np.zeros(len(frame), dtype=bool)
    for column in DETAIL_COLUMNS:
        if column in frame:
            known |= frame[column].notna().to_numpy()
    return known


def check_details(details: object) -> DetailsMode:
    """``details`` as a mode (``True`` / ``False`` stand for ``"missing"`` / ``"none"``);
    ``ValidationError`` for anything else, before any request."""
    if details is True or details is False:
        return "missing" if details else "none"
    if not isinstance(details, str) or details not in DETAILS_MODES:
        raise ValidationError(f"details must be one of {', '.join(DETAILS_MODES)}, not "
                              f"{details!r}", field="details")
    return cast(DetailsMode, details)


def _client_log(client: Any, log: TaskLog | None) -> TaskLog | None:
    if log is not None:
        return log
    found = getattr(client, "log", None)
    return found if isinstance(found, TaskLog) else None


def _plan(frame: pd.DataFrame, log: TaskLog | None, mode: DetailsMode
          ) -> tuple[pd.DataFrame, int, list[str]]:
    """Fill what the log knows; the frame, how many rows that filled, and the ids to fetch."""
    frame = frame.copy()
    from_log = 0
    lacking = ~has_details(frame)
    if log is not None and lacking.any() and mode != "none":
        ids = frame.loc[lacking, "id"].astype(str).tolist()
        complete = log.complete_ids(ids)
        if complete:
            logged = _tasks_frame([t for i in complete if (t := log.get(i)) is not None])
            from_log = _apply(frame, logged, only_detail=True)
            lacking = ~has_details(frame)
    listed = (frame["source"].astype(str) == "service").to_numpy()
    if mode == "none":
        wanted = np.zeros(len(frame), dtype=bool)
    elif mode == "all":
        wanted = listed
    else:
        wanted = listed & lacking
        if mode == "failures":
            wanted &= (frame["status"].astype(str) == "failure").to_numpy()
    return frame, from_log, frame.loc[wanted, "id"].astype(str).tolist()


def _tasks_frame(tasks: Sequence[Task]) -> pd.DataFrame:
    return _frame_from_tasks(list(tasks))


def _apply(frame: pd.DataFrame, full: pd.DataFrame, *, only_detail: bool) -> int:
    """Copy ``full``'s rows into ``frame`` (matched by id), in place; how many rows it lent.

    A copy older than the row (the listing saw a later state) lends only its detail columns,
    and only when its status is the same, so a row never goes back in time."""
    if not len(full) or not len(frame):
        return 0
    full = full.drop_duplicates("id", keep="last").reset_index(drop=True)
    where = pd.Index(frame["id"].astype(str)).get_indexer(pd.Index(full["id"].astype(str)))
    keep = where >= 0
    rows, full = where[keep], full.loc[keep].reset_index(drop=True)
    newer = ~(full["updated_at"].to_numpy() < frame["updated_at"].to_numpy()[rows])
    same = (frame["status"].astype(str).to_numpy()[rows]
            == full["status"].astype(str).to_numpy())
    for column in DETAIL_COLUMNS if only_detail else _REFRESHED:
        if column in DETAIL_COLUMNS:
            take = (newer | same) & full[column].notna().to_numpy()
        else:
            take = newer
        if take.any():
            position = cast(int, frame.columns.get_loc(column))
            frame.iloc[rows[take], position] = full[column].array[np.flatnonzero(take)]
    return int((newer | same).sum())


def fill_rows(frame: pd.DataFrame, tasks: Sequence[Task]) -> int:
    """Put ``tasks`` into their rows of ``frame`` (matched by id, in place): their details,
    and their state where it is newer; how many rows they filled."""
    return _apply(frame, _tasks_frame(tasks), only_detail=False)


async def _fetch(get: Callable[[str], Awaitable[Task]], ids: Sequence[str], concurrency: int,
                 progress: Progress) -> tuple[list[Task], int]:
    """Each id's task, at most ``concurrency`` requests at a time; and how many were gone."""
    gate = asyncio.Semaphore(max(1, concurrency))
    report, close = _progress(progress, len(ids))
    done = 0
    gone = 0
    found: list[Task] = []

    async def one(task_id: str) -> None:
        nonlocal done, gone
        async with gate:
            try:
                found.append(await get(task_id))
            except NotFound:
                gone += 1  # purged between the listing and now
        done += 1
        report(done, len(ids))

    try:
        await asyncio.gather(*(one(task_id) for task_id in ids))
    finally:
        close()
    return found, gone


def _progress(progress: Progress, total: int) -> tuple[Callable[[int, int], Any],
                                                        Callable[[], Any]]:
    if progress is True and total:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="task details", unit="task")

        def step(done: int, _total: int) -> None:
            bar.n = done
            bar.refresh()

        return step, bar.close
    if callable(progress):
        progress(0, total)
        return progress, lambda: None
    return (lambda done, total: None), (lambda: None)


def _other_regions(frame: pd.DataFrame, ids: Sequence[str], client: Any) -> dict[str, str]:
    """Of ``ids``, those whose row names a region other than the client's: id -> region.

    Rows with no region, and every row for a client that cannot change region, go through
    ``client`` itself."""
    home = getattr(client, "region", None)
    if not ids or "region" not in frame or home is None or not hasattr(client, "in_region"):
        return {}
    rows = frame.loc[frame["id"].astype(str).isin(ids), ["id", "region"]]
    return {str(task_id): str(region) for task_id, region in rows.itertuples(index=False)
            if not pd.isna(region) and str(region) != home}


async def fetch_details_async(frame: pd.DataFrame, client: Any, log: TaskLog | None = None, *,
                              details: str = DEFAULT_DETAILS,
                              concurrency: int = DETAILS_CONCURRENCY,
                              progress: Progress = None) -> Details:
    """``fetch_details`` on the running loop: ``client`` is an ``AsyncClient`` (or a
    ``Client``, whose requests then run in worker threads)."""
    mode = check_details(details)
    log = _client_log(client, log)
    filled, from_log, ids = _plan(frame, log, mode)
    elsewhere = _other_regions(filled, ids, client)
    # A task is found only through its own region's endpoint (404 from any other): one
    # twin of the login per other region in view, closed when done.
    twins = {region: client.in_region(region) for region in set(elsewhere.values())}

    def get(task_id: str) -> Awaitable[Task]:
        getter = twins.get(elsewhere.get(task_id, ""), client).get_task
        if inspect.iscoroutinefunction(getter):
            return cast(Awaitable[Task], getter(task_id))
        return asyncio.to_thread(getter, task_id)

    try:
        fetched, purged = await _fetch(get, ids, concurrency, progress) if ids else ([], 0)
    finally:
        for twin in twins.values():
            closing = getattr(twin, "aclose", None)
            await closing() if closing is not None else twin.close()
    if fetched and log is not None and getattr(client, "log", None) is not log:
        # The client recorded them in its own log (if any); this log is the one audited.
        await asyncio.to_thread(log.record, fetched)
    if fetched:
        _apply(filled, _tasks_frame(fetched), only_detail=False)
    known = has_details(filled)
    listed = (filled["source"].astype(str) == "service").to_numpy()
    return Details(frame=filled, mode=mode, fetched=len(fetched), purged=purged,
                   from_log=from_log, without_details=int((~known & ~listed).sum()) + purged,
                   not_fetched=int((~known & listed).sum()) - purged)


def fetch_details(frame: pd.DataFrame, client: Any, log: TaskLog | None = None, *,
                  details: str = DEFAULT_DETAILS, concurrency: int = DETAILS_CONCURRENCY,
                  progress: Progress = None) -> Details:
    """Fill the details of the tasks in ``frame`` that it and the log lack; see the module.

    ``client``: a ``Client`` (or ``AsyncClient``, outside a running loop); a task whose row
    names another region (``region`` column) is fetched there, through ``client.in_region``
    (a twin of the same login, closed afterwards); ``log``: the audit
    log (default: the client's); ``details``: ``"missing"``, ``"failures"``, ``"all"`` or
    ``"none"``; ``concurrency``: requests at once; ``progress``: ``True`` for a progress bar
    (tqdm: a widget in notebooks), or a callback ``(done, total)``. Works inside a running
    loop (a notebook) too: the requests then run on a private loop in a worker thread.
    """
    bar: Any = None
    if progress is True:
        # Made here, in the caller's thread: in a notebook the bar belongs to this cell, and
        # the requests may run on a worker thread.
        from tqdm.auto import tqdm

        bar = tqdm(total=0, desc="task details", unit="task")

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

    try:
        return _run_fetch(frame, client, log, details=details, concurrency=concurrency,
                          progress=progress)
    finally:
        if bar is not None:
            bar.close()


def _run_fetch(frame: pd.DataFrame, client: Any, log: TaskLog | None, *, details: str,
               concurrency: int, progress: Progress) -> Details:
    coroutine = fetch_details_async(frame, client, log, details=details,
                                    concurrency=concurrency, progress=progress)
    if loop_running() and inspect.iscoroutinefunction(getattr(client, "get_task", None)):
        coroutine.close()
        raise ValidationError("fetch_details: an AsyncClient inside a running event loop: use "
                              "`await fetch_details_async(...)`", field="client")
    return run_to_end(coroutine, thread_name="imgtools-details")

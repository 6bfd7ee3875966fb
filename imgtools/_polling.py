"""Following tasks to the end: ``PollPolicy``, ``ExportTask`` (and its async twin) and batch
waiting with ``wait_all``.

This loop repeats while a *task* is not finished; repeating one failed *HTTP request* is the
transport's job (``_transport.py``). While waiting, network trouble and 5xx/413/429 answers are
ridden out until the deadline (with ``Retry-After`` obeyed); a 401 that re-authentication cannot
fix, a vanished task or a damaged answer end the wait with their own error.

Batch waiting asks the list endpoint which tasks are still ``pending`` or ``processing`` (a few
pages of up to 1000 stubs for any number of tasks) and fetches details only for tasks that left
those lists. The lists are read in the order the statuses advance (pending, then processing), so
a task missing from both has certainly finished: a task that moved from pending to processing
between the two reads shows up in the second.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Mapping,
)
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeVar

from imgtools._config import (
    DEFAULT_POLL_INITIAL,
    DEFAULT_POLL_JITTER,
    DEFAULT_POLL_MAXIMUM,
    DEFAULT_POLL_MULTIPLIER,
    FAST_POLL_INITIAL,
    FAST_POLL_MAXIMUM,
)
from imgtools._exceptions import (
    APIError,
    ImgToolsError,
    NotFound,
    RateLimited,
    TaskFailed,
    TaskTimeout,
    TransportError,
    ValidationError,
)
from imgtools._models import Task, TaskStatus
from imgtools._validation import validate_task_id, validate_timeout

if TYPE_CHECKING:
    from imgtools._client import AsyncClient, Client

__all__ = [
    "DEFAULT",
    "AsyncExportTask",
    "ExportTask",
    "PollPolicy",
    "WaitAllResult",
    "WaitProgress",
]

#: Details of finished tasks fetched at once by ``wait_all``.
DETAIL_FETCHERS = 16
#: Retry-After longer than this is shortened while polling, seconds.
POLL_RETRY_AFTER_CAP = 300.0


class _Default:
    """The "use the client's default" sentinel: not the same as ``None`` (= wait forever)."""

    _instance: _Default | None = None

    def __new__(cls) -> _Default:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Final = _Default()
Timeout = float | None | _Default


@dataclass(frozen=True, slots=True)
class PollPolicy:
    """How often to ask about a task, in seconds.

    The n-th delay (from 0) is ``min(maximum, initial * multiplier**n)``, lengthened at random by
    up to ``jitter`` (a fraction), so many waiters drift apart. Jitter only lengthens: at the
    default 30 s ceiling polls are 30-36 s apart, never more often than the provider asks.
    A ``Retry-After`` from the service lengthens a delay to what it asks (capped at
    ``retry_after_cap``), unless ``honor_retry_after`` is false.
    """

    initial: float = DEFAULT_POLL_INITIAL
    maximum: float = DEFAULT_POLL_MAXIMUM
    multiplier: float = DEFAULT_POLL_MULTIPLIER
    jitter: float = DEFAULT_POLL_JITTER
    honor_retry_after: bool = True
    retry_after_cap: float = POLL_RETRY_AFTER_CAP

    def __post_init__(self) -> None:
        problems = []
        for name in ("initial", "maximum", "multiplier", "jitter", "retry_after_cap"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value) \
                    or math.isinf(value):
                problems.append(f"{name} must be a finite number")
        if not problems:
            if self.initial <= 0:
                problems.append("initial must be > 0 seconds")
            if self.maximum < self.initial:
                problems.append("maximum must be >= initial")
            if self.multiplier < 1:
                problems.append("multiplier must be >= 1")
            if not 0 <= self.jitter <= 1:
                problems.append("jitter must be between 0 and 1")
            if self.retry_after_cap < 0:
                problems.append("retry_after_cap must be >= 0")
        if problems:
            raise ValidationError(f"invalid PollPolicy: {'; '.join(problems)}", field="poll",
                                  problems=tuple(problems))

    @classmethod
    def fast(cls) -> PollPolicy:
        """For the local emulator: from 0.05 s up to 0.5 s. Never use it against the service."""
        return cls(initial=FAST_POLL_INITIAL, maximum=FAST_POLL_MAXIMUM, multiplier=2.0,
                   jitter=0.1)

    @classmethod
    def fixed(cls, interval: float) -> PollPolicy:
        """Every ``interval`` seconds, no backoff, no jitter (for comparisons and benchmarks)."""
        return cls(initial=interval, maximum=interval, multiplier=1.0, jitter=0.0)

    def delay(self, attempt: int, *, retry_after: float | None = None,
              random_: Callable[[], float] = random.random) -> float:
        """Seconds to wait before poll number ``attempt + 1``."""
        if self.multiplier > 1 and self.maximum > self.initial:
            # Stop growing once the ceiling is reached (and never overflow a float).
            attempt = min(attempt, math.ceil(math.log(self.maximum / self.initial,
                                                      self.multiplier)))
        else:
            attempt = 0
        base = min(self.maximum, self.initial * self.multiplier ** max(0, attempt))
        delay = base * (1.0 + self.jitter * random_())
        if retry_after is not None and self.honor_retry_after:
            delay = max(delay, min(retry_after, self.retry_after_cap))
        return delay

    def delays(self, *, random_: Callable[[], float] = random.random) -> Iterator[float]:
        """The endless sequence of delays, without ``Retry-After``."""
        attempt = 0
        while True:
            yield self.delay(attempt, random_=random_)
            attempt += 1


def _transient(exc: ImgToolsError) -> bool:
    """Trouble worth riding out while waiting: the next poll may well succeed."""
    if isinstance(exc, TransportError | RateLimited):
        return True
    return isinstance(exc, APIError) and exc.status_code >= 500


def _retry_after(exc: ImgToolsError) -> float | None:
    return exc.retry_after if isinstance(exc, RateLimited) else None


def _finish(task: Task) -> Task:
    if task.status is TaskStatus.FAILURE:
        raise TaskFailed(f"task {task.id} failed: {task.message or 'the service gave no reason'}",
                         task=task)
    return task


def _timeout_error(task_id: str, task: Task | None, timeout: float | None) -> TaskTimeout:
    assert task is not None
    return TaskTimeout(f"task {task_id} is still {task.status.value} after {timeout:g} s",
                       task=task)


#: What a wait loop is told after asking for a fetch: the task and its Retry-After, or the error.
_Answer = tuple[Task, float | None] | ImgToolsError | None


_R = TypeVar("_R")


def _drive(steps: Generator[float | None, Any, _R], act: Callable[[], Any]) -> _R:
    """Run a sans-IO wait loop with blocking I/O: a ``None`` step means "call ``act`` now" (its
    result, or the ``ImgToolsError`` it raised, is sent back); a number means sleep that long."""
    answer: Any = None
    while True:
        try:
            step = steps.send(answer)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        if step is None:
            try:
                answer = act()
            except ImgToolsError as exc:
                answer = exc
        else:
            time.sleep(step)
            answer = None


async def _adrive(steps: Generator[float | None, Any, _R],
                  act: Callable[[], Awaitable[Any]]) -> _R:
    """``_drive`` for the async twins: awaits ``act`` and sleeps without blocking the loop."""
    answer: Any = None
    while True:
        try:
            step = steps.send(answer)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        if step is None:
            try:
                answer = await act()
            except ImgToolsError as exc:
                answer = exc
        else:
            await asyncio.sleep(step)
            answer = None


class _ExportTaskBase:
    """What both twins share: the id, the last task seen, and its status."""

    _task: Task | None

    def __init__(self, task_id: str, task: Task | None) -> None:
        self.id = task_id
        self._task = task

    @property
    def task(self) -> Task | None:
        """The task as last seen (``None`` before the first look)."""
        return self._task

    @property
    def status(self) -> TaskStatus | None:
        return None if self._task is None else self._task.status

    @property
    def done(self) -> bool:
        """True once the last seen status is ``success`` or ``failure`` (no request made)."""
        return self._task is not None and self._task.done

    def __repr__(self) -> str:
        status = "unknown" if self._task is None else self._task.status.value
        return f"{type(self).__name__}(id={self.id!r}, status={status!r})"

    def _steps(self, limit: float | None, policy: PollPolicy,
               on_update: Callable[[Task], Any] | None
               ) -> Generator[float | None, _Answer, Task]:
        """The wait loop of both twins, without I/O: yields ``None`` for "fetch the task now"
        (and receives the ``(task, retry_after)`` or the error), or a delay to sleep, seconds.
        Returns the final task, or raises ``TaskFailed`` / ``TaskTimeout``."""
        final = self._known_final()
        if final is not None:
            return _finish(final)
        deadline = None if limit is None else time.monotonic() + limit
        attempt = 0
        retry_after: float | None = None
        # A task just seen is not asked about again at once.
        fresh = self._task is not None
        while True:
            polled = time.monotonic()
            if fresh:
                fresh = False
            else:
                answer = yield None
                if isinstance(answer, ImgToolsError):
                    if not _transient(answer):
                        raise answer
                    retry_after = _retry_after(answer)
                else:
                    assert answer is not None
                    task, retry_after = answer
                    self._task = task
                    if on_update is not None:
                        on_update(task)
                    if task.done:
                        return _finish(task)
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                if self._task is None:
                    raise TransportError(f"task {self.id}: no answer from the service within "
                                         f"{limit:g} s")
                raise _timeout_error(self.id, self._task, limit)
            # Polls start every ``delay`` seconds, however long the last one took.
            delay = max(0.0, policy.delay(attempt, retry_after=retry_after) - (now - polled))
            attempt += 1
            if deadline is not None:
                delay = min(delay, deadline - now)
            yield delay

    def _known_final(self) -> Task | None:
        # A finished task seen in full needs no request; a finished stub lacks its message.
        task = self._task
        return task if task is not None and task.done and not task.is_stub else None


class ExportTask(_ExportTaskBase):
    """An export task followed through a ``Client``; made by ``begin_export`` or ``resume``."""

    def __init__(self, client: Client, task: Task | str) -> None:
        if isinstance(task, Task):
            super().__init__(task.id, task)
        else:
            super().__init__(validate_task_id(task), None)
        self.client = client

    @classmethod
    def resume(cls, client: Client, task_id: str) -> ExportTask:
        """Pick up a task created elsewhere (another kernel, yesterday's runbook); one GET."""
        handle = cls(client, task_id)
        handle.refresh()
        return handle

    def refresh(self) -> Task:
        """Ask the service now (one GET) and return the task."""
        self._task, _ = self.client._fetch_task(self.id)
        return self._task

    def wait(self, timeout: Timeout = DEFAULT, *, poll: PollPolicy | None = None,
             on_update: Callable[[Task], Any] | None = None) -> Task:
        """Poll until the task finishes and return it (``success``).

        ``timeout`` is in seconds (default: the client's, 3600 s; ``None`` waits forever).
        ``poll`` defaults to the client's policy. ``on_update(task)`` is called after every poll.
        Raises ``TaskFailed`` (with the task and its message) or ``TaskTimeout`` (with the last
        task seen; the task goes on in the service).
        """
        steps = self._steps(self.client._wait_timeout(timeout), poll or self.client.poll,
                            on_update)
        return _drive(steps, lambda: self.client._fetch_task(self.id))


class AsyncExportTask(_ExportTaskBase):
    """The async twin of ``ExportTask``: ``await task.wait()`` never blocks the event loop, so a
    Jupyter widget callback can start it with ``asyncio.get_running_loop().create_task``."""

    def __init__(self, client: AsyncClient, task: Task | str) -> None:
        if isinstance(task, Task):
            super().__init__(task.id, task)
        else:
            super().__init__(validate_task_id(task), None)
        self.client = client

    @classmethod
    async def resume(cls, client: AsyncClient, task_id: str) -> AsyncExportTask:
        """Pick up a task created elsewhere; one GET."""
        handle = cls(client, task_id)
        await handle.refresh()
        return handle

    async def refresh(self) -> Task:
        """Ask the service now (one GET) and return the task."""
        self._task, _ = await self.client._fetch_task(self.id)
        return self._task

    async def wait(self, timeout: Timeout = DEFAULT, *, poll: PollPolicy | None = None,
                   on_update: Callable[[Task], Any] | None = None) -> Task:
        """As ``ExportTask.wait``, awaitable."""
        steps = self._steps(self.client._wait_timeout(timeout), poll or self.client.poll,
                            on_update)
        return await _adrive(steps, lambda: self.client._fetch_task(self.id))


# -- batch waiting ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WaitProgress:
    """Counts after one round of ``wait_all``; ``elapsed`` in seconds."""

    total: int
    succeeded: int
    failed: int
    pending: int
    processing: int
    errors: int
    rounds: int
    elapsed: float

    @property
    def done(self) -> int:
        """Tasks finished either way (plus those that could not be followed)."""
        return self.succeeded + self.failed + self.errors

    def __str__(self) -> str:
        return (f"{self.done}/{self.total} done ({self.succeeded} succeeded, {self.failed} "
                f"failed, {self.errors} errors), {self.pending} pending, "
                f"{self.processing} processing")


@dataclass(frozen=True)
class WaitAllResult:
    """Where every task ended: ``succeeded`` and ``failed`` hold final tasks, ``timed_out`` the
    last seen state of tasks still running at the deadline, ``errors`` tasks that could not be
    followed (vanished: ``NotFound``; never seen). ``tasks`` maps every id to its last state."""

    succeeded: list[Task] = field(default_factory=list)
    failed: list[Task] = field(default_factory=list)
    timed_out: list[Task] = field(default_factory=list)
    errors: dict[str, ImgToolsError] = field(default_factory=dict)
    tasks: dict[str, Task] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True if every task succeeded."""
        return not (self.failed or self.timed_out or self.errors)

    def raise_for_failures(self) -> WaitAllResult:
        """Raise the first problem (``TaskFailed``, ``TaskTimeout`` or the error), else return
        ``self``."""
        if self.failed:
            _finish(self.failed[0])
        if self.timed_out:
            task = self.timed_out[0]
            raise TaskTimeout(f"task {task.id} is still {task.status.value} at the deadline "
                              f"({len(self.timed_out)} task(s) unfinished)", task=task)
        for error in self.errors.values():
            raise error
        return self

    def __repr__(self) -> str:
        return (f"WaitAllResult(succeeded={len(self.succeeded)}, failed={len(self.failed)}, "
                f"timed_out={len(self.timed_out)}, errors={len(self.errors)})")


TaskRef = Task | str | ExportTask | AsyncExportTask

_LISTED = (TaskStatus.PENDING, TaskStatus.PROCESSING)


class _Batch:
    """The bookkeeping of ``wait_all``, without I/O: what to list, what left the lists."""

    def __init__(self, tasks: Iterable[TaskRef]) -> None:
        self.handles: dict[str, list[ExportTask | AsyncExportTask]] = {}
        self.last: dict[str, Task] = {}
        self.open: dict[str, TaskStatus | None] = {}  # unfinished id -> last status (None = ?)
        self.final: dict[str, Task] = {}
        self.errors: dict[str, ImgToolsError] = {}
        self.rounds = 0
        for ref in tasks:
            if isinstance(ref, ExportTask | AsyncExportTask):
                task_id, task = ref.id, ref.task
                self.handles.setdefault(task_id, []).append(ref)
            elif isinstance(ref, Task):
                task_id, task = ref.id, ref
            else:
                task_id, task = validate_task_id(ref, field="tasks"), None
            if task is not None:
                self.last[task_id] = task
            if task is not None and task.done and not task.is_stub:
                self.final[task_id] = task
            else:
                self.open[task_id] = None if task is None or task.done else task.status
        self._seen: dict[str, TaskStatus] = {}

    @property
    def finished(self) -> bool:
        return not self.open

    def statuses_to_list(self) -> list[TaskStatus]:
        """Pending (if any task may still be pending), then processing; in this order."""
        may_be_pending = any(s in (None, TaskStatus.PENDING) for s in self.open.values())
        return list(_LISTED) if may_be_pending else [TaskStatus.PROCESSING]

    def start_round(self) -> None:
        self._seen = {}

    def observe_page(self, status: TaskStatus, items: list[Any]) -> list[Task]:
        """Note which of our tasks a list page holds; returns stubs whose status changed."""
        changed = []
        open_ = self.open
        for item in items:
            # Only our tasks are parsed: the list holds the whole tenant's.
            task_id = item.get("id") if isinstance(item, Mapping) else None
            if task_id not in open_:
                continue
            self._seen[task_id] = status
            if open_[task_id] != status:
                stub = Task.from_json(item, stub=True)
                changed.append(stub)
                open_[task_id] = status
                self._remember(stub)
        return changed

    def left_the_lists(self) -> list[str]:
        """Our unfinished tasks that no list of this round holds: they have finished."""
        return [task_id for task_id in self.open if task_id not in self._seen]

    def observe_detail(self, task: Task) -> None:
        self._remember(task)
        if task.done:
            self.final[task.id] = task
            self.open.pop(task.id, None)
        else:  # the list and the detail disagree for a moment; follow the detail
            self.open[task.id] = task.status

    def vanished(self, task_id: str, error: ImgToolsError) -> None:
        self.errors[task_id] = error
        self.open.pop(task_id, None)

    def _remember(self, task: Task) -> None:
        # A stub never replaces a full view of the same status.
        old = self.last.get(task.id)
        if task.is_stub and old is not None and not old.is_stub and old.status == task.status:
            return
        if task.is_stub and old is not None and not old.is_stub:
            task = _merge_stub(old, task)
        self.last[task.id] = task
        for handle in self.handles.get(task.id, ()):
            handle._task = task

    def progress(self, started: float) -> WaitProgress:
        statuses = list(self.open.values())
        return WaitProgress(
            total=len(self.open) + len(self.final) + len(self.errors),
            succeeded=sum(1 for t in self.final.values() if t.status is TaskStatus.SUCCESS),
            failed=sum(1 for t in self.final.values() if t.status is TaskStatus.FAILURE),
            pending=sum(1 for s in statuses if s in (None, TaskStatus.PENDING)),
            processing=sum(1 for s in statuses if s is TaskStatus.PROCESSING),
            errors=len(self.errors),
            rounds=self.rounds,
            elapsed=time.monotonic() - started,
        )

    def result(self) -> WaitAllResult:
        timed_out = []
        errors = dict(self.errors)
        for task_id in self.open:
            task = self.last.get(task_id)
            if task is None:
                errors[task_id] = TransportError(f"task {task_id} could not be looked at "
                                                 "before the deadline")
            else:
                timed_out.append(task)
        final = list(self.final.values())
        return WaitAllResult(
            succeeded=[t for t in final if t.status is TaskStatus.SUCCESS],
            failed=[t for t in final if t.status is TaskStatus.FAILURE],
            timed_out=timed_out, errors=errors, tasks=dict(self.last),
        )


def _merge_stub(full: Task, stub: Task) -> Task:
    # A newer stub keeps the input the full view knew (input never changes), so a handle's
    # ``task.image_id`` and ``task.container`` stay known while the status moves on.
    return dataclasses.replace(stub, input=full.input)


def wait_all(client: Client, tasks: Iterable[TaskRef], *, timeout: Timeout = DEFAULT,
             poll: PollPolicy | None = None,
             on_progress: Callable[[WaitProgress], Any] | None = None) -> WaitAllResult:
    """``Client.wait_all``: see there."""
    batch = _Batch(tasks)
    steps = _batch_steps(batch, client._wait_timeout(timeout), poll or client.poll, on_progress)
    return _drive(steps, lambda: _round(client, batch))


def _batch_steps(batch: _Batch, limit: float | None, policy: PollPolicy,
                 on_progress: Callable[[WaitProgress], Any] | None
                 ) -> Generator[float | None, float | ImgToolsError | None, WaitAllResult]:
    """The round loop of both ``wait_all`` twins, without I/O: yields ``None`` for "run a
    round now" (and receives its ``Retry-After`` or its error), or a delay to sleep, seconds."""
    started = time.monotonic()
    deadline = None if limit is None else started + limit
    attempt = 0
    while True:
        retry_after: float | None = None
        round_began = time.monotonic()
        if not batch.finished:
            answer = yield None
            if isinstance(answer, ImgToolsError):
                if not _transient(answer):
                    raise answer
                retry_after = _retry_after(answer)
            else:
                retry_after = answer
        if on_progress is not None:
            on_progress(batch.progress(started))
        if batch.finished:
            return batch.result()
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            return batch.result()
        # Rounds start every ``delay`` seconds: the time a round took is not added to it.
        delay = max(0.0, policy.delay(attempt, retry_after=retry_after) - (now - round_began))
        attempt += 1
        if deadline is not None:
            delay = min(delay, deadline - now)
        yield delay


def _round(client: Client, batch: _Batch) -> float | None:
    batch.rounds += 1
    batch.start_round()
    retry_after: float | None = None
    for status in batch.statuses_to_list():
        for items, after in client._status_pages(status):
            changed = batch.observe_page(status, items)
            if changed:
                client._record(changed)
            retry_after = after if after is not None else retry_after
    finished = batch.left_the_lists()
    if len(finished) > 1:
        # Tasks started together finish together: fetch their details side by side.
        with ThreadPoolExecutor(min(DETAIL_FETCHERS, len(finished))) as pool:
            outcomes = list(pool.map(lambda i: _outcome(client._fetch_task, i), finished))
    else:
        outcomes = [_outcome(client._fetch_task, i) for i in finished]
    return _apply(batch, finished, outcomes, retry_after)


def _outcome(fetch: Callable[[str], tuple[Task, float | None]], task_id: str
             ) -> tuple[Task, float | None] | ImgToolsError:
    try:
        return fetch(task_id)
    except ImgToolsError as exc:
        return exc


def _apply(batch: _Batch, ids: list[str],
           outcomes: list[tuple[Task, float | None] | ImgToolsError],
           retry_after: float | None) -> float | None:
    problem: ImgToolsError | None = None
    for task_id, outcome in zip(ids, outcomes, strict=True):
        if isinstance(outcome, NotFound):
            batch.vanished(task_id, outcome)
        elif isinstance(outcome, ImgToolsError):
            problem = problem or outcome  # the others still count; this one is asked again
        else:
            task, after = outcome
            batch.observe_detail(task)
            retry_after = after if after is not None else retry_after
    if problem is not None:
        raise problem
    return retry_after


async def async_wait_all(client: AsyncClient, tasks: Iterable[TaskRef], *,
                         timeout: Timeout = DEFAULT, poll: PollPolicy | None = None,
                         on_progress: Callable[[WaitProgress], Any] | None = None
                         ) -> WaitAllResult:
    """``AsyncClient.wait_all``: see there."""
    batch = _Batch(tasks)
    steps = _batch_steps(batch, client._wait_timeout(timeout), poll or client.poll, on_progress)
    return await _adrive(steps, lambda: _async_round(client, batch))


async def _async_round(client: AsyncClient, batch: _Batch) -> float | None:
    batch.rounds += 1
    batch.start_round()
    retry_after: float | None = None
    for status in batch.statuses_to_list():
        pages: AsyncIterator[tuple[list[Any], float | None]] = client._status_pages(status)
        async for items, after in pages:
            changed = batch.observe_page(status, items)
            if changed:
                client._record(changed)
            retry_after = after if after is not None else retry_after
    finished = batch.left_the_lists()
    gate = asyncio.Semaphore(DETAIL_FETCHERS)

    async def fetch(task_id: str) -> tuple[Task, float | None] | ImgToolsError:
        async with gate:
            try:
                return await client._fetch_task(task_id)
            except ImgToolsError as exc:
                return exc

    outcomes = list(await asyncio.gather(*(fetch(i) for i in finished)))
    return _apply(batch, finished, outcomes, retry_after)


def _check_timeout(value: Timeout, default: float | None) -> float | None:
    if isinstance(value, _Default):
        return default
    return validate_timeout(value)

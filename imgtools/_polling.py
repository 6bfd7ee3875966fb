"""Following tasks to the end: ``PollPolicy``, ``TaskHandle`` (``ExportTask``, and
``ImportTask`` in ``_imports.py``; each with its async twin) and batch waiting with ``wait_all``.

This loop repeats while a *task* is not finished; repeating one failed *HTTP request* is the
transport's job (``_transport.py``). While waiting, network trouble and 5xx/413/429 answers are
ridden out until the deadline (with ``Retry-After`` obeyed), and so is a 401 while the identity
service still accepts the credentials (each poll logs in again); a bare token that expired,
credentials identity refuses, a vanished task or a damaged answer end the wait with their own
error.

Both loops are ``_ops`` operations over the client's ``Ops`` (``client.ops``: fetch a task, read
a status list, record in the audit log), run by the client's one sync or async driver; they call
no private method of the client.

Batch waiting asks the list endpoint which tasks are still ``pending`` or ``processing`` (a few
pages of up to 1000 stubs for any number of tasks) and fetches details only for tasks that left
those lists, side by side (``Gather``). The lists are read in the order the statuses advance
(pending, then processing), so a task missing from both has certainly finished: a task that
moved from pending to processing between the two reads shows up in the second.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections import deque
from collections.abc import (
    Callable,
    Iterable,
    Iterator,
    Mapping,
)
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol, Self

from imgtools import testing
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
    AuthError,
    ImgToolsError,
    ImportFailed,
    NotFound,
    RateLimited,
    TaskFailed,
    TaskTimeout,
    TransportError,
    ValidationError,
)
from imgtools._models import Task, TaskStatus
from imgtools._ops import Gather, Op, Sleep
from imgtools._validation import validate_task_id, validate_timeout

if TYPE_CHECKING:
    from imgtools._client import AsyncClient, Client, Ops

__all__ = [
    "DEFAULT",
    "AsyncExportTask",
    "AsyncTaskHandle",
    "ExportTask",
    "PollPolicy",
    "TaskHandle",
    "WaitAllResult",
    "WaitProgress",
]

#: Retry-After longer than this is shortened while polling, seconds.
POLL_RETRY_AFTER_CAP = 300.0
#: How many recent polls (or ``wait_all`` rounds) the time a poll takes is judged by.
LATENCY_WINDOW = 10


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
    up to ``jitter`` (a fraction), so many waiters drift apart.

    A delay is the longest a finish should go unseen. A task that finishes just after one poll
    looked is seen when the *next* poll's answer arrives, so the next poll starts the delay
    after the previous one began, less the time it is expected to take (for ``wait`` the
    longest of the last few polls; for ``wait_all`` a round that may have to fetch every open
    task), but never sooner than ``floor`` times the un-jittered delay after it. With the
    default ``floor=1`` that time only comes out of the jitter, which only lengthens: at the
    default 30 s ceiling polls start 30-36 s apart, never more often than the provider asks.

    A ``Retry-After`` from the service is obeyed from the answer that carried it (capped at
    ``retry_after_cap``), unless ``honor_retry_after`` is false.
    """

    initial: float = DEFAULT_POLL_INITIAL
    maximum: float = DEFAULT_POLL_MAXIMUM
    multiplier: float = DEFAULT_POLL_MULTIPLIER
    jitter: float = DEFAULT_POLL_JITTER
    honor_retry_after: bool = True
    retry_after_cap: float = POLL_RETRY_AFTER_CAP
    floor: float = 1.0

    def __post_init__(self) -> None:
        problems = []
        for name in ("initial", "maximum", "multiplier", "jitter", "retry_after_cap",
                     "floor"):
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
            if not 0 < self.floor <= 1:
                problems.append("floor must be above 0 and at most 1")
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
        """A finish goes unseen for at most about ``interval`` seconds; no backoff, no jitter
        (for comparisons and benchmarks).

        ``interval`` is the longest from a finish to the answer that shows it, not the gap
        between polls: polls start ``interval`` apart less the time they take to answer, but
        never closer than half the interval (``floor=0.5``). So they come a little more often
        than every ``interval``; use ``PollPolicy(initial=x, maximum=x, jitter=0)`` for polls
        that start exactly every ``x`` seconds.
        """
        return cls(initial=interval, maximum=interval, multiplier=1.0, jitter=0.0, floor=0.5)

    def delay(self, attempt: int, *, retry_after: float | None = None, latency: float = 0.0,
              random_: Callable[[], float] = random.random) -> float:
        """Seconds from the start of poll number ``attempt`` to the start of the next, when a
        poll takes ``latency`` seconds to answer; at least ``floor`` times the un-jittered delay.
        With ``retry_after``: at least that (capped), too."""
        if self.multiplier > 1 and self.maximum > self.initial:
            # Stop growing once the ceiling is reached (and never overflow a float).
            attempt = min(attempt, math.ceil(math.log(self.maximum / self.initial,
                                                      self.multiplier)))
        else:
            attempt = 0
        base = min(self.maximum, self.initial * self.multiplier ** max(0, attempt))
        delay = max(base * self.floor,
                    base * (1.0 + self.jitter * random_()) - max(0.0, latency))
        return max(delay, self._retry_wait(retry_after))

    def _retry_wait(self, retry_after: float | None) -> float:
        """How long a ``Retry-After`` holds the next poll back: capped, or 0 if not honoured."""
        if retry_after is None or not self.honor_retry_after:
            return 0.0
        return min(max(0.0, retry_after), self.retry_after_cap)

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
    if isinstance(exc, AuthError):
        # A 401 with credentials identity still accepts: the next poll logs in again. A refused
        # bare token, a 403 or refused credentials end the wait.
        return exc.renewable
    return isinstance(exc, APIError) and exc.status_code >= 500


def _retry_after(exc: ImgToolsError) -> float | None:
    return exc.retry_after if isinstance(exc, RateLimited) else None


def _finish(task: Task) -> Task:
    if task.status is TaskStatus.FAILURE:
        # An import's failure carries its category (ImportFailed is a TaskFailed).
        error = ImportFailed if task.type == "import" else TaskFailed
        raise error(f"task {task.id} failed: {task.message or 'the service gave no reason'}",
                    task=task)
    return task


def _timeout_error(task_id: str, task: Task | None, timeout: float | None) -> TaskTimeout:
    assert task is not None
    return TaskTimeout(f"task {task_id} is still {task.status.value} after {timeout:g} s",
                       task=task)


# -- what a wait loop needs of a client -------------------------------------------------------


class _TaskOps(Protocol):
    """The operations of a client that the waiting loops are written against (``Ops`` in
    ``_client``): ``yield from`` them inside an ``_ops`` operation."""

    def get_task(self, task_id: str) -> Op[tuple[Task, float | None]]: ...

    def status_pages(self, status: TaskStatus) -> Op[list[tuple[list[Any], float | None]]]: ...

    def record(self, tasks: list[Task]) -> None: ...


#: One fetch in a ``Gather``: the task and its ``Retry-After``, or the error.
_Outcome = tuple[Task, float | None] | ImgToolsError


def _now() -> float:
    # The testing switch may put a fake clock here (``imgtools.testing.use_clock``).
    return testing.clock().monotonic()


class _Pace:
    """When the next poll (or ``wait_all`` round) of one wait is due, without I/O.

    The policy's delay bounds how long a finish goes unseen: a task that finishes just after
    one poll looked is seen when the next poll's answer arrives, so the next poll starts the
    delay after this one *began*, less the time the next poll is expected to take (by default
    the longest of the last ``LATENCY_WINDOW``); ``PollPolicy.delay`` keeps that gap at or
    above the policy's floor.
    """

    def __init__(self, policy: PollPolicy, limit: float | None) -> None:
        self.policy = policy
        self.started = _now()
        self.deadline = None if limit is None else self.started + limit
        self.attempt = 0
        self._took: deque[float] = deque(maxlen=LATENCY_WINDOW)

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline

    def sleep(self, began: float, now: float, retry_after: float | None, *,
              asked: bool = True, expect: float | None = None) -> float:
        """Seconds to sleep after the poll that began at ``began`` and answered at ``now``
        (``asked=False``: nothing was asked, the task was just seen); ``expect``: how long the
        next poll will take, if the caller knows better. A ``Retry-After`` counts from its
        answer; the deadline shortens the sleep."""
        took = now - began
        if asked:
            self._took.append(took)
        latency = max(self._took, default=0.0) if expect is None else expect
        gap = self.policy.delay(self.attempt, latency=latency)
        self.attempt += 1
        delay = max(gap - took, self.policy._retry_wait(retry_after))
        if self.deadline is not None:
            delay = min(delay, self.deadline - now)
        return max(0.0, delay)


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

    def _steps(self, ops: _TaskOps, limit: float | None, policy: PollPolicy,
               on_update: Callable[[Task], Any] | None) -> Op[Task]:
        """The wait loop of both twins, an ``_ops`` operation: fetches the task through ``ops``
        and sleeps as ``_Pace`` says. Returns the final task, or raises ``TaskFailed`` /
        ``TaskTimeout``."""
        final = self._known_final()
        if final is not None:
            return _finish(final)
        pace = _Pace(policy, limit)
        retry_after: float | None = None
        # A task just seen is not asked about again at once.
        fresh = self._task is not None
        while True:
            polled = _now()
            asked = not fresh
            if fresh:
                fresh = False
            else:
                try:
                    task, retry_after = yield from ops.get_task(self.id)
                except ImgToolsError as exc:
                    if not _transient(exc):
                        raise
                    retry_after = _retry_after(exc)
                else:
                    self._task = task
                    if on_update is not None:
                        on_update(task)
                    if task.done:
                        return _finish(task)
            now = _now()
            if pace.expired(now):
                if self._task is None:
                    raise TransportError(f"task {self.id}: no answer from the service within "
                                         f"{limit:g} s")
                raise _timeout_error(self.id, self._task, limit)
            yield Sleep(pace.sleep(polled, now, retry_after, asked=asked))

    def _known_final(self) -> Task | None:
        # A finished task seen in full needs no request; a finished stub lacks its message.
        task = self._task
        return task if task is not None and task.done and not task.is_stub else None


class TaskHandle(_ExportTaskBase):
    """A task followed through a ``Client`` (``wait``, ``refresh``, ``resume``); its kinds are
    ``ExportTask`` and ``ImportTask``."""

    def __init__(self, client: Client, task: Task | str) -> None:
        if isinstance(task, Task):
            super().__init__(task.id, task)
        else:
            super().__init__(validate_task_id(task), None)
        self.client = client

    @classmethod
    def resume(cls, client: Client, task_id: str) -> Self:
        """Pick up a task created elsewhere (another kernel, yesterday's runbook); one GET."""
        handle = cls(client, task_id)
        handle.refresh()
        return handle

    def refresh(self) -> Task:
        """Ask the service now (one GET) and return the task."""
        ops = self.client.ops
        task, _ = ops.run(ops.get_task(self.id))
        self._task = task
        return task

    def wait(self, timeout: Timeout = DEFAULT, *, poll: PollPolicy | None = None,
             on_update: Callable[[Task], Any] | None = None) -> Task:
        """Poll until the task finishes and return it (``success``).

        ``timeout`` is in seconds (default: the client's, 3600 s; ``None`` waits forever).
        ``poll`` defaults to the client's policy. ``on_update(task)`` is called after every poll.
        Raises ``TaskFailed`` (with the task and its message) or ``TaskTimeout`` (with the last
        task seen; the task goes on in the service).
        """
        ops = self.client.ops
        return ops.run(self._steps(ops, ops.wait_limit(timeout), poll or ops.poll, on_update))


class ExportTask(TaskHandle):
    """An export task followed through a ``Client``; made by ``begin_export`` or ``resume``."""


class AsyncTaskHandle(_ExportTaskBase):
    """The async twin of ``TaskHandle``: ``await task.wait()`` never blocks the event loop, so a
    Jupyter widget callback can start it with ``asyncio.get_running_loop().create_task``."""

    def __init__(self, client: AsyncClient, task: Task | str) -> None:
        if isinstance(task, Task):
            super().__init__(task.id, task)
        else:
            super().__init__(validate_task_id(task), None)
        self.client = client

    @classmethod
    async def resume(cls, client: AsyncClient, task_id: str) -> Self:
        """Pick up a task created elsewhere; one GET."""
        handle = cls(client, task_id)
        await handle.refresh()
        return handle

    async def refresh(self) -> Task:
        """Ask the service now (one GET) and return the task."""
        ops = self.client.ops
        task, _ = await ops.run(ops.get_task(self.id))
        self._task = task
        return task

    async def wait(self, timeout: Timeout = DEFAULT, *, poll: PollPolicy | None = None,
                   on_update: Callable[[Task], Any] | None = None) -> Task:
        """As ``ExportTask.wait``, awaitable."""
        ops = self.client.ops
        return await ops.run(self._steps(ops, ops.wait_limit(timeout), poll or ops.poll,
                                         on_update))


class AsyncExportTask(AsyncTaskHandle):
    """The async twin of ``ExportTask``."""


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


TaskRef = Task | str | TaskHandle | AsyncTaskHandle

_LISTED = (TaskStatus.PENDING, TaskStatus.PROCESSING)


class _Batch:
    """The bookkeeping of ``wait_all``, without I/O: what to list, what left the lists."""

    def __init__(self, tasks: Iterable[TaskRef]) -> None:
        self.handles: dict[str, list[TaskHandle | AsyncTaskHandle]] = {}
        self.last: dict[str, Task] = {}
        self.open: dict[str, TaskStatus | None] = {}  # unfinished id -> last status (None = ?)
        self.final: dict[str, Task] = {}
        self.errors: dict[str, ImgToolsError] = {}
        self.rounds = 0
        for ref in tasks:
            if isinstance(ref, TaskHandle | AsyncTaskHandle):
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
            elapsed=_now() - started,
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
    ops = client.ops
    return ops.run(op_wait_all(ops, tasks, timeout=timeout, poll=poll, on_progress=on_progress))


async def async_wait_all(client: AsyncClient, tasks: Iterable[TaskRef], *,
                         timeout: Timeout = DEFAULT, poll: PollPolicy | None = None,
                         on_progress: Callable[[WaitProgress], Any] | None = None
                         ) -> WaitAllResult:
    """``AsyncClient.wait_all``: see there."""
    ops = client.ops
    return await ops.run(op_wait_all(ops, tasks, timeout=timeout, poll=poll,
                                     on_progress=on_progress))


def op_wait(ops: Ops, task_id: str, *, timeout: Timeout = DEFAULT,
            poll: PollPolicy | None = None) -> Op[Task]:
    """The loop of ``wait``, to ``yield from`` inside another operation (a transfer's waits):
    the finished task; ``TaskFailed`` / ``TaskTimeout`` as ``wait``."""
    return _ExportTaskBase(task_id, None)._steps(ops, ops.wait_limit(timeout),
                                                 poll or ops.poll, None)


def op_wait_all(ops: Ops, tasks: Iterable[TaskRef], *, timeout: Timeout = DEFAULT,
                poll: PollPolicy | None = None,
                on_progress: Callable[[WaitProgress], Any] | None = None) -> Op[WaitAllResult]:
    """The operation both ``wait_all`` twins drive: ``yield from`` it to wait for many tasks
    inside another operation (``transfer_all``)."""
    return _batch_steps(_Batch(tasks), ops, ops.wait_limit(timeout), poll or ops.poll,
                        on_progress)


def _batch_steps(batch: _Batch, ops: _TaskOps, limit: float | None, policy: PollPolicy,
                 on_progress: Callable[[WaitProgress], Any] | None) -> Op[WaitAllResult]:
    """The round loop of both ``wait_all`` twins, an ``_ops`` operation: a round (see
    ``_round``), then a sleep (see ``_Pace``)."""
    pace = _Pace(policy, limit)
    cost = _RoundCost()
    while True:
        retry_after: float | None = None
        began = _now()
        if not batch.finished:
            try:
                retry_after = yield from _round(batch, ops, cost)
            except ImgToolsError as exc:
                if not _transient(exc):
                    raise
                retry_after = _retry_after(exc)
        if on_progress is not None:
            on_progress(batch.progress(pace.started))
        if batch.finished:
            return batch.result()
        now = _now()
        if pace.expired(now):
            return batch.result()
        yield Sleep(pace.sleep(began, now, retry_after, expect=cost.expect(len(batch.open))))


class _RoundCost:
    """How long a ``wait_all`` round takes, to time the next one (see ``_Pace``): its lists,
    then one fetch per task that left them. Tasks started together finish together, so the
    next round is expected to fetch every task still open, at the highest cost per task of the
    last ``LATENCY_WINDOW`` fetches (before any, at the cost of one list page)."""

    def __init__(self) -> None:
        self._lists: deque[float] = deque(maxlen=LATENCY_WINDOW)  # a round's lists, seconds
        self._page: deque[float] = deque(maxlen=LATENCY_WINDOW)  # per page
        self._task: deque[float] = deque(maxlen=LATENCY_WINDOW)  # per task fetched

    def listed(self, seconds: float, pages: int) -> None:
        self._lists.append(seconds)
        self._page.append(seconds / max(1, pages))

    def fetched(self, seconds: float, tasks: int) -> None:
        self._task.append(seconds / max(1, tasks))

    def expect(self, open_tasks: int) -> float:
        """Seconds the next round may take, with ``open_tasks`` unfinished."""
        per_task = max(self._task, default=max(self._page, default=0.0))
        return max(self._lists, default=0.0) + per_task * open_tasks


def _round(batch: _Batch, ops: _TaskOps, cost: _RoundCost) -> Op[float | None]:
    """One round: read the lists, then fetch the tasks that left them, side by side (tasks
    started together finish together). Returns the last ``Retry-After`` seen; raises the first
    error (the tasks fetched still count)."""
    batch.rounds += 1
    batch.start_round()
    retry_after: float | None = None
    began, pages_read = _now(), 0
    for status in batch.statuses_to_list():
        pages = yield from ops.status_pages(status)
        pages_read += len(pages)
        for items, after in pages:
            changed = batch.observe_page(status, items)
            if changed:
                ops.record(changed)
            retry_after = after if after is not None else retry_after
    listed = _now()
    cost.listed(listed - began, pages_read)
    finished = batch.left_the_lists()
    if not finished:
        return retry_after
    outcomes: list[_Outcome] = yield Gather(tuple(ops.get_task(i) for i in finished))
    cost.fetched(_now() - listed, len(finished))
    problem: ImgToolsError | None = None
    for task_id, outcome in zip(finished, outcomes, strict=True):
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


def _check_timeout(value: Timeout, default: float | None) -> float | None:
    if isinstance(value, _Default):
        return default
    return validate_timeout(value)

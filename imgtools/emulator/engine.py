"""The task worker: drives ``pending -> processing -> success | failure`` in a thread.

Each task type is a ``TaskHandler``: it checks the input at POST time (Glance's synchronous
400s), then ``start`` turns a task into a ``Job`` (or refuses it with ``TaskFailure``, the
documented asynchronous failures). The worker feeds every running job its share of bytes per
tick (``export_speed`` bytes/s each), so hundreds of tasks progress together in one thread.
A new task type is one more handler, not a change here.
"""

from __future__ import annotations

import logging
import random
import threading
from dataclasses import dataclass
from typing import Any, Protocol

from imgtools.emulator.state import EmulatorState
from imgtools.emulator.store import Store, TaskRow

__all__ = ["Engine", "Job", "TaskFailure", "TaskHandler", "Worker"]

log = logging.getLogger("imgtools.emulator")

#: How many due pending tasks one tick promotes (the rest wait for the next tick).
PROMOTE_BATCH = 500
#: Seconds between purges of expired tasks, tokens and objects.
PURGE_INTERVAL = 1.0
RESTART_MESSAGE = ("Task was interrupted by a service restart while processing; "
                   "create a new task to try again")


class TaskFailure(Exception):
    """The task ends in ``failure`` with this message."""


class Job(Protocol):
    """A started task's work, advanced in slices of bytes."""

    total: int
    done: int

    def step(self, budget: int) -> None:
        """Copy up to ``budget`` more bytes; raise ``TaskFailure`` to fail the task."""

    def finish(self) -> dict[str, Any]:
        """Called once ``done >= total``: commit, and return the task's ``result``."""

    def abort(self) -> None:
        """Drop partial work after a failure."""


class TaskHandler(Protocol):
    """One task type (``export``, ``import``)."""

    type: str
    #: Message of an unexpected failure ("Unknown error occurred during image export").
    unknown_error: str

    def check_input(self, task_input: Any) -> str | None:
        """Glance's synchronous 400 message for bad input, or ``None``."""

    def start(self, task: TaskRow, resume: bool) -> Job:
        """Check what only the worker can check and return the job (or raise TaskFailure)."""


@dataclass
class _Running:
    task: TaskRow
    job: Job
    last: float
    credit: float = 0.0
    fail_at: int | None = None  # the task_failure fault: fail once this many bytes are done


class Worker:
    """The background thread stepping every region's engine; ``start``/``stop`` are called by
    the app lifespan. One thread for all regions: a tick of an idle region costs one query."""

    def __init__(self, state: EmulatorState, engines: list[Engine]) -> None:
        self.state = state
        self.engines = engines
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def active(self) -> int:
        return sum(engine.active for engine in self.engines)

    def start(self) -> None:
        for engine in self.engines:
            engine.recover()
        self._thread = threading.Thread(target=self._loop, name="emulator-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.state.wakeup.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for engine in self.engines:
            engine.abort_all()

    def _loop(self) -> None:
        tick = self.state.config.tick
        while not self._stop.is_set():
            for engine in self.engines:
                try:
                    engine.step()
                except Exception:  # keep the worker alive; a bug must not hang every task
                    log.exception("task worker step failed")
            self.state.wakeup.wait(tick)
            self.state.wakeup.clear()


class Engine:
    """One region's task work, over that region's store; stepped by the ``Worker``."""

    def __init__(self, state: EmulatorState, handlers: dict[str, TaskHandler],
                 store: Store | None = None) -> None:
        self.state = state
        self.handlers = handlers
        self.store = store if store is not None else state.store
        self._running: dict[str, _Running] = {}
        self._last_purge = 0.0
        self._random = random.Random()

    @property
    def active(self) -> int:
        return len(self._running)

    def abort_all(self) -> None:
        for running in self._running.values():
            running.job.abort()
        self._running.clear()

    def step(self) -> None:
        """One tick: purge, promote due pending tasks, advance running jobs."""
        state, store = self.state, self.store
        now = state.clock.now()
        if now - self._last_purge >= PURGE_INTERVAL:
            self._last_purge = now
            purged = store.purge_tasks(now)
            if purged:
                state.stats.event("tasks_purged", purged)
            store.purge_tokens(now)
            store.purge_objects(now)
        for task in store.due_pending(now - state.config.pending_delay, PROMOTE_BATCH):
            self._begin(task, now, resume=False)
        for task_id in list(self._running):
            self._advance(task_id, state.clock.now())

    def _begin(self, task: TaskRow, now: float, *, resume: bool) -> None:
        handler = self.handlers.get(task.type)
        if handler is None:  # a type this emulator no longer knows (old data dir)
            self._fail(task, now, f"Unknown task type: {task.type}")
            return
        try:
            job = handler.start(task, resume)
        except TaskFailure as exc:
            self._fail(task, now, str(exc))
            return
        except Exception:
            log.exception("starting task %s failed", task.id)
            self._fail(task, now, handler.unknown_error)
            return
        self.store.update_task(task.id, status="processing", now=now)
        running = _Running(task, job, now)
        faults = self.state.faults
        if faults.task_failure and self._random.random() < faults.task_failure:
            running.fail_at = job.total // 2
        self._running[task.id] = running

    def _advance(self, task_id: str, now: float) -> None:
        running = self._running[task_id]
        handler = self.handlers[running.task.type]
        running.credit += (now - running.last) * self.state.config.export_speed
        running.last = now
        budget = int(running.credit)
        running.credit -= budget
        job = running.job
        try:
            if running.fail_at is not None and job.done + budget >= running.fail_at:
                raise TaskFailure(handler.unknown_error)
            if budget > 0 and job.done < job.total:
                job.step(budget)
            if job.done < job.total:
                return
            result = job.finish()
        except TaskFailure as exc:
            job.abort()
            del self._running[task_id]
            self._fail(running.task, now, str(exc))
            return
        except Exception:
            log.exception("task %s failed", task_id)
            job.abort()
            del self._running[task_id]
            self._fail(running.task, now, handler.unknown_error)
            return
        del self._running[task_id]
        self.store.update_task(task_id, status="success", now=now, result=result,
                                     expires_at=now + self.state.config.task_ttl)
        self.state.stats.event("tasks_succeeded")

    def _fail(self, task: TaskRow, now: float, message: str) -> None:
        self.store.update_task(task.id, status="failure", now=now, message=message,
                                     expires_at=now + self.state.config.task_ttl)
        self.state.stats.event("tasks_failed")

    def recover(self) -> None:
        """Tasks a crash caught in ``processing``: start again from scratch, or fail them."""
        now = self.state.clock.now()
        for task in self.store.tasks_with_status("processing"):
            if self.state.config.crash_recovery == "fail":
                self._fail(task, now, RESTART_MESSAGE)
                self.state.stats.event("tasks_failed_after_restart")
            else:
                self._begin(task, now, resume=True)
                self.state.stats.event("tasks_resumed")

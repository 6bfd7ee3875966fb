"""Polling: the policy's arithmetic, ``wait`` and ``wait_all`` (sync and async) against the
emulator, with faults and an expiring token in the middle of a wait."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

import imgtools
from imgtools import (
    PollPolicy,
    Task,
    TaskFailed,
    TaskStatus,
    TaskTimeout,
    ValidationError,
    WaitProgress,
    _polling,
)
from imgtools._ops import Gather, Sleep
from imgtools._polling import _Batch, _ExportTaskBase
from imgtools.emulator import EmulatorHandle, start_emulator
from imgtools.testing import FakeClock, use_clock
from tests.client_support import (
    DB,
    FAST,
    MISSING,
    SMALL,
    WEB,
    clear_faults,
    fresh_container,
    make_client,
    route_count,
)


@pytest.fixture(scope="module")
def emu(emulator_in_subprocess: EmulatorHandle) -> EmulatorHandle:
    """This module's emulator: the client tests' one, in a subprocess (tests/conftest.py)."""
    return emulator_in_subprocess


# -- the policy -------------------------------------------------------------------------------


def test_default_policy_backs_off_to_30_seconds() -> None:
    policy = PollPolicy()
    floor = [policy.delay(n, random_=lambda: 0.0) for n in range(8)]
    assert floor == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]
    top = [policy.delay(n, random_=lambda: 1.0) for n in range(6)]
    assert top == pytest.approx([2.4, 4.8, 9.6, 19.2, 36.0, 36.0])
    # Jitter only lengthens: at the ceiling, never more often than every 30 s.
    assert min(policy.delay(50) for _ in range(200)) >= 30.0


def test_policy_sequence_and_huge_attempts() -> None:
    policy = PollPolicy(initial=1.0, maximum=10.0, multiplier=3.0, jitter=0.0)
    delays = policy.delays()
    assert [next(delays) for _ in range(5)] == [1.0, 3.0, 9.0, 10.0, 10.0]
    assert policy.delay(10**9) == 10.0  # no overflow


def test_retry_after_lengthens_a_delay_up_to_its_cap() -> None:
    policy = PollPolicy(initial=1.0, maximum=5.0, jitter=0.0, retry_after_cap=60.0)
    assert policy.delay(0, retry_after=20.0) == 20.0
    assert policy.delay(0, retry_after=0.5) == 1.0
    assert policy.delay(0, retry_after=3600.0) == 60.0
    deaf = PollPolicy(initial=1.0, maximum=5.0, jitter=0.0, honor_retry_after=False)
    assert deaf.delay(0, retry_after=20.0) == 1.0


def test_named_policies() -> None:
    assert PollPolicy.fixed(2.0).delay(7) == 2.0
    assert PollPolicy.fixed(2.0).floor == 0.5 and PollPolicy().floor == 1.0
    fast = PollPolicy.fast()
    assert fast.initial < 0.1 and fast.maximum <= 0.5
    with pytest.raises(AttributeError):
        fast.initial = 3.0  # type: ignore[misc]


def test_latency_comes_off_the_jitter_only_by_default() -> None:
    policy = PollPolicy(initial=30.0, maximum=30.0, jitter=0.2)
    assert policy.delay(0, latency=2.0, random_=lambda: 1.0) == 34.0
    assert policy.delay(0, latency=0.0, random_=lambda: 0.5) == 33.0
    # However slow a poll, the next never starts sooner than the base delay after it.
    assert policy.delay(0, latency=100.0, random_=lambda: 1.0) == 30.0
    assert policy.delay(0, latency=1.0, random_=lambda: 0.0) == 30.0
    assert PollPolicy().delay(50, latency=1e9) == 30.0


def test_a_fixed_interval_is_a_staleness_bound_down_to_its_floor() -> None:
    policy = PollPolicy.fixed(1.0)
    assert policy.delay(3, latency=0.25) == 0.75
    assert policy.delay(3, latency=0.9) == 0.5  # never twice as often as the interval
    assert policy.delay(3, latency=-1.0) == 1.0
    # A Retry-After still holds a poll back, however the interval is meant.
    assert policy.delay(3, latency=0.25, retry_after=4.0) == 4.0


@pytest.mark.parametrize("kwargs", [{"initial": 0}, {"initial": -1}, {"maximum": 0.5},
                                    {"multiplier": 0.5}, {"jitter": 2}, {"jitter": -0.1},
                                    {"initial": float("nan")}, {"maximum": float("inf")},
                                    {"retry_after_cap": -1}, {"floor": 0}, {"floor": 1.5},
                                    {"floor": float("nan")}])
def test_bad_policies(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValidationError) as info:
        PollPolicy(**kwargs)
    assert info.value.field == "poll" and info.value.problems


# -- the batch bookkeeping (no I/O) -----------------------------------------------------------

STAMP = "2026-01-01T00:00:00Z"


def stub(task_id: str, status: str) -> dict[str, str]:
    return {"id": task_id, "type": "export", "status": status, "created_at": STAMP,
            "updated_at": STAMP}


IDS = [f"{n:08d}-0000-4000-8000-000000000000" for n in range(4)]


def test_batch_reads_pending_then_processing_and_infers_finished() -> None:
    batch = _Batch(IDS)
    assert batch.statuses_to_list() == [TaskStatus.PENDING, TaskStatus.PROCESSING]
    batch.start_round()
    # Someone else's task in the list is ignored; ours are noted.
    changed = batch.observe_page(TaskStatus.PENDING, [stub(IDS[0], "pending"),
                                                      stub("someone-else", "pending")])
    assert [t.id for t in changed] == [IDS[0]]
    # IDS[1] moved from pending to processing between the two reads: still seen.
    batch.observe_page(TaskStatus.PROCESSING, [stub(IDS[1], "processing"),
                                               stub(IDS[2], "processing")])
    assert batch.left_the_lists() == [IDS[3]]
    batch.observe_detail(Task.from_json({**stub(IDS[3], "success"), "input": {},
                                         "message": ""}))
    assert batch.progress(0.0).succeeded == 1
    # Next round: IDS[0] is still pending, so both lists are read again.
    assert batch.statuses_to_list() == [TaskStatus.PENDING, TaskStatus.PROCESSING]
    batch.start_round()
    batch.observe_page(TaskStatus.PENDING, [])
    batch.observe_page(TaskStatus.PROCESSING, [stub(IDS[0], "processing")])
    assert batch.left_the_lists() == [IDS[1], IDS[2]]
    # Once none may be pending, the pending list is not read at all.
    assert batch.statuses_to_list() == [TaskStatus.PROCESSING]


def test_batch_result_sorts_tasks() -> None:
    batch = _Batch(IDS[:3])
    batch.observe_detail(Task.from_json({**stub(IDS[0], "success"), "input": {}}))
    batch.observe_detail(Task.from_json({**stub(IDS[1], "failure"), "input": {},
                                         "message": "Container not found"}))
    batch.start_round()
    batch.observe_page(TaskStatus.PROCESSING, [stub(IDS[2], "processing")])
    result = batch.result()
    assert [t.id for t in result.succeeded] == [IDS[0]]
    assert [t.id for t in result.failed] == [IDS[1]]
    assert [t.id for t in result.timed_out] == [IDS[2]]
    assert not result.ok
    with pytest.raises(TaskFailed) as info:
        result.raise_for_failures()
    assert info.value.message == "Container not found"


# -- the timing of the sans-IO loops (a fake clock, no I/O, no sleeping) -----------------------


@pytest.fixture
def clock() -> Iterator[FakeClock]:
    """The sans-IO loops read this clock, which moves only when told."""
    with use_clock(FakeClock()) as fake:
        yield fake


def full(task_id: str, status: str) -> Task:
    return Task.from_json({**stub(task_id, status), "input": {}, "message": ""})


@dataclass(frozen=True)
class Ask:
    """What a ``FakeOps`` operation yields: its question, for the test to answer."""

    what: str
    arg: Any


class FakeOps:
    """The client's operations as the waiting loops see them, answered by the test."""

    def get_task(self, task_id: str) -> Generator[Any, Any, tuple[Task, float | None]]:
        answer = yield Ask("task", task_id)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[no-any-return]

    def status_pages(self, status: TaskStatus
                     ) -> Generator[Any, Any, list[tuple[list[Any], float | None]]]:
        answer = yield Ask("list", status)
        return answer  # type: ignore[no-any-return]

    def record(self, tasks: list[Task]) -> None:
        return None


def answer_gather(step: Gather, answer: Callable[[Ask], Any]) -> list[Any]:
    """Run each operation of a ``Gather`` by hand, answering its one question."""
    results = []
    for op in step.ops:
        with pytest.raises(StopIteration) as stop:
            op.send(answer(next(op)))
        results.append(stop.value.value)
    return results


def test_wait_polls_sooner_after_a_slow_answer(clock: FakeClock) -> None:
    handle = _ExportTaskBase(IDS[0], None)
    steps = handle._steps(FakeOps(), None, PollPolicy.fixed(1.0), None)
    assert next(steps) == Ask("task", IDS[0])
    clock.now += 0.25  # the answer took a quarter of the interval
    sleep = steps.send((full(IDS[0], "processing"), None)).seconds
    # The next poll starts 0.75 s after this one began: a finish just after this one looked
    # is seen within the interval, when the next answer arrives.
    assert sleep == pytest.approx(0.5)
    clock.now += sleep
    assert steps.send(None) == Ask("task", IDS[0])
    clock.now += 0.05
    # The slow answer is remembered for a while: the gap stays 0.75 s.
    assert steps.send((full(IDS[0], "processing"), None)).seconds == pytest.approx(0.7)
    assert steps.send(None) == Ask("task", IDS[0])
    # A Retry-After counts from the answer that carried it.
    assert steps.send((full(IDS[0], "processing"), 5.0)) == Sleep(5.0)
    steps.send(None)
    with pytest.raises(StopIteration) as stop:
        steps.send((full(IDS[0], "success"), None))
    assert stop.value.value.status is TaskStatus.SUCCESS


def test_wait_never_polls_sooner_than_a_jittered_policy_asks(clock: FakeClock) -> None:
    policy = PollPolicy(initial=30.0, maximum=30.0, jitter=0.2)
    handle = _ExportTaskBase(IDS[0], None)
    steps = handle._steps(FakeOps(), None, policy, None)
    next(steps)
    for took in (0.0, 5.0, 40.0, 0.1):
        clock.now += took
        sleep = steps.send((full(IDS[0], "processing"), None)).seconds
        assert took + sleep >= 30.0  # start to start
        assert took + sleep <= 36.0 or sleep == 0.0
        clock.now += sleep
        assert steps.send(None) == Ask("task", IDS[0])


def drive_round(steps: Generator[Any, Any, Any], clock: FakeClock,
                lists: dict[TaskStatus, list[str]], fetch_seconds: float = 0.0,
                first: object = None) -> float:
    """Answer one ``wait_all`` round (each list page takes 0.01 s); returns the sleep after."""
    step = first
    while True:
        if isinstance(step, Ask):
            assert step.what == "list"
            clock.now += 0.01
            page = [stub(i, step.arg.value) for i in lists.get(step.arg, [])]
            step = steps.send([(page, None)])
        elif isinstance(step, Gather):
            clock.now += fetch_seconds
            step = steps.send(answer_gather(step, lambda ask: (full(ask.arg, "success"), None)))
        elif step is None:
            step = steps.send(None)
        else:
            assert isinstance(step, Sleep)
            return step.seconds


def test_wait_all_rounds_come_sooner_when_fetching_finished_tasks_is_slow(
        clock: FakeClock) -> None:
    batch = _Batch(IDS)
    steps = _polling._batch_steps(batch, FakeOps(), None, PollPolicy.fixed(1.0), None)
    processing = {TaskStatus.PROCESSING: IDS}
    quiet = drive_round(steps, clock, {TaskStatus.PENDING: IDS}, first=next(steps))
    # Two list pages (0.02 s), and before any fetch a fetch is reckoned to cost a page: the
    # next round may fetch all 4 open tasks (0.04 s), so it starts 0.94 s after this one.
    assert 0.02 + quiet == pytest.approx(0.94)
    clock.now += quiet
    # They were pending: both lists are read again (0.02 s), then only processing.
    again = drive_round(steps, clock, processing)
    assert 0.02 + again == pytest.approx(0.94)
    clock.now += again
    # One task finished; fetching it took 0.1 s: the 3 still open may cost 0.3 s next time.
    slow = drive_round(steps, clock, {TaskStatus.PROCESSING: IDS[1:]}, fetch_seconds=0.1)
    assert 0.11 + slow == pytest.approx(1.0 - 0.02 - 0.3)
    clock.now += slow
    # Never closer than the floor (half the interval): 0.3 s a fetch, 2 open tasks.
    floor = drive_round(steps, clock, {TaskStatus.PROCESSING: IDS[2:]}, fetch_seconds=0.3)
    assert 0.31 + floor == pytest.approx(0.5)
    clock.now += floor
    with pytest.raises(StopIteration) as stop:
        drive_round(steps, clock, {})
    assert len(stop.value.value.succeeded) == 4


def test_wait_all_never_rounds_sooner_than_a_jittered_policy_asks(clock: FakeClock) -> None:
    batch = _Batch(IDS)
    policy = PollPolicy(initial=30.0, maximum=30.0, jitter=0.2)
    steps = _polling._batch_steps(batch, FakeOps(), None, policy, None)
    step: object = next(steps)
    for n, fetch in enumerate((0.0, 2.0, 20.0)):
        started = clock.now
        sleep = drive_round(steps, clock, {TaskStatus.PROCESSING: IDS[n + 1:]},
                            fetch_seconds=fetch, first=step)
        assert clock.now - started + sleep >= 30.0
        clock.now += sleep
        step = None


# -- wait against the emulator ----------------------------------------------------------------


@pytest.fixture(scope="module")
def slow_emu() -> Iterator[EmulatorHandle]:
    """Tasks stay pending for a minute: for deadlines."""
    with start_emulator(config=FAST.replace(pending_delay=60.0), subprocess=True) as handle:
        yield handle


def test_wait_returns_the_final_task_and_reports_every_poll(client: imgtools.Client) -> None:
    task = client.begin_export(WEB, fresh_container(), create_container=True)
    updates: list[Task] = []
    final = task.wait(on_update=updates.append)
    assert final.status is TaskStatus.SUCCESS and final is task.task and task.done
    assert updates and updates[-1] is final
    order = [TaskStatus.PENDING, TaskStatus.PROCESSING, TaskStatus.SUCCESS]
    ranks = [order.index(t.status) for t in updates]
    assert ranks == sorted(ranks)
    assert task.wait() is final  # already finished: no request, same answer


def test_wait_timeout_carries_the_last_task(slow_emu: EmulatorHandle) -> None:
    with make_client(slow_emu) as c:
        task = c.begin_export(WEB, fresh_container(), create_container=True)
        polls: list[Task] = []
        with pytest.raises(TaskTimeout) as info:
            task.wait(timeout=0.3, on_update=polls.append)
        assert info.value.task.status is TaskStatus.PENDING
        assert info.value.task is polls[-1] and len(polls) >= 2  # the last poll: at the deadline
        assert "still pending after 0.3 s" in str(info.value)
        with pytest.raises(TaskTimeout):
            task.wait(timeout=0)


def test_wait_rides_out_503s_and_a_token_expiry(slow_emu: EmulatorHandle) -> None:
    with make_client(slow_emu, retries=16) as c:
        task = c.begin_export(DB, fresh_container(), create_container=True)
        # Half the GETs fail; seeded, so every run meets the same 503s (the first GET one).
        slow_emu.set_faults(error_503=0.5, methods="GET", seed=1)
        for _ in range(10):
            assert task.refresh().status is TaskStatus.PENDING
        seen: list[TaskStatus] = []

        def expire_once(t: Task) -> None:
            if not seen:
                # The first poll saw it pending (for a minute); now a day passes: the task moves
                # on and the token expires, in the middle of the wait.
                assert t.status is TaskStatus.PENDING
                slow_emu.advance_clock(25 * 3600)
            seen.append(t.status)

        try:
            final = task.wait(on_update=expire_once)
        finally:
            clear_faults(slow_emu)
        assert final.status is TaskStatus.SUCCESS and len(seen) >= 2
        assert c.stats.reauths == 1
        assert c.stats.retry_reasons.get("503", 0) > 0


def test_wait_raises_task_failed_with_the_message(client: imgtools.Client) -> None:
    container = fresh_container()
    task = client.begin_export(WEB, container, preflight=False)
    with pytest.raises(TaskFailed) as info:
        task.wait()
    assert info.value.task.status is TaskStatus.FAILURE
    assert container in (info.value.message or "")


# -- wait_all ---------------------------------------------------------------------------------


def test_wait_all_lists_instead_of_polling_each_task(client: imgtools.Client,
                                                     emu: EmulatorHandle) -> None:
    handles = [client.begin_export(SMALL, fresh_container(), create_container=True)
               for _ in range(12)]
    details = route_count(emu, "/v2/tasks/{task_id}", "GET")
    lists = route_count(emu, "/v2/tasks", "GET")
    progress: list[WaitProgress] = []
    result = client.wait_all(handles, on_progress=progress.append)
    assert result.ok and len(result.succeeded) == 12
    assert {t.id for t in result.succeeded} == {h.id for h in handles}
    assert all(h.done and h.task is not None and not h.task.is_stub for h in handles)
    # One detail GET per task, when it finished; a couple of list pages per round.
    assert route_count(emu, "/v2/tasks/{task_id}", "GET") - details == 12
    rounds = progress[-1].rounds
    assert route_count(emu, "/v2/tasks", "GET") - lists <= 2 * rounds
    assert progress[-1].done == progress[-1].total == 12 and progress[-1].succeeded == 12
    dones = [p.done for p in progress]
    assert dones == sorted(dones)


def test_wait_all_reports_failures_and_vanished_tasks_without_raising(
        client: imgtools.Client) -> None:
    good = client.begin_export(DB, fresh_container(), create_container=True)
    bad = client.begin_export(DB, fresh_container(), preflight=False)  # no such container
    result = client.wait_all([good, bad.id, MISSING])
    assert [t.id for t in result.succeeded] == [good.id]
    assert [t.id for t in result.failed] == [bad.id]
    assert result.failed[0].message
    assert isinstance(result.errors[MISSING], imgtools.NotFound)
    assert not result.ok and result.timed_out == []
    assert "succeeded=1, failed=1" in repr(result)


def test_wait_all_deadline(slow_emu: EmulatorHandle) -> None:
    with make_client(slow_emu) as c:
        handles = [c.begin_export(WEB, fresh_container(), create_container=True)
                   for _ in range(3)]
        result = c.wait_all(handles, timeout=0.3)
        assert {t.id for t in result.timed_out} == {h.id for h in handles}
        assert all(t.status is TaskStatus.PENDING for t in result.timed_out)
        with pytest.raises(TaskTimeout):
            result.raise_for_failures()


def test_wait_all_under_faults(emu: EmulatorHandle) -> None:
    with make_client(emu, retries=10) as c:
        handles = [c.begin_export(SMALL, fresh_container(), create_container=True)
                   for _ in range(8)]
        retried, before = c.stats.retries, emu.stats()["faults"]
        # Seeded: the same faults every run; with seed 4 the first two GETs meet one.
        emu.set_faults(error_503=0.3, drop_before=0.1, methods="GET", seed=4)
        result = c.wait_all(handles)
        after = emu.stats()["faults"]
        clear_faults(emu)
        assert len(result.succeeded) == 8
        injected = sum(after.get(k, 0) - before.get(k, 0) for k in ("error_503", "drop_before"))
        assert injected >= 2
        assert c.stats.retries - retried == injected  # each fault retried once, no more


def test_wait_all_records_transitions_in_the_log(emu: EmulatorHandle, tmp_path: object) -> None:
    from pathlib import Path

    from imgtools._tasklog import TaskLog

    log = TaskLog(Path(str(tmp_path)) / "log.sqlite")
    with make_client(emu, log=log) as c:
        handles = [c.begin_export(SMALL, fresh_container(), create_container=True)
                   for _ in range(3)]
        c.wait_all(handles)
    for handle in handles:
        stored = log.get(handle.id)
        assert stored is not None and stored.status is TaskStatus.SUCCESS
        assert stored.image_id == SMALL


# -- async ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_async_export_wait_does_not_block_the_loop(emu: EmulatorHandle) -> None:
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.005)

    c = await imgtools.connect_async(username="demo", api_key="demo-key",
                                     identity_url=emu.identity_url, log=False,
                                     poll=PollPolicy.fast())
    async with c:
        beat = asyncio.get_running_loop().create_task(ticker())
        task = await c.begin_export(WEB, fresh_container(), create_container=True)
        before = ticks
        final = await task.wait()
        during = ticks - before
        stop.set()
        await beat
        assert final.status is TaskStatus.SUCCESS and final.image_id == WEB
        assert during > 0  # the loop kept running while we waited
        again = await imgtools.AsyncExportTask.resume(c, task.id)
        assert again.done and (await c.get_task(task.id)).id == task.id


@pytest.mark.anyio
async def test_async_client_has_the_same_methods(emu: EmulatorHandle) -> None:
    async with imgtools.AsyncClient(username="demo", api_key="demo-key",
                                    identity_url=emu.identity_url, log=False,
                                    poll=PollPolicy.fast()) as c:
        images = [i async for i in c.images(limit=3)]
        assert len(images) >= 8
        assert (await c.get_image(WEB)).id == WEB
        handles = [await c.begin_export(SMALL, fresh_container(), create_container=True)
                   for _ in range(4)]
        result = await c.wait_all(handles)
        assert len(result.succeeded) == 4
        listed = [t async for t in c.tasks(type="export", page_size=2)]
        assert {h.id for h in handles} <= {t.id for t in listed}
        pages = [p async for p in c.iter_task_pages(page_size=1000)]
        assert sum(len(p) for p in pages) >= 4
        final = await c.export(DB, fresh_container(), create_container=True)
        assert final.status is TaskStatus.SUCCESS
        with pytest.raises(imgtools.ExportExists):
            await c.begin_export(DB, final.container or "")
        with pytest.raises(ValidationError):
            c.tasks(page_size=0)
        assert c.exportability(images[0]) is not None
        shared = ["images", "get_image", "exportability", "get_task", "tasks", "iter_task_pages",
                  "begin_export", "export", "resume", "wait_all", "endpoint", "storage_url",
                  "tenant_id", "log", "stats", "poll", "wait_timeout"]
        assert [n for n in shared if not hasattr(c, n)] == []


@pytest.mark.anyio
async def test_async_wait_all_under_a_token_expiry(emu: EmulatorHandle) -> None:
    c = await imgtools.connect_async(username="demo", api_key="demo-key",
                                     identity_url=emu.identity_url, log=False,
                                     poll=PollPolicy.fast())
    async with c:
        handles = [await c.begin_export(SMALL, fresh_container(), create_container=True)
                   for _ in range(3)]
        emu.advance_clock(25 * 3600)
        result = await c.wait_all(handles)
        assert len(result.succeeded) == 3 and c.stats.reauths == 1


def test_times_are_utc(client: imgtools.Client) -> None:
    task = client.export(SMALL, fresh_container(), create_container=True)
    assert task.created_at.tzinfo is not None
    assert task.created_at.utcoffset() == datetime.now(UTC).utcoffset()

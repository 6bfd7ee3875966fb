"""The client against the emulator over real sockets: images, tasks, exports, preflight,
bad input, faults (503s, rate limits, dropped connections, lost POST answers)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

import imgtools
from imgtools import (
    ContainerNotFound,
    ExportExists,
    ExportNotConfirmed,
    NotExportable,
    NotFound,
    PollPolicy,
    TaskFailed,
    TaskLog,
    TaskStatus,
    ValidationError,
)
from imgtools.emulator import EmulatorHandle, start_emulator
from imgtools.testing import set_testing
from tests.client_support import (
    DB,
    FAST,
    MISSING,
    OLD,
    OTHERS_WEB,
    RHEL,
    SMALL,
    WEB,
    WINDOWS,
    Recorder,
    clear_faults,
    fresh_container,
    make_client,
    route_count,
    tasks_created,
)


@pytest.fixture(scope="module")
def emu(emulator_in_subprocess: EmulatorHandle) -> EmulatorHandle:
    """This module's emulator: the client tests' one, in a subprocess (tests/conftest.py)."""
    return emulator_in_subprocess



@pytest.fixture(autouse=True)
def _no_courtesy_pauses() -> Iterator[None]:
    # No settle before looking for a lost POST's task, no backoff between looks or resent POSTs.
    with set_testing(True):
        yield

# -- images -----------------------------------------------------------------------------------


def test_images_follow_every_page(client: imgtools.Client, emu: EmulatorHandle) -> None:
    before = route_count(emu, "/v2/images", "GET")
    paged = list(client.images(limit=2))
    pages = route_count(emu, "/v2/images", "GET") - before
    everything = list(client.images())
    assert len(paged) == len(everything) >= 8
    assert len({i.id for i in paged}) == len(paged)
    assert pages >= 4  # 8 images, 2 per page: the client followed ``next``


def test_image_filters_and_details(client: imgtools.Client) -> None:
    active = list(client.images(status="deactivated"))
    assert [i.id for i in active] == [OLD]
    image = client.get_image(WEB)
    assert image.id == WEB and image.status == "active" and image.owner == "100001"
    with pytest.raises(NotFound):
        client.get_image(MISSING)


@pytest.mark.parametrize(("image_id", "ok", "code"), [
    (WEB, True, None), (DB, True, None), (SMALL, True, None),
    (WINDOWS, False, "restricted"), (RHEL, False, "restricted"), (OLD, False, "not_active"),
])
def test_exportability_of_own_images(client: imgtools.Client, image_id: str, ok: bool,
                                     code: str | None) -> None:
    verdict = client.exportability(client.get_image(image_id))
    assert verdict.ok is ok and bool(verdict) is ok
    assert verdict.code == code
    assert (verdict.reason is None) is ok


def test_base_images_belong_to_someone_else(client: imgtools.Client) -> None:
    base = [i for i in client.images(visibility="public")]
    assert base
    for image in base:
        verdict = client.exportability(image)
        assert verdict.code == "not_owner"
        assert "only the owner" in (verdict.reason or "")


# -- tasks ------------------------------------------------------------------------------------


def test_tasks_list_pages_and_details(client: imgtools.Client, emu: EmulatorHandle) -> None:
    made = [client.begin_export(SMALL, fresh_container(), create_container=True)
            for _ in range(3)]
    listed = list(client.tasks(type="export", page_size=1))
    ids = [t.id for t in listed]
    assert {m.id for m in made} <= set(ids)
    assert len(ids) == len(set(ids))
    assert all(t.is_stub and t.input is None for t in listed)
    created = [t.created_at for t in listed]
    assert created == sorted(created, reverse=True)  # newest first by default
    pages = list(client.iter_task_pages(type="export", page_size=2))
    assert sum(len(p) for p in pages) == len(ids)
    assert all(isinstance(item, dict) for page in pages for item in page)
    full = client.get_task(made[0].id)
    assert not full.is_stub
    assert full.image_id == SMALL and full.container is not None
    ascending = [t.created_at for t in client.tasks(sort_dir="asc")]
    assert ascending == sorted(ascending)


def test_get_task_unknown_is_not_found(client: imgtools.Client) -> None:
    with pytest.raises(NotFound) as info:
        client.get_task(MISSING)
    assert info.value.status_code == 404


# -- exports ----------------------------------------------------------------------------------


def test_export_end_to_end(client: imgtools.Client, emu: EmulatorHandle) -> None:
    container = fresh_container()
    seen: list[TaskStatus] = []
    before = tasks_created(emu)
    final = client.export(WEB, container, create_container=True,
                          on_update=lambda t: seen.append(t.status))
    assert final.status is TaskStatus.SUCCESS
    assert final.export_location == f"{container}/{WEB}.vhd"
    assert final.message is None
    assert seen[-1] is TaskStatus.SUCCESS
    order = [TaskStatus.PENDING, TaskStatus.PROCESSING, TaskStatus.SUCCESS]
    assert [order.index(s) for s in seen] == sorted(order.index(s) for s in seen)
    assert tasks_created(emu) == before + 1
    # The same export again is refused before any POST.
    with pytest.raises(ExportExists) as info:
        client.begin_export(WEB, container)
    assert f"{container}/{WEB}.vhd" in str(info.value)
    assert tasks_created(emu) == before + 1


@pytest.mark.parametrize(("image_id", "reason"), [
    (WINDOWS, "licensing"), (RHEL, "licensing"), (OLD, "status"),
    (MISSING, "no such image"), (OTHERS_WEB, "no such image"),
])
def test_preflight_refuses_unexportable_images(client: imgtools.Client, emu: EmulatorHandle,
                                               image_id: str, reason: str) -> None:
    before = tasks_created(emu)
    with pytest.raises(NotExportable) as info:
        client.begin_export(image_id, fresh_container(), create_container=True)
    assert reason in str(info.value)
    assert info.value.reason
    assert tasks_created(emu) == before


def test_preflight_missing_container(client: imgtools.Client, emu: EmulatorHandle) -> None:
    before = tasks_created(emu)
    container = fresh_container()
    with pytest.raises(ContainerNotFound) as info:
        client.begin_export(WEB, container)
    assert "create_container=True" in str(info.value)
    assert tasks_created(emu) == before
    # Without the preflight, the task is created and fails in the service: TaskFailed.
    task = client.begin_export(WEB, container, preflight=False)
    with pytest.raises(TaskFailed) as failed:
        task.wait()
    assert failed.value.task.status is TaskStatus.FAILURE
    assert failed.value.message and container in failed.value.message
    assert failed.value.message in str(failed.value)


def test_resume_follows_a_task_created_elsewhere(emu: EmulatorHandle) -> None:
    with make_client(emu) as first:
        task_id = first.begin_export(DB, fresh_container(), create_container=True).id
    with make_client(emu) as second:
        handle = imgtools.ExportTask.resume(second, task_id)
        assert handle.task is not None and handle.id == task_id
        final = handle.wait()
        assert final.status is TaskStatus.SUCCESS and final.image_id == DB
        assert second.resume(task_id).done


def test_the_log_records_what_the_client_sees(emu: EmulatorHandle, tmp_path: Any) -> None:
    from imgtools._tasklog import TaskLog

    log = TaskLog(tmp_path / "log.sqlite")
    with make_client(emu, log=log) as c:
        final = c.export(SMALL, fresh_container(), create_container=True)
    stored = log.get(final.id)
    assert stored is not None and stored.status is TaskStatus.SUCCESS
    assert stored.image_id == SMALL


def test_default_log_is_a_tasklog(emu: EmulatorHandle) -> None:
    with make_client(emu, log=True) as c:
        from imgtools._tasklog import TaskLog

        assert isinstance(c.log, TaskLog)
        task = c.begin_export(SMALL, fresh_container(), create_container=True)
        assert task.id in c.log  # type: ignore[operator]
    with make_client(emu, log=False) as c:
        assert c.log is None


# -- bad input: a typed error and no request --------------------------------------------------

GOOD = WEB
BAD_INPUT: list[tuple[str, Callable[[imgtools.Client], Any], str]] = [
    ("image id empty", lambda c: c.begin_export("", "exports"), "image_id"),
    ("image id not uuid", lambda c: c.begin_export("web01", "exports"), "image_id"),
    ("image id braces", lambda c: c.begin_export("{" + GOOD + "}", "exports"), "image_id"),
    ("image id not str", lambda c: c.begin_export(42, "exports"), "image_id"),
    ("container empty", lambda c: c.begin_export(GOOD, ""), "container"),
    ("container slash", lambda c: c.begin_export(GOOD, "a/b"), "container"),
    ("container question", lambda c: c.begin_export(GOOD, "a?b"), "container"),
    ("container dot", lambda c: c.begin_export(GOOD, "my.exports"), "container"),
    ("container control", lambda c: c.begin_export(GOOD, "ex\nports"), "container"),
    ("container 257 bytes", lambda c: c.begin_export(GOOD, "x" * 257), "container"),
    ("container unicode 258 bytes", lambda c: c.begin_export(GOOD, "é" * 129), "container"),
    ("container whitespace", lambda c: c.begin_export(GOOD, " exports"), "container"),
    ("both bad", lambda c: c.begin_export("x", "a/b"), "image_id, container"),
    ("export() too", lambda c: c.export(GOOD, "a.b", create_container=True), "container"),
    ("get_task", lambda c: c.get_task("not-a-uuid"), "task_id"),
    ("get_image", lambda c: c.get_image("../etc/passwd"), "image_id"),
    ("page size 0", lambda c: c.tasks(page_size=0), "page_size"),
    ("page size 1001", lambda c: c.tasks(page_size=1001), "page_size"),
    ("page size pages", lambda c: c.iter_task_pages(page_size=5000), "page_size"),
    ("status", lambda c: c.tasks(status="done"), "status"),
    ("type", lambda c: c.tasks(type="copy"), "type"),
    ("sort key", lambda c: c.tasks(sort_key="name"), "sort_key"),
    ("sort dir", lambda c: c.tasks(sort_dir="up"), "sort_dir"),
    ("images limit", lambda c: c.images(limit=0), "limit"),
    ("resume", lambda c: c.resume("nope"), "task_id"),
    ("wait_all id", lambda c: c.wait_all(["nope"]), "tasks"),
    ("wait timeout", lambda c: imgtools.ExportTask(c, GOOD).wait(timeout=-1), "timeout"),
    ("wait_all timeout", lambda c: c.wait_all([GOOD], timeout=float("nan")), "timeout"),
    ("poll policy", lambda c: c.wait_all([GOOD], poll=PollPolicy(initial=0)), "poll"),
]


@pytest.mark.parametrize(("case", "call", "field"), BAD_INPUT, ids=[b[0] for b in BAD_INPUT])
def test_bad_input_raises_before_any_request(emu: EmulatorHandle, case: str,
                                             call: Callable[[imgtools.Client], Any],
                                             field: str) -> None:
    recorder = Recorder()
    with make_client(emu, transport=recorder) as c:
        sent = len(recorder.requests)  # the login
        with pytest.raises(ValidationError) as info:
            call(c)
        assert info.value.field == field
        assert info.value.problems
        assert len(recorder.requests) == sent, [str(r.url) for r in recorder.requests[sent:]]


# -- faults -----------------------------------------------------------------------------------


def test_503_bursts_are_retried(emu: EmulatorHandle) -> None:
    # Seeded, so every run meets the same 503s; with seed 1 the first GET meets one.
    with make_client(emu, retries=10) as client:
        task = client.begin_export(SMALL, fresh_container(), create_container=True)
        before = emu.stats()["faults"].get("error_503", 0)
        emu.set_faults(error_503=0.25, methods="GET,HEAD", seed=1)
        for _ in range(20):
            assert client.get_task(task.id).id == task.id
        injected = emu.stats()["faults"].get("error_503", 0) - before
        assert injected >= 1
        assert client.stats.retry_reasons.get("503", 0) == injected


def test_rate_limit_413_with_retry_after(client: imgtools.Client, emu: EmulatorHandle) -> None:
    before = emu.stats()["faults"].get("rate_limit_413", 0)
    # 10 requests a second: 40 asked for in under 3 s (a slow machine too) meet the limit.
    emu.set_faults(rate_limit=10.0, rate_limit_status=413)
    results = [client.get_image(WEB).id for _ in range(40)]
    assert results == [WEB] * 40
    limited = emu.stats()["faults"].get("rate_limit_413", 0) - before
    assert limited > 0
    assert client.stats.rate_limited == limited  # every 413 was waited out and asked again
    assert client.stats.retry_reasons.get("413", 0) == limited


def test_dropped_connections_on_reads_are_retried(emu: EmulatorHandle) -> None:
    with make_client(emu, retries=10) as client:
        # Seeded, so every run meets the same drops; with seed 1 the first GET is dropped.
        emu.set_faults(drop_before=0.25, methods="GET", seed=1)
        listed = [len(list(client.images())) for _ in range(40)]
        assert len(set(listed)) == 1
        reasons = client.stats.retry_reasons
        assert sum(reasons.values()) > 0
        assert set(reasons) <= {"RemoteProtocolError", "ReadError", "ConnectError"}


@pytest.mark.parametrize("call", ["get_image", "get_task", "verify_export"])
def test_a_body_cut_short_is_asked_again(emu: EmulatorHandle, call: str) -> None:
    with make_client(emu) as c:
        task = c.export(SMALL, fresh_container(), create_container=True)
        cuts = emu.stats()["faults"].get("cut_body", 0)
        # Seeded: the first answer on the path is cut halfway, the next one is whole (the
        # export's segments after its listing meet cuts too: they resume with Range, as ever).
        path = {"get_image": "/v2/images/", "get_task": "/v2/tasks/", "verify_export": "/v1/"}
        emu.set_faults(cut_body=0.5, seed=1, methods="GET", paths=path[call])
        try:
            if call == "get_image":
                assert c.get_image(SMALL).id == SMALL
            elif call == "get_task":
                assert c.get_task(task.id).status is TaskStatus.SUCCESS
            else:
                assert c.verify_export(task).ok
        finally:
            clear_faults(emu)
        assert emu.stats()["faults"].get("cut_body", 0) > cuts
        # The cut answer was asked again by the transport, like a dropped connection.
        assert c.stats.retries >= 1
        assert set(c.stats.retry_reasons) <= {"RemoteProtocolError", "ReadError"}


def test_post_answer_lost_is_reconciled_without_a_duplicate(client: imgtools.Client,
                                                            emu: EmulatorHandle) -> None:
    container = fresh_container()
    client.begin_export(DB, fresh_container(), create_container=True)  # an unrelated task
    before = tasks_created(emu)
    emu.set_faults(drop_after=1.0, paths="/v2/tasks", methods="POST")
    task = client.begin_export(DB, container, create_container=True)
    clear_faults(emu)
    assert tasks_created(emu) == before + 1  # the service made it once, and only once
    assert task.task is not None
    assert task.task.image_id == DB and task.task.container == container
    assert task.wait().status is TaskStatus.SUCCESS


def test_post_dropped_unhandled_gives_export_not_confirmed(client: imgtools.Client,
                                                           emu: EmulatorHandle) -> None:
    before = tasks_created(emu)
    emu.set_faults(drop_before=1.0, paths="/v2/tasks", methods="POST")
    container = fresh_container()
    with pytest.raises(ExportNotConfirmed) as info:
        client.begin_export(WEB, container, create_container=True)
    message = str(info.value)
    assert "client.tasks(type='export')" in message and f"{container}/{WEB}.vhd" in message
    assert tasks_created(emu) == before  # and nothing was sent again blindly


def test_post_503_is_reconciled_then_resent(emu: EmulatorHandle) -> None:
    before = tasks_created(emu)
    with make_client(emu, retries=2) as client:
        emu.set_faults(error_503=1.0, paths="/v2/tasks", methods="POST")
        with pytest.raises(ExportNotConfirmed):
            client.begin_export(SMALL, fresh_container(), create_container=True)
        assert tasks_created(emu) == before
        # Each refusal was followed by a listing that found nothing, then one resend.
        assert client.stats.retry_reasons.get("POST 503", 0) == 2
    # A third of the POSTs refused: every export is still created exactly once.
    with make_client(emu, retries=10) as client:
        emu.set_faults(error_503=0.3, paths="/v2/tasks", methods="POST")
        handles = [client.begin_export(SMALL, fresh_container(), create_container=True)
                   for _ in range(6)]
        clear_faults(emu)
        assert tasks_created(emu) == before + 6
        assert len({h.id for h in handles}) == 6


def test_a_lost_post_that_cannot_be_reconciled_is_not_confirmed_and_found_later(
        emu: EmulatorHandle) -> None:
    container = fresh_container()
    before = tasks_created(emu)
    with make_client(emu, retries=1) as c:
        # Every answer on /v2/tasks is lost: the POST's, and the listing's that looks for it.
        emu.set_faults(paths="/v2/tasks", drop_after=1.0)
        began = datetime.now(UTC)
        try:
            with pytest.raises(ExportNotConfirmed) as info:
                c.begin_export(SMALL, container, create_container=True)
        finally:
            clear_faults(emu)
        error = info.value
        assert tasks_created(emu) == before + 1  # the POST did make the task
        assert (error.image_id, error.container, error.task_type) == (SMALL, container, "export")
        assert began - timedelta(seconds=1) <= error.posted_at <= datetime.now(UTC)
        assert "looking for the task failed" in str(error) and "lookup()" in str(error)
        found = error.lookup()
        assert found is not None and found.task is not None
        assert (found.task.image_id, found.task.container) == (SMALL, container)
        assert error.lookup().id == found.id  # the same task every time
        # Asked again, the client returns that task (its export may be done by now: the
        # preflight would refuse it) and sends no second POST.
        again = c.begin_export(SMALL, container, create_container=True)
        assert again.id == found.id and tasks_created(emu) == before + 1
        assert again.wait().status is TaskStatus.SUCCESS


def test_asked_again_after_not_confirmed_the_same_client_finds_the_task_first(
        emu: EmulatorHandle) -> None:
    container = fresh_container()
    before = tasks_created(emu)
    with make_client(emu, retries=1) as c:
        emu.set_faults(paths="/v2/tasks", drop_after=1.0)
        try:
            with pytest.raises(ExportNotConfirmed):
                c.begin_export(SMALL, container, create_container=True)
        finally:
            clear_faults(emu)
        again = c.begin_export(SMALL, container, create_container=True)
        assert tasks_created(emu) == before + 1
        assert again.task is not None and again.task.container == container


@pytest.fixture(scope="module")
def slow_emu() -> Iterator[EmulatorHandle]:
    """Tasks stay pending for a minute: live while a second client asks."""
    with start_emulator(config=FAST.replace(pending_delay=60.0), subprocess=True) as handle:
        yield handle


def test_a_new_process_asking_again_gets_the_live_task(slow_emu: EmulatorHandle,
                                                       tmp_path: Path) -> None:
    container = fresh_container()
    log = TaskLog(tmp_path / "audit.sqlite")
    with make_client(slow_emu, log=log) as first:
        task = first.begin_export(WEB, container, create_container=True)
        other = first.begin_export(DB, fresh_container(), create_container=True)
    before = tasks_created(slow_emu)
    # A new client (a new process) knows nothing of the first; the audit log knows the other
    # task's input, so only unknown live tasks are fetched in full.
    with make_client(slow_emu, log=TaskLog(tmp_path / "audit.sqlite"),
                     transport=(recorder := Recorder())) as second:
        again = second.begin_export(WEB, container, create_container=True)
        fetched = {r.url.path.rsplit("/", 1)[1] for r in recorder.requests
                   if r.method == "GET" and r.url.path.startswith("/v2/tasks/")}
    assert again.id == task.id and tasks_created(slow_emu) == before
    assert other.id not in fetched
    # Without the preflight nothing is looked for: a second task is made on purpose.
    with make_client(slow_emu) as third:
        third.begin_export(WEB, container, preflight=False)
    assert tasks_created(slow_emu) == before + 1


def test_a_refused_reconciliation_is_folded_into_not_confirmed() -> None:
    class Refusing(FakeTasks):
        def __call__(self, request: httpx.Request) -> httpx.Response:
            if request.method == "GET":  # a bare token that expired meanwhile
                return httpx.Response(401, json={"message": "token expired"})
            return super().__call__(request)

    fake = Refusing(fail_with=httpx.ReadError("reset"))
    with mock_client(fake) as c:
        with pytest.raises(ExportNotConfirmed) as info:
            c.begin_export(WEB, "exports", preflight=False)
        assert "401" in str(info.value) and "t0k3n" not in str(info.value)
        # Asked again, it looks first; looking fails again, so nothing is sent blindly.
        with pytest.raises(ExportNotConfirmed) as again:
            c.begin_export(WEB, "exports", preflight=False)
        assert again.value.posted_at == info.value.posted_at  # the first attempt's time
    assert fake.posts == 1


@pytest.mark.anyio
async def test_the_async_twin_folds_and_looks_up_alike() -> None:
    class Flaky(FakeTasks):
        """Lists fail with 502 until told otherwise."""

        broken = True

        def __call__(self, request: httpx.Request) -> httpx.Response:
            if request.method == "GET" and self.broken:
                return httpx.Response(502, json={"message": "bad gateway"})
            return super().__call__(request)

    fake = Flaky(fail_with=httpx.ReadTimeout("timed out"))
    client = imgtools.AsyncClient(endpoint="http://127.0.0.1:9/v2", token="t0k3n-secret",
                                  transport=httpx.MockTransport(fake), log=False, retries=0)
    async with client:
        with pytest.raises(ExportNotConfirmed) as info:
            await client.begin_export(WEB, "exports", preflight=False)
        assert "502" in str(info.value) and info.value.container == "exports"
        fake.broken = False
        found = await info.value.lookup()
        assert found is not None and found.id == fake.tasks[-1]["id"]
        again = await client.begin_export(WEB, "exports", preflight=False)
        assert again.id == found.id
    assert fake.posts == 1


def test_post_rate_limited_is_resent(client: imgtools.Client, emu: EmulatorHandle) -> None:
    before = tasks_created(emu)
    emu.set_faults(rate_limit=2.0, rate_limit_status=429, paths="/v2/tasks", methods="POST")
    handles = [client.begin_export(SMALL, fresh_container(), create_container=True)
               for _ in range(6)]
    clear_faults(emu)
    assert tasks_created(emu) == before + 6
    assert len({h.id for h in handles}) == 6
    assert client.stats.rate_limited > 0


# -- lost POST answers the emulator cannot produce: MockTransport -----------------------------


class FakeTasks:
    """Just enough of /v2/tasks for reconciliation: POST creates, then the answer is lost."""

    def __init__(self, *, server_clock_offset: float = 0.0, fail_with: Exception | int) -> None:
        self.tasks: list[dict[str, Any]] = []
        self.offset = server_clock_offset
        self.fail_with = fail_with
        self.posts = 0

    def add(self, image: str, container: str, *, age: float = 0.0,
            type_: str = "export") -> dict[str, Any]:
        now = datetime.now(UTC) + timedelta(seconds=self.offset - age)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        task = {"id": f"{len(self.tasks):08d}-0000-4000-8000-000000000000", "type": type_,
                "status": "pending", "owner": "100001", "created_at": stamp,
                "updated_at": stamp, "message": "",
                "input": {"image_uuid": image, "receiving_swift_container": container}}
        self.tasks.append(task)
        return task

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST" and path == "/v2/tasks":
            self.posts += 1
            body = json.loads(request.content)
            self.add(body["input"]["image_uuid"], body["input"]["receiving_swift_container"])
            if isinstance(self.fail_with, int):
                return httpx.Response(self.fail_with, json={"message": "gateway trouble"})
            raise self.fail_with
        if request.method == "GET" and path == "/v2/tasks":
            newest = sorted(self.tasks, key=lambda t: t["created_at"], reverse=True)
            stubs = [{k: v for k, v in t.items() if k not in ("input", "message")}
                     for t in newest]
            return httpx.Response(200, json={"tasks": stubs})
        if request.method == "GET" and path.startswith("/v2/tasks/"):
            for task in self.tasks:
                if task["id"] == path.rsplit("/", 1)[1]:
                    return httpx.Response(200, json=task)
            return httpx.Response(404, json={"message": "no such task"})
        return httpx.Response(500)


def mock_client(fake: FakeTasks) -> imgtools.Client:
    c = imgtools.connect(endpoint="http://127.0.0.1:9/v2", token="t0k3n-secret",
                         transport=httpx.MockTransport(fake), log=False)
    return c


@pytest.mark.parametrize("failure", [httpx.ReadTimeout("timed out"), httpx.ReadError("reset"),
                                     httpx.RemoteProtocolError("closed"), 500, 502, 504])
def test_lost_post_finds_its_task_among_others(failure: Exception | int) -> None:
    fake = FakeTasks(fail_with=failure)
    fake.add(WEB, "exports", age=30)  # the same input, but from an earlier export
    fake.add(DB, "exports")  # another image
    fake.add(WEB, "other")  # another container
    fake.add(WEB, "exports", type_="import")
    with mock_client(fake) as c:
        task = c.begin_export(WEB, "exports", preflight=False)
    assert fake.posts == 1  # never sent twice
    assert task.id == fake.tasks[-1]["id"]
    assert task.task is not None and task.task.created_at >= datetime.now(UTC) - timedelta(60)


def test_lost_post_with_a_server_clock_behind_ours() -> None:
    fake = FakeTasks(fail_with=httpx.ReadTimeout("timed out"), server_clock_offset=-90)
    with mock_client(fake) as c:
        task = c.begin_export(WEB, "exports", preflight=False)
    assert task.id == fake.tasks[-1]["id"] and fake.posts == 1


def test_a_task_is_claimed_once() -> None:
    # Two lost POSTs for the same image and container must not both claim the same task.
    fake = FakeTasks(fail_with=httpx.ReadTimeout("timed out"))
    with mock_client(fake) as c:
        first = c.begin_export(WEB, "exports", preflight=False)
        second = c.begin_export(WEB, "exports", preflight=False)
    assert first.id != second.id and fake.posts == 2


def test_lost_post_not_found_says_what_to_check() -> None:
    class Vanishing(FakeTasks):
        def add(self, image: str, container: str, *, age: float = 0.0,
                type_: str = "export") -> dict[str, Any]:
            return {}  # the POST never took effect

    fake = Vanishing(fail_with=504)
    with mock_client(fake) as c, pytest.raises(ExportNotConfirmed) as info:
        c.begin_export(WEB, "exports", preflight=False)
    assert fake.posts == 1
    assert "504" in str(info.value) and "t0k3n" not in str(info.value)

"""Transfers against the emulator over sockets: ORD -> IAD end to end (bytes, metadata,
lineage), to another account, an existing export reused, resumes after a stop at every step
(never a second export or import, only missing segments copied), cleanup never before the
import succeeded, bad input refused before any request, async, many at once."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from typing import Any

import httpx
import pytest

import imgtools
from imgtools import ValidationError
from imgtools import transfer as transfer_module
from imgtools._copy import THREAD_PREFIX
from imgtools.emulator import EmulatorHandle
from imgtools.transfer import (
    STEPS,
    AsyncTransfer,
    TransferFailed,
    TransferRefused,
    TransferStore,
    came_from,
    lineage_of,
    transfers_frame,
    went_to,
)
from tests.client_support import (
    DB,
    WEB,
    WINDOWS,
    AsyncRecorder,
    Recorder,
    fresh_container,
    live_threads,
    make_client,
    tasks_created,
)


@pytest.fixture(scope="module")
def emu(emulator_in_subprocess: EmulatorHandle) -> EmulatorHandle:
    """This module's emulator: the client tests' one, in a subprocess (tests/conftest.py)."""
    return emulator_in_subprocess


PATCH = "application/openstack-images-v2.1-json-patch"


class Killed(BaseException):
    """Stands for the process dying (not an ``Exception``: nothing may swallow it)."""


def _go(client: imgtools.Client, image: str, store: TransferStore, **options: Any) -> Any:
    options.setdefault("to", "IAD")
    options.setdefault("container", fresh_container("t"))
    return client.transfer(image, listing_delay=0, store=store, **options)


def _bytes(client: imgtools.Client, image_id: str) -> bytes:
    return b"".join(client.image_file(image_id))


def _assembled(client: imgtools.Client, location: str) -> bytes:
    container, name = location.split("/", 1)
    response = client._storage.get(f"{container}/{name}")
    response.raise_for_status()
    return response.content


def _objects(client: imgtools.Client, container: str) -> list[str]:
    if not client.files.container_exists(container):
        return []
    return [o.name for o in client.files.objects(container)]


def _patch(client: imgtools.Client, image_id: str, ops: list[dict[str, Any]]) -> None:
    response = client._http.patch(f"images/{image_id}", content=json.dumps(ops).encode(),
                                  headers={"Content-Type": PATCH})
    response.raise_for_status()


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


# -- end to end --------------------------------------------------------------------------------


def test_ord_to_iad_end_to_end(emu: EmulatorHandle, client: imgtools.Client,
                               iad: imgtools.Client, store: TransferStore) -> None:
    _patch(client, WEB, [{"op": "add", "path": "/os_version", "value": "22.04"},
                         {"op": "add", "path": "/team", "value": "blue"}])
    source = client.get_image(WEB)
    created = tasks_created(emu)
    seen: list[tuple[str, str]] = []
    handle = _go(client, WEB, store, on_step=lambda s, o: seen.append((s, o)))
    rec = handle.record
    assert rec.status == "done" and handle.status == "done" and rec.step == "cleanup"
    assert tasks_created(emu) == created + 2  # one export, one import
    assert seen == [(s, o) for s in STEPS for o in ("running", "done")]
    # The new image holds exactly the exported bytes, and says so in its checksum.
    new = iad.get_image(rec.target_image or "")
    exported = _assembled(client, rec.export_location or "")
    assert _bytes(iad, new.id) == exported
    assert (new.size, new.checksum) == (len(exported), _md5(exported))
    assert (rec.copy_bytes, rec.copy_md5) == (len(exported), _md5(exported))
    assert new.name == source.name
    # Metadata: the chosen properties, tags, the user's key, and the coordinating ones.
    props = new.properties
    assert props["os_distro"] == source.properties["os_distro"] == "ubuntu"
    assert props["os_version"] == "22.04" and props["team"] == "blue"
    assert sorted(props["tags"]) == sorted(source.properties["tags"])
    assert props["imgtools_source_region"] == "ORD"
    assert props["imgtools_source_account"] == "100001"
    assert props["imgtools_source_image"] == WEB
    assert props["imgtools_source_export_task"] == rec.export_task
    assert props["imgtools_source_transfer"] == rec.id
    # Lineage: the record, the frame, both questions.
    assert (rec.source_region, rec.source_account, rec.source_image) == ("ORD", "100001", WEB)
    assert (rec.target_region, rec.target_account) == ("IAD", "100001")
    assert rec.copy_segments == 4 and rec.copy_copied_bytes == len(exported)
    assert rec.copy_retries == 0 and rec.copy_seconds > 0
    steps = handle.steps()
    assert [s.step for s in steps] == list(STEPS)
    assert all(s.outcome == "done" and s.ended_at is not None and s.ended_at >= s.started_at
               for s in steps)
    frame = transfers_frame(store=store)
    row = frame[frame["id"] == rec.id].iloc[0]
    for column in ("source_region", "source_account", "source_image", "export_task",
                   "import_task", "target_region", "target_account", "target_image"):
        assert isinstance(row[column], str) and row[column]
    assert str(frame["copy_bytes"].dtype) == "Int64"
    assert str(frame["started_at"].dtype) == "datetime64[ns, UTC]"
    assert [r.id for r in came_from(new.id, store=store)] == [rec.id]
    assert rec.id in [r.id for r in went_to(WEB, store=store)]
    assert lineage_of(new.id, store=store)["went_to"] == []


def test_to_another_account(emu: EmulatorHandle, client: imgtools.Client,
                            store: TransferStore) -> None:
    with make_client(emu, username="other", api_key="other-key", region="DFW") as other:
        handle = _go(client, DB, store, to=other, name="db copy")
        rec = handle.record
        assert (rec.target_account, rec.target_region) == ("100002", "DFW")
        new = other.get_image(rec.target_image or "")
        assert new.owner == "100002" and new.name == "db copy"
        assert _bytes(other, new.id) == _assembled(client, rec.export_location or "")
        assert new.properties["imgtools_source_account"] == "100001"


def test_an_existing_verified_export_is_reused(emu: EmulatorHandle, client: imgtools.Client,
                                               store: TransferStore) -> None:
    container = fresh_container("reuse")
    task = client.export(DB, container, create_container=True, timeout=60)
    created = tasks_created(emu)
    handle = _go(client, DB, store, container=container)
    assert tasks_created(emu) == created + 1  # the import only
    rec = handle.record
    assert rec.export_reused and rec.export_task == task.id
    outcomes = {s.step: s.outcome for s in handle.steps()}
    assert outcomes["export"] == "reused" and outcomes["export_wait"] == "reused"
    assert rec.status == "done"


def test_an_incomplete_export_in_the_way_is_refused(client: imgtools.Client,
                                                    store: TransferStore) -> None:
    container = fresh_container("partial")
    client.files.create_container(container)
    client._storage.put(f"{container}/{DB}.vhd", content=b"",
                        headers={"X-Object-Manifest": f"{container}/{DB}.vhd-"})
    client._storage.put(f"{container}/{DB}.vhd-00002", content=b"x" * 10)
    with pytest.raises(TransferFailed) as caught:
        _go(client, DB, store, container=container)
    assert caught.value.step == "export"
    assert isinstance(caught.value.__cause__, TransferRefused)


# -- resuming ----------------------------------------------------------------------------------


@pytest.mark.parametrize("step", STEPS)
def test_resume_after_a_stop_at_each_step(emu: EmulatorHandle, client: imgtools.Client,
                                          iad: imgtools.Client, store: TransferStore,
                                          step: str) -> None:
    created = tasks_created(emu)

    def stop(at: str, outcome: str) -> None:
        if (at, outcome) == (step, "running"):
            raise Killed

    with pytest.raises(Killed):
        _go(client, WEB, store, cleanup="both", on_step=stop)
    [listed] = [r for r in store.records() if r.source_image == WEB
                and r.status != "done"]
    assert listed.status == "running"  # a killed process leaves it as it was
    assert listed.step == (None if step == "preflight" else STEPS[STEPS.index(step) - 1])
    # A new client (a new process) resumes it.
    with make_client(emu) as again:
        handle = again.resume_transfer(listed.id, listing_delay=0, store=store)
    rec = handle.record
    assert rec.status == "done"
    assert tasks_created(emu) == created + 2
    assert iad.get_image(rec.target_image or "").checksum == rec.copy_md5
    if STEPS.index(step) > STEPS.index("copy"):
        assert rec.copy_copied_bytes == rec.copy_bytes  # nothing copied twice


class KillAfterPost(httpx.BaseTransport):
    """Sends every request; after the answer to a POST creating a task of ``kind``, dies
    (once): the task exists, the caller never saved its id."""

    def __init__(self, kind: str) -> None:
        self.inner = httpx.HTTPTransport()
        self.kind = kind
        self.fired = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if not self.fired and request.method == "POST" and request.url.path.endswith("/tasks") \
                and json.loads(request.content).get("type") == self.kind:
            response.read()
            self.fired = True
            raise Killed
        return response

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize("kind", ["export", "import"])
def test_a_stop_between_the_post_and_its_record_makes_no_second_task(
        emu: EmulatorHandle, store: TransferStore, iad: imgtools.Client, kind: str) -> None:
    created = tasks_created(emu)
    with make_client(emu, transport=KillAfterPost(kind)) as dying, pytest.raises(Killed):
        _go(dying, DB, store)
    [rec] = [r for r in store.records() if r.status == "failed"]
    assert (rec.export_task if kind == "export" else rec.import_task) is None
    assert tasks_created(emu) == created + (1 if kind == "export" else 2)
    with make_client(emu) as again:
        done = again.resume_transfer(rec.id, listing_delay=0, store=store).record
    assert done.status == "done"
    assert tasks_created(emu) == created + 2
    assert iad.get_image(done.target_image or "").checksum == done.copy_md5


def test_a_copy_stopped_midway_copies_only_what_is_missing(
        emu: EmulatorHandle, client: imgtools.Client, store: TransferStore) -> None:
    total = client.get_image(WEB).size or 0

    def progress(done: int, _total: int) -> None:
        if done > total // 2:  # segments 1 and 2 (of 4, one at a time) are at the target
            raise Killed

    with pytest.raises(Killed):
        _go(client, WEB, store, workers=1, progress=progress)
    [rec] = [r for r in store.records() if r.status == "failed"]
    assert rec.step == "export_wait" and rec.error is not None and "copy" in rec.error
    with make_client(emu) as again:
        done = again.resume_transfer(rec.id, listing_delay=0, store=store).record
    assert done.status == "done"
    copy_runs = [s for s in store.steps(rec.id) if s.step == "copy"]
    assert [s.outcome for s in copy_runs] == ["failed", "done"]
    assert copy_runs[1].detail is not None and "2 already there" in copy_runs[1].detail
    assert done.copy_copied_bytes == (done.copy_bytes or 0) // 2


def test_a_failed_import_keeps_everything_and_a_resume_imports_again(
        emu: EmulatorHandle, client: imgtools.Client, iad: imgtools.Client,
        store: TransferStore) -> None:
    container = fresh_container("keep")
    handle = client.transfer(DB, to="IAD", container=container, cleanup="both",
                             listing_delay=0, store=store, wait=False)
    handle.run(until="import")
    emu.set_faults(task_failure=1.0, seed=3)
    with pytest.raises(TransferFailed) as caught:
        handle.run()
    assert caught.value.step == "import_wait"
    assert isinstance(caught.value.__cause__, imgtools.ImportFailed)
    # Cleanup never ran: the export and the copy are both still there.
    assert f"{DB}.vhd" in _objects(client, container)
    assert f"{DB}.vhd" in _objects(iad, container)
    assert "cleanup" not in {s.step for s in handle.steps()}
    emu.set_faults(task_failure=0.0)
    created = tasks_created(emu)
    rec = handle.resume()
    assert rec.status == "done" and tasks_created(emu) == created + 1
    # Cleanup, after the import: nothing left on either side, the image intact.
    assert _objects(client, container) == [] and _objects(iad, container) == []
    assert iad.get_image(rec.target_image or "").checksum == rec.copy_md5


# -- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("options", "field"), [
    ({"image_id": "not-a-uuid"}, "image_id"),
    ({"cleanup": "everything"}, "cleanup"),
    ({"properties": ["com.rackspace__1__options"]}, "properties"),
    ({"container": "a/b"}, "container, target_container"),  # the target defaults to it
    ({"to": ""}, "to"),
    ({"name": ""}, "name"),
])
def test_bad_input_is_refused_before_any_request(emu: EmulatorHandle, store: TransferStore,
                                                 options: dict[str, Any], field: str) -> None:
    with make_client(emu, transport=(recorder := Recorder())) as c:
        sent = len(recorder.requests)
        args: dict[str, Any] = {"image_id": WEB, "to": "IAD", "container": "ok"} | options
        image = args.pop("image_id")
        with pytest.raises(ValidationError) as caught:
            c.transfer(image, store=store, **args)
        assert caught.value.field == field
        assert len(recorder.requests) == sent
    assert store.records() == []


def test_a_windows_image_is_refused_at_preflight(client: imgtools.Client,
                                                 store: TransferStore) -> None:
    with pytest.raises(TransferFailed) as caught:
        _go(client, WINDOWS, store)
    assert caught.value.step == "preflight"
    assert isinstance(caught.value.__cause__, imgtools.PreflightError)
    [rec] = store.records()
    assert rec.status == "failed" and rec.export_task is None


# -- async, many -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_async_transfer(emu: EmulatorHandle, store: TransferStore) -> None:
    c = await imgtools.connect_async(username="demo", api_key="demo-key",
                                     identity_url=emu.identity_url, log=False,
                                     poll=imgtools.PollPolicy.fast())
    async with c:
        handle = await c.transfer(DB, to="DFW", container=fresh_container("a"),
                                  listing_delay=0, store=store)
        rec = handle.record
        assert rec.status == "done" and rec.target_region == "DFW"
        async with c.in_region("DFW") as dfw:
            image = await dfw.get_image(rec.target_image or "")
        assert image.checksum == rec.copy_md5


@pytest.mark.anyio
async def test_a_cancelled_async_transfer_records_the_step_and_resumes(
        emu: EmulatorHandle, store: TransferStore) -> None:
    """Cancelling the task (as a closed notebook cell does) mid-wait: the step is recorded as
    failed, nothing later runs, and a resume finishes with no second export."""
    c = await imgtools.connect_async(username="demo", api_key="demo-key",
                                     identity_url=emu.identity_url, log=False,
                                     poll=imgtools.PollPolicy.fast())
    async with c:
        running: list[asyncio.Task[Any]] = []

        def cancel_once(step: str, state: str) -> None:
            if (step, state) == ("export_wait", "running") and len(running) == 1:
                running[0].cancel()
                running.append(running[0])

        handle = await c.transfer(DB, to="DFW", container=fresh_container("c"),
                                  listing_delay=0, store=store, on_step=cancel_once,
                                  wait=False)
        running.append(asyncio.create_task(handle.run()))
        with pytest.raises(asyncio.CancelledError):
            await running[0]
        rec = store.get(handle.id)
        assert rec is not None and rec.status == "failed" and rec.step == "export"
        assert rec.error == "export_wait: CancelledError"
        assert [s.step for s in handle.steps()][-1] == "export_wait"
        created = tasks_created(emu)
        done = await handle.resume()
    assert done.status == "done" and tasks_created(emu) == created + 1  # the import only


@pytest.mark.anyio
@pytest.mark.parametrize("step", ["copy", "manifest"])
async def test_a_transfer_cancelled_mid_read_ends_its_threads_first_and_resumes(
        emu: EmulatorHandle, store: TransferStore, monkeypatch: pytest.MonkeyPatch,
        step: str) -> None:
    """Cancelling an ``AsyncTransfer`` while its copy streams segments (or while the
    manifest step reads the copy back): the blocking call on its worker thread is stopped
    and has returned before the task ends, so no copy or read goes on behind a resume."""
    loop = asyncio.get_running_loop()
    running: list[asyncio.Task[Any]] = []
    ended: list[str] = []
    task_ended = threading.Event()
    real_copy, real_fetch = transfer_module.copy_export, transfer_module._fetch_segment

    def cancel_then_hold(stop: threading.Event | None) -> None:
        # Held at the first bytes until the cancellation has reached the call (its stop
        # event set): where the stop lands does not hang on thread timing.
        if len(running) == 1:
            running.append(running[0])
            loop.call_soon_threadsafe(running[0].cancel)
        # A call given no stop event cannot be stopped: it goes on after the task has ended.
        (task_ended if stop is None else stop).wait(60)

    def held_copy(*args: Any, progress: Any = None, cancel: threading.Event | None = None,
                  **options: Any) -> Any:
        def hold(done: int, total: int) -> None:
            if done and step == "copy" and len(running) < 3:
                cancel_then_hold(cancel)
        try:
            return real_copy(*args, progress=hold, **options,
                             **({} if cancel is None else {"cancel": cancel}))
        finally:
            ended.append("copy")

    def held_fetch(http: Any, container: str, seg: Any, sink: Any, **options: Any) -> Any:
        if step == "manifest" and len(running) < 3:
            cancel_then_hold(getattr(sink, "stop", None))
        try:
            return real_fetch(http, container, seg, sink, **options)
        finally:
            ended.append("manifest")

    monkeypatch.setattr(transfer_module, "copy_export", held_copy)
    monkeypatch.setattr(transfer_module, "_fetch_segment", held_fetch)
    c = await imgtools.connect_async(username="demo", api_key="demo-key",
                                     identity_url=emu.identity_url, log=False,
                                     poll=imgtools.PollPolicy.fast())
    async with c:
        handle = await c.transfer(WEB, to="DFW", container=fresh_container("s"),
                                  listing_delay=0, store=store, wait=False)
        running.append(asyncio.create_task(handle.run()))
        running[0].add_done_callback(lambda _task: task_ended.set())
        with pytest.raises(asyncio.CancelledError):
            await running[0]
        assert ended and ended[-1] == step  # the stopped call had returned when the task ended
        assert live_threads(THREAD_PREFIX) == []
        rec = store.get(handle.id)
        assert rec is not None and rec.status == "failed"
        assert rec.error == f"{step}: CancelledError"
        running.append(running[0])  # no more stops
        done = await handle.resume()
        async with c.in_region("DFW") as dfw:
            image = await dfw.get_image(done.target_image or "")
    assert done.status == "done" and image.checksum == done.copy_md5
    if step == "copy":  # held at its first bytes, the stopped copy stored no segment
        assert done.copy_copied_bytes == done.copy_bytes


def _batch_listed(emu: EmulatorHandle, requests: list[httpx.Request]) -> set[str]:
    """The regions whose task list was read by status after their last task was created:
    only ``wait_all``'s batch polling does that (the creations' own checks list before their
    POST; a single wait GETs its task)."""
    listed = set()
    for region in ("ORD", "IAD"):
        port = int(emu.region_url(region).rsplit(":", 1)[1])
        here = [r for r in requests if r.url.port == port and r.url.path.endswith("/v2/tasks")]
        posts = [i for i, r in enumerate(here) if r.method == "POST"]
        if posts and any(r.method == "GET" and "status" in r.url.params
                         for r in here[posts[-1] + 1:]):
            listed.add(region)
    return listed


def test_transfer_all(emu: EmulatorHandle, iad: imgtools.Client, store: TransferStore) -> None:
    created = tasks_created(emu)
    recorder = Recorder()
    with make_client(emu, transport=recorder) as client:
        handles = client.transfer_all([WEB, DB, WINDOWS], to="IAD",
                                      container=fresh_container("m"), listing_delay=0,
                                      store=store)
    assert [h.status for h in handles] == ["done", "done", "failed"]
    assert (handles[2].record.error or "").startswith("preflight: NotExportable")
    assert tasks_created(emu) == created + 4
    for h in handles[:2]:
        assert iad.get_image(h.target_image or "").checksum == h.record.copy_md5
    # The exports were followed by batch polling at the source, the imports at the target.
    assert _batch_listed(emu, recorder.requests) == {"ORD", "IAD"}


@pytest.mark.anyio
async def test_async_transfer_all(emu: EmulatorHandle, iad: imgtools.Client,
                                  store: TransferStore) -> None:
    created = tasks_created(emu)
    recorder = AsyncRecorder()
    c = await imgtools.connect_async(username="demo", api_key="demo-key",
                                     identity_url=emu.identity_url, log=False,
                                     poll=imgtools.PollPolicy.fast(), transport=recorder)
    async with c:
        handles = await c.transfer_all([WINDOWS, DB, WEB], to="IAD", cleanup="both",
                                       container=fresh_container("n"), listing_delay=0,
                                       store=store)
    assert all(isinstance(h, AsyncTransfer) for h in handles)
    assert [h.status for h in handles] == ["failed", "done", "done"]
    assert handles[0].record.step is None
    assert (handles[0].record.error or "").startswith("preflight: NotExportable")
    assert tasks_created(emu) == created + 4
    for h in handles[1:]:
        rec = h.record
        assert rec.cleaned and iad.get_image(rec.target_image or "").checksum == rec.copy_md5
        assert [s.step for s in h.steps()] == list(STEPS)
    assert _batch_listed(emu, recorder.requests) == {"ORD", "IAD"}


# -- ServiceNet --------------------------------------------------------------------------------


def test_servicenet_in_one_region_and_public_urls_across_regions(
        emu: EmulatorHandle, store: TransferStore) -> None:
    recorder = Recorder()
    with make_client(emu, servicenet=True, transport=recorder) as c, \
            make_client(emu, username="other", api_key="other-key", servicenet=True) as other:
        def storage_hosts() -> set[str]:
            return {str(r.url).split("/v1/")[0] for r in recorder.requests
                    if "/v1/" in str(r.url) and r.method == "PUT"}

        same = _go(c, DB, store, to=other).record
        assert same.servicenet and same.status == "done"
        assert other.get_image(same.target_image or "").checksum == same.copy_md5
        del recorder.requests[:]
        across = _go(c, DB, store, to="IAD").record
        assert not across.servicenet and across.status == "done"
        # The segments went to IAD's public storage URL, not to its ServiceNet one.
        iad_public = emu.storage_url("100001", "IAD").split("/v1/")[0]
        iad_snet = emu.storage_url("100001", "IAD", servicenet=True).split("/v1/")[0]
        assert iad_public in storage_hosts() and iad_snet not in storage_hosts()


def test_a_copy_failing_on_503s_resumes_once_they_stop(
        emu: EmulatorHandle, iad: imgtools.Client, store: TransferStore) -> None:
    with make_client(emu, retries=1) as client:  # few retries: the 503s win quickly
        handle = client.transfer(DB, to="IAD", container=fresh_container("f"),
                                 listing_delay=0, store=store, wait=False)
        handle.run(until="export_wait")
        created = tasks_created(emu)
        emu.set_faults(error_503=1.0, methods="PUT", paths="/v1/", seed=5)
        try:
            with pytest.raises(TransferFailed) as caught:
                handle.run()
        finally:
            emu.set_faults(error_503=0.0, methods="", paths="")
        assert caught.value.step == "copy" and handle.status == "failed"
        assert handle.record.step == "export_wait"
        rec = handle.resume()
    assert rec.status == "done" and tasks_created(emu) == created + 1
    assert iad.get_image(rec.target_image or "").checksum == rec.copy_md5


def test_the_waits_ride_out_5xx_answers_as_wait_does(
        emu: EmulatorHandle, iad: imgtools.Client, store: TransferStore) -> None:
    """With no transport retries, the export and import waits still meet 503s (seeded) on
    their task GETs and poll on until the task ends, as ``ExportTask.wait`` does."""
    with make_client(emu, retries=0) as client:
        handle = client.transfer(DB, to="IAD", container=fresh_container("w"),
                                 listing_delay=0, store=store, wait=False)
        handle.run(until="export")
        before = emu.stats()["faults"].get("error_503", 0)
        emu.set_faults(error_503=0.5, methods="GET", paths="/v2/tasks/", seed=7)
        try:
            rec = handle.run()
        finally:
            emu.set_faults(error_503=0.0, methods="", paths="")
    assert emu.stats()["faults"].get("error_503", 0) > before
    assert rec.status == "done"
    assert iad.get_image(rec.target_image or "").checksum == rec.copy_md5


@pytest.mark.parametrize("step", ["export", "import"])
def test_a_stop_after_the_task_id_was_saved_makes_no_second_task(
        emu: EmulatorHandle, client: imgtools.Client, store: TransferStore, step: str) -> None:
    """As a kill between saving the task id and ending the step leaves it: the step not
    ended, the id saved; resumed by the same client (which claimed the task: the lookups for
    other callers' tasks skip it)."""
    handle = client.transfer(DB, to="IAD", container=fresh_container("s"), listing_delay=0,
                             store=store, wait=False)
    handle.run(until=step)
    created = tasks_created(emu)
    rec = handle.record
    rec.step = STEPS[STEPS.index(step) - 1]
    store.save(rec)
    done = handle.resume()
    assert done.status == "done"
    assert tasks_created(emu) == created + (1 if step == "export" else 0)

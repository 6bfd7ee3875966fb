"""Cloud Files: containers and objects, verify_export and download_export against the emulator,
including a corrupted segment, a missing segment and an interrupted download."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import imgtools
from imgtools import (
    ChecksumMismatch,
    DownloadError,
    NotFound,
    Task,
    TaskFailed,
    ValidationError,
)
from imgtools import _files as files_module
from imgtools.emulator import EmulatorHandle, start_emulator
from tests.client_support import (
    DB,
    FAST,
    WEB,
    WINDOWS,
    Recorder,
    fresh_container,
    live_threads,
    make_client,
)

#: Seconds a held reading thread waits for the cancellation (a bound, not a measure).
REACHED = 60.0


@pytest.fixture(scope="module")
def emu(emulator_in_subprocess: EmulatorHandle) -> EmulatorHandle:
    """This module's emulator: the client tests' one, in a subprocess (tests/conftest.py)."""
    return emulator_in_subprocess


def _export(client: imgtools.Client, image_id: str = WEB) -> Task:
    return client.export(image_id, fresh_container("x"), create_container=True, timeout=60)


def _image_md5(client: imgtools.Client, image_id: str) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    for chunk in client.image_file(image_id):
        digest.update(chunk)
    return digest.hexdigest()


def _file_md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


# -- containers and objects -------------------------------------------------------------------


def test_create_head_and_list_containers(client: imgtools.Client) -> None:
    name = fresh_container("files")
    assert client.files.create_container(name) is True
    assert client.files.create_container(name) is False  # 202: already there
    info = client.files.head_container(name)
    assert (info.name, info.count, info.bytes) == (name, 0, 0)
    assert name in [c.name for c in client.files.containers()]
    assert list(client.files.objects(name)) == []  # Swift answers 204 for an empty container
    assert client.files.container_exists(name)
    assert not client.files.container_exists(name + "-nope")
    with pytest.raises(NotFound):
        client.files.head_container(name + "-nope")


@pytest.mark.parametrize("bad", ["", "a/b", "x" * 257])
def test_bad_container_name_sends_nothing(emu: EmulatorHandle, bad: str) -> None:
    recorder = Recorder()
    with make_client(emu, transport=recorder) as client:
        before = len(recorder.requests)
        with pytest.raises(ValidationError):
            client.files.create_container(bad)
        assert len(recorder.requests) == before


def test_objects_and_manifest_of_an_export(client: imgtools.Client) -> None:
    task = _export(client)
    container, name = files_module.split_location(task.export_location or "")
    manifest = client.files.head_object(container, name, manifest=True)
    assert manifest.bytes == 0
    assert manifest.manifest == f"{container}/{name}-"
    listed = list(client.files.objects(container, prefix=name + "-"))
    assert [o.name for o in listed] == [f"{name}-{n:05d}" for n in range(1, len(listed) + 1)]
    image = client.get_image(WEB)
    assert sum(o.bytes for o in listed) == image.size


# -- verify_export ----------------------------------------------------------------------------


def test_verify_export_ok(client: imgtools.Client) -> None:
    task = _export(client)
    seen: list[int] = []
    threads: set[int] = set()

    def progress(done: int, total: int) -> None:
        seen.append(done)
        threads.add(threading.get_ident())

    report = client.verify_export(task, progress=progress)
    image = client.get_image(WEB)
    assert report.ok, report.problems
    assert report.total_bytes == report.expected_bytes == image.size
    assert len(report.segments) > 1
    assert seen and seen[-1] == image.size
    assert seen == sorted(seen)  # segments read at once still count up in order
    assert len(threads) > 1
    assert "OK" in str(report)
    # By task id too, and by an ExportTask handle.
    assert client.verify_export(task.id).ok
    assert client.verify_export(client.resume(task.id)).ok


def test_a_stopped_verification_reads_no_further(client: imgtools.Client) -> None:
    task = _export(client)
    location = task.export_location
    assert location is not None
    segments = client.files.export_segments(location)[1]
    assert len(segments) > 2  # more than the workers: some are still to begin at the stop
    stop = threading.Event()
    seen: list[int] = []

    def progress(done: int, _total: int) -> None:
        seen.append(done)
        stop.set()  # at the first bytes: every read after this one ends, none begins

    with pytest.raises(files_module._Stopped):
        client.files._verify_export(location, expected_bytes=None, progress=progress,
                                    stop=stop)
    assert live_threads(files_module.VERIFY_THREADS) == []
    # At most the segments begun before the stop were counted, never all of them.
    assert 0 < max(seen) <= files_module.DEFAULT_DOWNLOAD_WORKERS * max(s.bytes for s in segments)
    assert max(seen) < sum(s.bytes for s in segments)


@pytest.mark.anyio
async def test_a_cancelled_async_verification_ends_its_threads_first(
        emu: EmulatorHandle, client: imgtools.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    location = _export(client).export_location
    assert location is not None
    loop = asyncio.get_running_loop()
    stops: list[threading.Event] = []  # the verification's own stop, as its hashers get it
    hasher_init = files_module._SegmentHasher.__init__

    def init(self: Any, seg: Any, tally: Any, stop: threading.Event) -> None:
        stops.append(stop)
        hasher_init(self, seg, tally, stop)

    monkeypatch.setattr(files_module._SegmentHasher, "__init__", init)
    running: list[asyncio.Task[Any]] = []
    readers: set[threading.Thread] = set()

    def progress(done: int, _total: int) -> None:
        readers.add(threading.current_thread())
        if len(running) == 1:
            running.append(running[0])
            loop.call_soon_threadsafe(running[0].cancel)
        # Held until the cancellation has reached the verification (so it cannot finish
        # first, whatever the machine's speed): then no read goes on.
        assert stops[0].wait(REACHED)

    options: dict[str, Any] = {"username": "demo", "api_key": "demo-key",
                               "identity_url": emu.identity_url, "log": False}
    async with imgtools.AsyncClient(**options) as aclient:
        running.append(asyncio.create_task(aclient.files.verify_export(location,
                                                                       progress=progress)))
        with pytest.raises(asyncio.CancelledError):
            await running[0]
        # The task ended after every thread that read for it.
        assert readers and not any(t.is_alive() for t in readers)
        assert live_threads(files_module.VERIFY_THREADS) == []


def test_verify_export_refuses_unfinished_and_failed_tasks(client: imgtools.Client) -> None:
    handle = client.begin_export(DB, fresh_container("pend"), create_container=True)
    pending = handle.task
    assert pending is not None and not pending.done
    with pytest.raises(ValidationError, match="wait for it"):
        client.verify_export(pending)
    handle.wait(timeout=60)
    failed = client.begin_export(WINDOWS, fresh_container("win"), create_container=True,
                                 preflight=False)
    with pytest.raises(TaskFailed):
        failed.wait(timeout=60)
    with pytest.raises(TaskFailed, match="no export"):
        client.verify_export(failed.id)


@pytest.fixture
def faulty_emu() -> Iterator[EmulatorHandle]:
    with start_emulator(config=FAST, subprocess=True) as handle:
        yield handle


def test_corrupt_segment_is_reported_and_refused(faulty_emu: EmulatorHandle,
                                                 tmp_path: Path) -> None:
    faulty_emu.set_faults(corrupt_segment=True)
    with make_client(faulty_emu) as client:
        task = _export(client)
        report = client.verify_export(task)
        assert not report.ok
        assert any("-00001" in p and "hashes to" in p for p in report.problems)
        dest = tmp_path / "bad.vhd"
        with pytest.raises(ChecksumMismatch) as caught:
            client.download_export(task, dest, progress=False, workers=1)
        assert caught.value.name.endswith("-00001")
        assert not dest.exists()  # nothing that looks complete


def _segments_path(emu: EmulatorHandle, task: Task) -> str:
    # The segments' GETs only: the container listing that comes first is left whole.
    return f"/v1/MossoCloudFS_{emu.tenant_of('demo')}/{task.export_location}-"


def test_connections_cut_mid_segment_resume_where_they_stopped(faulty_emu: EmulatorHandle,
                                                               tmp_path: Path) -> None:
    with make_client(faulty_emu) as client:
        task = _export(client)
        # Half the segment GETs break halfway: each is asked for again from where it stopped.
        # Seeded, so every run meets the same cuts; with seed 1 the first GET is cut.
        faulty_emu.set_faults(cut_body=0.5, paths=_segments_path(faulty_emu, task), seed=1)
        assert client.verify_export(task).ok  # verification resumes the same way
        dest = tmp_path / "flaky.vhd"
        result = client.download_export(task, dest, progress=False)
        cuts = faulty_emu.stats()["faults"].get("cut_body", 0)
        faulty_emu.clear_faults()
        assert cuts >= 1
        assert _file_md5(dest) == _image_md5(client, WEB)
        assert result.bytes == dest.stat().st_size


def test_a_connection_that_stops_bringing_bytes_fails_then_resumes(
        faulty_emu: EmulatorHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files_module, "STALL_BACKOFF", 0.0)
    # No transport retries: the download's own tries are what is under test.
    with make_client(faulty_emu, retries=0) as client:
        task = _export(client)
        segments = _segments_path(faulty_emu, task)
        # The first body breaks halfway; from then on no segment GET is answered at all.
        faulty_emu.set_faults(cut_body=1.0, paths=segments)
        switched: list[int] = []

        def progress(done: int, _total: int) -> None:
            if done and not switched:
                switched.append(done)
                faulty_emu.set_faults(drop_before=1.0, paths=segments)

        dest = tmp_path / "broken.vhd"
        with pytest.raises(imgtools.TransportError):
            client.download_export(task, dest, progress=progress, workers=1)
        faulty_emu.clear_faults()
        assert switched and not dest.exists()
        assert dest.with_name("broken.vhd.part.json").exists()  # what arrived is kept
        result = client.download_export(task, dest, progress=False)
        assert result.resumed_from > 0
        assert _file_md5(dest) == _image_md5(client, WEB)


def test_missing_segment_is_reported_and_refused(faulty_emu: EmulatorHandle,
                                                 tmp_path: Path) -> None:
    faulty_emu.set_faults(missing_segment=True)
    with make_client(faulty_emu) as client:
        task = _export(client)
        report = client.verify_export(task)
        assert not report.ok
        joined = " ".join(report.problems)
        assert "gaps" in joined
        assert "bytes, the image has" in joined
        dest = tmp_path / "short.vhd"
        with pytest.raises(DownloadError, match="gaps"):
            client.download_export(task, dest, progress=False)
        assert not dest.exists()
        assert not Path(str(dest) + ".part").exists()


def test_verify_missing_manifest(client: imgtools.Client) -> None:
    report = client.files.verify_export(fresh_container("none") + "/nothing.vhd")
    assert not report.ok
    assert "not found" in report.problems[0]


# -- download_export --------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 3])
def test_download_equals_the_image(client: imgtools.Client, tmp_path: Path,
                                   workers: int) -> None:
    task = _export(client)
    dest = tmp_path / "new" / "dir" / "web.vhd"  # folders are made as needed
    result = client.download_export(task, dest, progress=False, workers=workers)
    assert result.path == dest and result.resumed_from == 0
    assert result.bytes == dest.stat().st_size == client.get_image(WEB).size
    assert _file_md5(dest) == _image_md5(client, WEB)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["web.vhd"]  # no .part, journal


@pytest.mark.parametrize("fsync", [True, False])
def test_fsync_before_the_rename_when_asked(client: imgtools.Client, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch, fsync: bool) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        # Only the .part file, and before the rename: the final name must not exist yet.
        synced.append(os.fstat(fd).st_size)
        assert not dest.exists()
        real_fsync(fd)

    monkeypatch.setattr("imgtools._files.os.fsync", spy)
    dest = tmp_path / "web.vhd"
    location = _export(client).result["export_location"]
    result = client.files.download_export(location, dest, fsync=fsync)
    assert _file_md5(dest) == _image_md5(client, WEB)
    assert synced == ([result.bytes] if fsync else [])


class _Stop(Exception):
    pass


# -- segments cut into ranged pieces ----------------------------------------------------------


def _pieces_only(monkeypatch: pytest.MonkeyPatch) -> None:
    # Small pieces, so the emulator's 16 KiB segments are cut as a 1000 MiB one would be.
    monkeypatch.setattr(files_module, "DOWNLOAD_PIECE", 4096)


def test_segments_fewer_than_workers_are_fetched_as_ranges(emu: EmulatorHandle, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    _pieces_only(monkeypatch)
    recorder = Recorder()
    threads: set[int] = set()
    with make_client(emu, transport=recorder) as client:
        task = _export(client)
        _, segments = client.files.export_segments(task.export_location or "")
        dest = tmp_path / "web.vhd"
        before = len(recorder.requests)
        # Two pieces a worker: 8 workers cut 4 segments of 16 KiB into 4 ranges each.
        client.download_export(task, dest, workers=8,
                               progress=lambda d, t: threads.add(threading.get_ident()))
        assert _file_md5(dest) == _image_md5(client, WEB)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["web.vhd"]
    assert len(threads) > 1
    gets = [r for r in recorder.requests[before:] if r.method == "GET"
            and r.url.path.rsplit("/", 1)[-1].startswith(f"{WEB}.vhd-")]
    for seg in segments:
        ranges = sorted(_range_of(r, seg.bytes) for r in gets if r.url.path.endswith(seg.name))
        assert len(ranges) == 4
        assert ranges[0][0] == 0 and ranges[-1][1] == seg.bytes
        assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))  # no gap, no overlap
        assert all(r.headers["if-range"] == seg.md5 for r in gets
                   if r.url.path.endswith(seg.name))


def _range_of(request: Any, size: int) -> tuple[int, int]:
    first, _, last = request.headers["range"].removeprefix("bytes=").partition("-")
    return int(first), int(last) + 1 if last else size


@pytest.mark.parametrize("workers", [1, 8], ids=["whole segments", "pieces"])
def test_a_corrupt_segment_is_never_journaled_as_done(faulty_emu: EmulatorHandle,
                                                      tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      workers: int) -> None:
    _pieces_only(monkeypatch)
    # A journal step that divides the segment: its last checkpoint falls on its last byte.
    monkeypatch.setattr(files_module, "DEFAULT_DOWNLOAD_CHUNK", 1024)
    monkeypatch.setattr(files_module, "_JOURNAL_EVERY", 4096)
    journaled: list[dict[str, int]] = []
    save = files_module._Download._save_journal

    def spy(job: Any) -> None:
        journaled.append(dict(job.state))
        save(job)

    monkeypatch.setattr(files_module._Download, "_save_journal", spy)
    faulty_emu.set_faults(corrupt_segment=True)
    with make_client(faulty_emu) as client:
        task = _export(client)
        _, segments = client.files.export_segments(task.export_location or "")
        dest = tmp_path / "bad.vhd"
        with pytest.raises(ChecksumMismatch) as caught:
            client.download_export(task, dest, progress=False, workers=workers)
    bad = caught.value.name
    assert bad.endswith("-00001")
    size = next(s.bytes for s in segments if s.name == bad)
    # Not even for a moment: a crash then would leave a resume that trusts the bad bytes.
    assert all(state.get(bad, 0) < size for state in journaled)
    assert any(state.get(bad, 0) > 0 for state in journaled)  # (its progress was journaled)
    journal = json.loads(Path(str(dest) + ".part.json").read_text())
    assert bad not in journal["done"]  # nothing of it kept as done
    assert not dest.exists()


def test_pieces_cut_mid_range_resume_where_they_stopped(faulty_emu: EmulatorHandle,
                                                        tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    _pieces_only(monkeypatch)
    with make_client(faulty_emu) as client:
        task = _export(client)
        before = faulty_emu.stats()["faults"].get("cut_body", 0)
        # Seeded, so every run meets the same cuts; with seed 1 the first GET is cut.
        faulty_emu.set_faults(cut_body=0.5, paths=_segments_path(faulty_emu, task), seed=1)
        dest = tmp_path / "flaky.vhd"
        client.download_export(task, dest, progress=False, workers=8)
        cuts = faulty_emu.stats()["faults"].get("cut_body", 0) - before
        faulty_emu.clear_faults()
        assert cuts >= 1
        assert _file_md5(dest) == _image_md5(client, WEB)


def test_a_segment_changed_during_the_download_is_refused(emu: EmulatorHandle, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    _pieces_only(monkeypatch)
    with make_client(emu) as client:
        task = _export(client)
        container, name = files_module.split_location(task.export_location or "")
        last = f"{name}-00004"
        url = f"{emu.storage_url(emu.tenant_of('demo'))}/{container}/{last}"
        size = client.files.head_object(container, last).bytes
        lock, changed = threading.Lock(), []

        def overwrite_once(done: int, _total: int) -> None:
            # Every worker waits here until it is done: no piece of -00004 was asked for yet.
            with lock:
                if not changed:
                    put = httpx.put(url, content=b"\1" * size,
                                    headers={"X-Auth-Token": emu.token()})
                    changed.append(put.status_code)

        dest = tmp_path / "changed.vhd"
        with pytest.raises(ChecksumMismatch, match="changed while it was being downloaded"):
            client.download_export(task, dest, progress=overwrite_once, workers=8)
        assert changed == [201]
        assert not dest.exists()


@pytest.mark.parametrize("workers", [1, 8], ids=["whole segments", "pieces"])
def test_interrupted_download_resumes_mid_segment(client: imgtools.Client, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  workers: int) -> None:
    if workers > 1:
        _pieces_only(monkeypatch)
    # Small chunks and a frequent journal so the interruption falls inside a segment.
    monkeypatch.setattr(files_module, "DEFAULT_DOWNLOAD_CHUNK", 1024)
    monkeypatch.setattr(files_module, "_JOURNAL_EVERY", 2048)
    task = _export(client)
    total = client.get_image(WEB).size
    assert total is not None
    dest = tmp_path / "web.vhd"
    stop_at = total // 2 + 3000

    def interrupt(done: int, _total: int) -> None:
        if done >= stop_at:
            raise _Stop

    with pytest.raises(_Stop):
        client.download_export(task, dest, progress=interrupt, workers=workers)
    assert not dest.exists()
    assert Path(str(dest) + ".part").exists()

    progress: list[int] = []
    result = client.download_export(task, dest, progress=lambda d, t: progress.append(d),
                                    workers=workers)
    assert 0 < result.resumed_from < total
    assert progress[0] == result.resumed_from
    assert _file_md5(dest) == _image_md5(client, WEB)
    if workers == 1:  # (pieces that landed ahead of their segment's MD5 are fetched again)
        assert result.resumed_from % FAST.segment_size != 0  # inside a segment, with a Range
        assert progress == sorted(progress)  # nothing downloaded twice


def test_resume_false_starts_again(client: imgtools.Client, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files_module, "DEFAULT_DOWNLOAD_CHUNK", 1024)
    monkeypatch.setattr(files_module, "_JOURNAL_EVERY", 2048)
    task = _export(client)
    dest = tmp_path / "again.vhd"

    def interrupt(done: int, _total: int) -> None:
        if done > 10_000:
            raise _Stop

    with pytest.raises(_Stop):
        client.download_export(task, dest, progress=interrupt, workers=1)
    result = client.download_export(task, dest, progress=False, resume=False)
    assert result.resumed_from == 0
    assert _file_md5(dest) == _image_md5(client, WEB)


def test_a_stale_journal_is_not_trusted(client: imgtools.Client, tmp_path: Path) -> None:
    task = _export(client)
    dest = tmp_path / "stale.vhd"
    part = Path(str(dest) + ".part")
    part.write_bytes(b"\0" * 100)
    Path(str(dest) + ".part.json").write_text('{"segments": [["other", 1, "x"]], '
                                              '"done": {"other": 1}}')
    result = client.download_export(task, dest, progress=False)
    assert result.resumed_from == 0
    assert _file_md5(dest) == _image_md5(client, WEB)


def test_split_location() -> None:
    assert files_module.split_location("c/o.vhd") == ("c", "o.vhd")
    for bad in ("nothing", "/o", "c/"):
        with pytest.raises(ValidationError):
            files_module.split_location(bad)


def test_a_range_refused_by_if_range_restarts_the_segment(tmp_path: Path) -> None:
    """The segment changed between the listing and the GET: the server answers 200 with the
    whole object instead of 206, and the segment is downloaded again from its start. (The
    emulator cannot change an object inside that window, hence a mock.)"""
    import hashlib as _hashlib
    import json as _json

    import httpx

    body = b"0123456789" * 10
    md5 = _hashlib.md5(body).hexdigest()
    seen: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "HEAD":
            return httpx.Response(200, headers={"x-object-manifest": "c/o.vhd-",
                                                "content-length": "0"})
        if path.endswith("/c") or path == "/v1/acct/c":
            page = [] if request.url.params.get("marker") else [
                {"name": "o.vhd-00001", "bytes": len(body), "hash": md5}]
            return httpx.Response(200, json=page)
        seen.append({k: request.headers.get(k, "") for k in ("range", "if-range")})
        # It ignores the Range: the object changed. (A stream, as a real transport gives.)
        return httpx.Response(200, stream=httpx.ByteStream(body))

    http = httpx.Client(base_url="http://swift.test/v1/acct",
                        transport=httpx.MockTransport(handler))
    dest = tmp_path / "o.vhd"
    part = Path(str(dest) + ".part")
    part.write_bytes(body[:40] + b"\0" * 60)
    fingerprint = [["o.vhd-00001", len(body), md5]]
    Path(str(dest) + ".part.json").write_text(
        _json.dumps({"segments": fingerprint, "done": {"o.vhd-00001": 40}}))
    progress: list[int] = []
    result = files_module.Files(http).download_export(
        "c/o.vhd", dest, progress=lambda d, t: progress.append(d))
    assert seen == [{"range": "bytes=40-", "if-range": md5}]
    assert result.resumed_from == 40
    assert dest.read_bytes() == body
    assert progress[0] == 40 and 0 in progress and progress[-1] == len(body)


# -- the async twin ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_async_client_verifies_and_downloads(emu: EmulatorHandle, tmp_path: Path) -> None:
    async with imgtools.AsyncClient(username="demo", api_key="demo-key",
                                    identity_url=emu.identity_url, log=False,
                                    poll=imgtools.PollPolicy.fast()) as client:
        container = fresh_container("async")
        assert await client.files.create_container(container) is True
        assert container in [c.name for c in await client.files.containers()]
        handle = await client.begin_export(WEB, container)
        task = await handle.wait(timeout=60)
        report = await client.verify_export(handle)
        assert report.ok, report.problems
        seen: list[int] = []
        dest = tmp_path / "async.vhd"
        result = await client.download_export(task.id, dest,
                                              progress=lambda d, t: seen.append(d))
        assert result.bytes == dest.stat().st_size == report.total_bytes
        assert seen[-1] == result.bytes
        listed = await client.files.objects(container)
        assert listed[0].name == f"{WEB}.vhd"  # the manifest sorts first
        digest = hashlib.md5(usedforsecurity=False)
        async for chunk in client.image_file(WEB):
            digest.update(chunk)
    assert _file_md5(dest) == digest.hexdigest()


@pytest.mark.anyio
async def test_async_download_survives_an_expired_token(faulty_emu: EmulatorHandle,
                                                        tmp_path: Path) -> None:
    """The blocking storage connection shares the async client's login: a 401 on it logs in
    again (from the worker thread) instead of failing the download."""
    emu = faulty_emu  # a fresh emulator of its own: this test moves its clock
    async with imgtools.AsyncClient(username="demo", api_key="demo-key",
                                    identity_url=emu.identity_url, log=False,
                                    poll=imgtools.PollPolicy.fast()) as client:
        handle = await client.begin_export(WEB, fresh_container("relog"), create_container=True)
        task = await handle.wait(timeout=60)
        await client.files.containers()  # the blocking storage connection is in use already
        emu.advance_clock(FAST.token_ttl + 60)  # every token issued so far has expired
        result = await client.download_export(task, tmp_path / "relog.vhd")
        assert client.stats.reauths >= 1
        image = await client.get_image(WEB)
        assert result.bytes == image.size


def test_image_file_network_failure_is_a_transport_error(faulty_emu: EmulatorHandle) -> None:
    with make_client(faulty_emu, retries=0) as client:
        faulty_emu.kill()
        with pytest.raises(imgtools.TransportError, match=r"images/.*/file"):
            b"".join(client.image_file(WEB))

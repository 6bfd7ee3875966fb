"""copy_export against the emulator over sockets: an export copied from one region to another,
streaming, checked segment by segment; reruns, damaged targets, damage in transit (422), cut
bodies, 503s, expired tokens, a listing that misses an object, and no byte on local disk."""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import io
import json
import os
import random
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import imgtools
from imgtools import NotFound, ValidationError
from imgtools import _copy as _copy_module
from imgtools._bulk import BulkTransport
from imgtools._copy import (
    COPY_CHUNK,
    COPY_QUEUE_CHUNKS,
    THREAD_PREFIX,
    CopyCancelled,
    CopyError,
    CopyResult,
    SegmentRejected,
    copy_export,
    copy_export_async,
)
from imgtools.emulator import EmulatorHandle
from tests.client_support import WEB, fresh_container, live_threads, make_client


@pytest.fixture(scope="module")
def emu(emulator_in_subprocess: EmulatorHandle) -> EmulatorHandle:
    """This module's emulator: the client tests' one, in a subprocess (tests/conftest.py)."""
    return emulator_in_subprocess


HOME, AWAY = "ORD", "DFW"
#: Segment sizes of the exports laid out by hand: uneven, the last one shorter, one of them
#: larger than a copy chunk (1 MiB) so a segment goes in several pieces.
SIZES = (300_000, 1_500_000, 300_000, 123_457)


def _storage(emu: EmulatorHandle, region: str) -> httpx.Client:
    return httpx.Client(base_url=emu.storage_url("100001", region) + "/",
                        headers={"X-Auth-Token": emu.token()}, timeout=30)


def _lay_out(emu: EmulatorHandle, region: str = HOME, sizes: tuple[int, ...] = SIZES,
             seed: int = 1) -> tuple[str, bytes]:
    """An export as Cloud Images leaves one (segments ``<name>-00001``... and a zero-byte
    manifest) with seeded bytes; its location and its content."""
    container, name = fresh_container("src"), "0b0e5a57-0000-4000-8000-000000000001.vhd"
    rng = random.Random(seed)
    content = b""
    with _storage(emu, region) as http:
        http.put(container).raise_for_status()
        for n, size in enumerate(sizes, start=1):
            body = rng.randbytes(size)
            http.put(f"{container}/{name}-{n:05d}", content=body).raise_for_status()
            content += body
        http.put(f"{container}/{name}", content=b"",
                 headers={"X-Object-Manifest": f"{container}/{name}-"}).raise_for_status()
    return f"{container}/{name}", content


def _assembled(emu: EmulatorHandle, region: str, location: str) -> bytes:
    """What a GET of the manifest gives: the server's concatenation of the segments."""
    with _storage(emu, region) as http:
        response = http.get(location)
        response.raise_for_status()
        return response.content


def _listing(emu: EmulatorHandle, region: str, container: str, prefix: str) -> list[Any]:
    with _storage(emu, region) as http:
        response = http.get(container, params={"format": "json", "prefix": prefix})
        response.raise_for_status()
        return [(o["name"], o["bytes"], o["hash"]) for o in response.json()]


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _object_puts(emu: EmulatorHandle, status: int | None = None) -> int:
    """Object PUTs the emulator answered (``status``: only those answered with it)."""
    return sum(r["count"] for r in emu.stats()["requests"]
               if r["method"] == "PUT" and r["route"].count("/") >= 4
               and status in (None, r["status"]))


@pytest.fixture
def away(emu: EmulatorHandle) -> Iterator[imgtools.Client]:
    with make_client(emu, region=AWAY) as c:
        yield c


def _copy(client: imgtools.Client, location: str, away: imgtools.Client,
          target: str | None = None, **options: Any) -> CopyResult:
    options.setdefault("listing_delay", 0)
    return copy_export(client.files, location, away.files, target, **options)


# -- the copy ---------------------------------------------------------------------------------


def test_an_export_copied_to_another_region_is_byte_identical(
        emu: EmulatorHandle, client: imgtools.Client, away: imgtools.Client) -> None:
    task = client.export(WEB, fresh_container("x"), create_container=True, timeout=60)
    location = task.export_location or ""
    seen: list[tuple[int, int]] = []
    result = _copy(client, location, away, progress=lambda d, t: seen.append((d, t)))
    source = _assembled(emu, HOME, location)
    copied = _assembled(emu, AWAY, location)
    assert copied == source and _md5(copied) == _md5(source)
    container, name = location.split("/")
    listed = _listing(emu, HOME, container, name + "-")
    assert _listing(emu, AWAY, container, name + "-") == listed  # names, sizes, MD5s
    assert (result.bytes, result.copied_bytes) == (len(source), len(source))
    assert (result.segments, result.copied, result.skipped) == (len(listed), len(listed), 0)
    assert (result.retries, result.listings) == (0, 2)
    assert result.seconds > 0 and result.mib_per_s > 0
    assert seen[0] == (0, len(source)) and seen[-1] == (len(source), len(source))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    # The target's manifest is a DLO of its own container, as the source's is of its own.
    head = away.files.head_object(container, name, manifest=True)
    assert head.manifest == f"{container}/{name}-" and head.bytes == 0


def test_segments_of_many_chunks_go_through_the_reused_buffers_intact(
        emu: EmulatorHandle, client: imgtools.Client, away: imgtools.Client,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The reads go into buffers the copy lends and gets back once the PUT has sent them
    (no copy per chunk): segments of many chunks arrive intact, with no 422 on the way,
    through a few buffers reused rather than one per chunk."""
    sizes = (7 * COPY_CHUNK + 11, 5 * COPY_CHUNK, 3 * COPY_CHUNK - 5)
    location, content = _lay_out(emu, sizes=sizes, seed=7)
    made: list[int] = []
    fresh = _copy_module._Copy.take_buffer

    def counted(job: Any) -> bytearray:
        buffer = fresh(job)
        made.append(id(buffer))
        return buffer

    monkeypatch.setattr(_copy_module._Copy, "take_buffer", counted)
    result = _copy(client, location, away, workers=2)
    assert _assembled(emu, AWAY, location) == content
    assert (result.copied, result.retries) == (3, 0)
    # Reused, not one per chunk: at most a few per segment in flight.
    assert len(set(made)) <= 2 * (COPY_QUEUE_CHUNKS + 3) < sum(sizes) // COPY_CHUNK


def test_a_rerun_copies_nothing_and_a_new_name_gets_its_own_segments(
        emu: EmulatorHandle, client: imgtools.Client, away: imgtools.Client) -> None:
    location, content = _lay_out(emu)
    first = _copy(client, location, away)
    assert first.copied == len(SIZES)
    puts = _object_puts(emu)
    again = _copy(client, location, away)
    assert (again.copied, again.skipped, again.copied_bytes) == (0, len(SIZES), 0)
    assert again.bytes == len(content)
    assert _object_puts(emu) == puts + 1  # the manifest, written again: no segment
    renamed = fresh_container("dst") + "/copy.vhd"
    other = _copy(client, location, away, renamed)
    assert other.copied == len(SIZES) and other.target == renamed
    assert _assembled(emu, AWAY, renamed) == content
    assert [n for n, _, _ in _listing(emu, AWAY, renamed.split("/")[0], "copy.vhd-")] == [
        f"copy.vhd-{n:05d}" for n in range(1, len(SIZES) + 1)]


def test_a_deleted_or_damaged_target_segment_is_copied_again_alone(
        emu: EmulatorHandle, client: imgtools.Client, away: imgtools.Client) -> None:
    location, content = _lay_out(emu, seed=2)
    _copy(client, location, away)
    with _storage(emu, AWAY) as http:
        http.delete(f"{location}-00002").raise_for_status()
        http.put(f"{location}-00003", content=b"not the segment").raise_for_status()
    assert _assembled(emu, AWAY, location) != content
    puts = _object_puts(emu)
    result = _copy(client, location, away)
    assert (result.copied, result.skipped) == (2, len(SIZES) - 2)
    assert result.copied_bytes == SIZES[1] + SIZES[2]
    assert _object_puts(emu) == puts + 3  # two segments and the manifest
    assert _assembled(emu, AWAY, location) == content


class _Damage(httpx.BaseTransport):
    """The client's real Cloud Files transport, flipping one byte of the first ``times`` PUTs
    of ``segment`` on their way (as a bad NIC or proxy would): the emulator's ETag check is
    what must catch it."""

    def __init__(self, segment: str, times: int = 1) -> None:
        self.inner = BulkTransport()
        self.segment, self.left = segment, times

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if (request.method == "PUT" and request.url.path.endswith(self.segment)
                and self.left > 0):
            self.left -= 1
            request.stream = _Flipped(request.stream)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


class _Flipped(httpx.SyncByteStream):
    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def __iter__(self) -> Iterator[bytes]:
        first = True
        for chunk in self.stream:
            if first and chunk:
                chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
                first = False
            yield chunk


def test_a_byte_damaged_on_the_way_is_refused_by_the_target_and_the_segment_sent_again(
        emu: EmulatorHandle, client: imgtools.Client) -> None:
    location, content = _lay_out(emu, seed=3)
    with make_client(emu, region=AWAY, transport=_Damage("-00002")) as away:
        result = _copy(client, location, away)
    assert result.retries == 1 and result.copied == len(SIZES)
    assert _assembled(emu, AWAY, location) == content
    refused = sum(r["count"] for r in emu.stats()["requests"] if r["status"] == 422)
    assert refused >= 1


def test_a_segment_refused_every_time_fails_typed_and_leaves_no_manifest(
        emu: EmulatorHandle, client: imgtools.Client) -> None:
    location, _ = _lay_out(emu, seed=4)
    with make_client(emu, region=AWAY, transport=_Damage("-00003", times=2)) as away, \
            pytest.raises(SegmentRejected) as caught:
        _copy(client, location, away, tries=2)
    assert caught.value.name.endswith("-00003") and "422" in str(caught.value)
    container, name = location.split("/")
    with make_client(emu, region=AWAY) as away:
        with pytest.raises(NotFound):  # the manifest comes only after every segment
            away.files.head_object(container, name, manifest=True)
        with pytest.raises(NotFound):  # and the damaged bytes were never stored
            away.files.head_object(container, name + "-00003")


# -- faults -----------------------------------------------------------------------------------


def test_cut_source_bodies_and_503s_resume_without_starting_the_segment_over(
        emu: EmulatorHandle, client: imgtools.Client, away: imgtools.Client) -> None:
    location, content = _lay_out(emu, seed=5)
    # Every segment GET that is answered stops halfway, then halfway through what is left,
    # and so on; some are answered 503 first (seeded; only these GETs draw, one at a time).
    emu.set_faults(cut_body=1.0, error_503=0.05, seed=21, methods="GET",
                   paths=f"/v1/MossoCloudFS_100001/{location}-")
    result = _copy(client, location, away, workers=1)
    faults = emu.stats()["faults"]
    assert faults["cut_body"] >= 4 * len(SIZES) and faults["error_503"] >= 1
    assert result.retries == 0  # resumed with Range, 503s asked again: no segment went twice
    assert _assembled(emu, AWAY, location) == content


def test_target_503s_send_the_segment_again_from_its_start(
        emu: EmulatorHandle, client: imgtools.Client, away: imgtools.Client) -> None:
    location, content = _lay_out(emu, seed=6)
    before = emu.stats()["faults"]["error_503"]  # the module's emulator counts for every test
    # Seeded, one segment at a time: the same PUTs meet the same 503s on every run.
    emu.set_faults(error_503=0.5, seed=13, methods="PUT",
                   paths=f"/v1/MossoCloudFS_100001/{location}-")
    result = _copy(client, location, away, workers=1)
    unavailable = emu.stats()["faults"]["error_503"] - before
    assert unavailable >= 1
    assert result.retries == unavailable  # each one: the body again, a new GET at the source
    assert result.copied == len(SIZES)
    assert _assembled(emu, AWAY, location) == content


def test_tokens_expiring_mid_copy_log_in_again_on_both_sides(
        emu: EmulatorHandle, client: imgtools.Client, away: imgtools.Client) -> None:
    location, content = _lay_out(emu, seed=7)
    expired = threading.Event()

    def expire_once(done: int, total: int) -> None:
        # After the first segment's first bytes: every token known so far stops working.
        if done and not expired.is_set():
            expired.set()
            emu.advance_clock(10 ** 6)

    def refused() -> dict[str, int]:
        return {method: sum(r["count"] for r in emu.stats()["requests"]
                            if r["method"] == method and r["status"] == 401
                            and r["route"].endswith("{object:path}"))
                for method in ("GET", "PUT")}

    before = (client.stats.reauths, away.stats.reauths, refused())
    result = _copy(client, location, away, workers=1, progress=expire_once)
    assert expired.is_set()
    assert client.stats.reauths > before[0] and away.stats.reauths > before[1]
    # A segment GET and a segment PUT met the expired token: the PUT was sent again whole.
    after = refused()
    assert after["GET"] > before[2]["GET"] and after["PUT"] > before[2]["PUT"]
    assert result.retries >= 1
    assert result.copied == len(SIZES)
    assert _assembled(emu, AWAY, location) == content


class _Forgetful(httpx.BaseTransport):
    """The real transport, but the first ``times`` listings of ``container`` miss their
    ``missing``-th object, as Cloud Files' listings sometimes do (the emulator's never do)."""

    def __init__(self, container: str, missing: int, times: int) -> None:
        self.inner = BulkTransport()
        self.container, self.missing, self.left = container, missing, times
        self.listings = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        path = request.url.path
        if (request.method == "GET" and path.endswith("/" + self.container)
                and request.url.params.get("format") == "json"):
            self.listings += 1
            if self.left > 0:
                self.left -= 1
                items = json.loads(response.read())
                del items[self.missing]
                body = json.dumps(items).encode()
                headers = {k: v for k, v in response.headers.items()
                           if k.lower() not in ("content-length", "content-encoding")}
                return httpx.Response(response.status_code, headers=headers, content=body)
        return response

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize("missing", [1, -1], ids=["a middle segment", "the last segment"])
def test_a_listing_that_misses_a_segment_is_read_again_until_it_settles(
        emu: EmulatorHandle, away: imgtools.Client, missing: int) -> None:
    location, content = _lay_out(emu, seed=8)
    container = location.split("/")[0]
    forgetful = _Forgetful(container, missing, times=1)
    with make_client(emu, transport=forgetful) as client:
        result = _copy(client, location, away)
    assert forgetful.listings == result.listings == 3  # missed, full, full again
    assert result.segments == result.copied == len(SIZES)
    assert _assembled(emu, AWAY, location) == content


def test_a_listing_that_never_settles_copies_nothing(
        emu: EmulatorHandle, away: imgtools.Client) -> None:
    location, _ = _lay_out(emu, seed=9)
    container = location.split("/")[0]
    puts = _object_puts(emu)
    with make_client(emu, transport=_Forgetful(container, 1, times=100)) as client, \
            pytest.raises(CopyError, match=r"did not settle.*gaps"):
        _copy(client, location, away, listing_reads=3)
    assert _object_puts(emu) == puts


def test_foreign_objects_under_the_target_prefix_are_refused_before_copying(
        emu: EmulatorHandle, client: imgtools.Client, away: imgtools.Client) -> None:
    location, _ = _lay_out(emu, seed=10)
    with _storage(emu, AWAY) as http:
        http.put(location.split("/")[0]).raise_for_status()
        http.put(f"{location}-00099", content=b"someone else's").raise_for_status()
    puts = _object_puts(emu)
    with pytest.raises(CopyError, match="-00099"):
        _copy(client, location, away)
    assert _object_puts(emu) == puts  # nothing sent


@pytest.mark.parametrize(("option", "value"), [("workers", 0), ("tries", 0),
                                                ("listing_reads", 1), ("listing_delay", -1.0)])
def test_bad_options_fail_before_any_request(emu: EmulatorHandle, client: imgtools.Client,
                                             away: imgtools.Client, option: str,
                                             value: Any) -> None:
    before = emu.stats()["requests_total"]
    with pytest.raises(ValidationError):
        imgtools._copy.copy_export(client.files, "c/x.vhd", away.files, **{option: value})
    with pytest.raises(ValidationError):
        _copy(client, "no-slash", away)
    assert emu.stats()["requests_total"] == before + 1  # (the stats call itself)


# -- no local disk ----------------------------------------------------------------------------


def test_nothing_is_written_to_local_disk(emu: EmulatorHandle, client: imgtools.Client,
                                          away: imgtools.Client, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    location, content = _lay_out(emu, seed=11)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    opened: list[str] = []

    def counting(name: str, real: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            opened.append(f"{name}{args[:1]}")
            return real(*args, **kwargs)
        return wrapper

    # Everything a file could be opened or made with, in this (the client's) process; the
    # emulator runs in its own.
    for owner, attr in ((builtins, "open"), (io, "open"), (os, "open"), (os, "fdopen"),
                        (tempfile, "mkstemp"), (tempfile, "TemporaryFile"),
                        (tempfile, "NamedTemporaryFile"), (tempfile, "SpooledTemporaryFile"),
                        (tempfile, "mkdtemp")):
        monkeypatch.setattr(owner, attr, counting(attr, getattr(owner, attr)))
    result = _copy(client, location, away)
    monkeypatch.undo()
    assert opened == []
    assert list(cwd.iterdir()) == []
    assert result.copied == len(SIZES)
    assert _assembled(emu, AWAY, location) == content


# -- the async twin ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_async_client_copies_through_the_same_code(emu: EmulatorHandle) -> None:
    location, content = _lay_out(emu, seed=12)
    options: dict[str, Any] = {"username": "demo", "api_key": "demo-key",
                               "identity_url": emu.identity_url, "log": False}
    async with imgtools.AsyncClient(**options) as home, \
            imgtools.AsyncClient(region=AWAY, **options) as away:
        result = await copy_export_async(home.files, location, away.files, listing_delay=0)
        again = await copy_export_async(home.files, location, away.files, listing_delay=0)
    assert (result.copied, again.skipped) == (len(SIZES), len(SIZES))
    assert _assembled(emu, AWAY, location) == content


class _NoETag(httpx.BaseTransport):
    """The real transport, dropping the ``ETag`` of PUTs: a target that checks nothing."""

    def __init__(self) -> None:
        self.inner = BulkTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            request.headers.pop("ETag", None)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize("checks", [True, False], ids=["target checks ETags", "target does not"])
def test_a_segment_damaged_at_the_source_never_completes_at_the_target(
        emu: EmulatorHandle, client: imgtools.Client, checks: bool) -> None:
    emu.set_faults(corrupt_segment=True)  # the export stores a flipped byte, listed right
    task = client.export(WEB, fresh_container("x"), create_container=True, timeout=60)
    emu.clear_faults()
    location = task.export_location or ""
    transport = None if checks else _NoETag()
    with make_client(emu, region=AWAY, transport=transport) as away:
        with pytest.raises(imgtools.ChecksumMismatch) as caught:
            _copy(client, location, away, tries=2)
        # Found by the copy's own MD5 before the last chunk went out: even a target that
        # checks nothing never gets the whole segment, so never stores it.
        assert type(caught.value) is imgtools.ChecksumMismatch
        assert "the source's bytes hash to" in str(caught.value)
        with pytest.raises(NotFound):
            away.files.head_object(location.split("/")[0], caught.value.name)


# -- the transport under the copy -------------------------------------------------------------


@pytest.mark.parametrize("sized", [True, False], ids=["Content-Length", "chunked"])
def test_bulk_transport_sends_a_streamed_body_as_it_comes(emu: EmulatorHandle,
                                                          sized: bool) -> None:
    import tracemalloc

    block = random.Random(14).randbytes(1024 * 1024)
    count = 48

    def body() -> Iterator[bytes]:
        for _ in range(count):
            yield block  # the same object every time: the body allocates nothing itself

    container = fresh_container("bulk")
    headers = {"X-Auth-Token": emu.token()}
    if sized:
        headers["Content-Length"] = str(count * len(block))
    with httpx.Client(transport=BulkTransport(), timeout=60) as http:
        url = f"{emu.storage_url('100001')}/{container}"
        http.put(url, headers=headers | {"Content-Length": "0"}).raise_for_status()
        tracemalloc.start()
        try:
            response = http.put(f"{url}/big", content=body(), headers=headers)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        response.raise_for_status()
    assert peak < 8 * 1024 * 1024  # never the whole 48 MiB joined up
    assert response.headers["etag"] == _md5(block * count)


# -- stopping ---------------------------------------------------------------------------------

#: Eight segments of three copy chunks each (uneven sizes): a stop lands within a segment.
STOPPED_SIZES = tuple(2 * COPY_CHUNK + 1000 * n for n in range(1, 9))
#: Seconds a held copy thread waits for the stop to reach it (a bound, not a measure).
REACHED = 60.0


def _nothing_half_done(emu: EmulatorHandle, location: str, whole: int) -> None:
    """No manifest at the target; its first ``whole`` segments there, each as the source's
    (size and MD5), and none other: nothing partial was kept."""
    container, name = location.split("/")
    with _storage(emu, AWAY) as http:
        assert http.head(location).status_code == 404
    source = _listing(emu, HOME, container, name + "-")
    assert _listing(emu, AWAY, container, name + "-") == source[:whole]
    with _storage(emu, AWAY) as http:  # the next one was cut mid-PUT: not stored at all
        assert http.head(f"{container}/{source[whole][0]}").status_code == 404


def _finish(emu: EmulatorHandle, client: imgtools.Client, away: imgtools.Client, location: str,
            content: bytes, whole: int) -> None:
    """A rerun copies the rest: byte-identical, the segments already there skipped."""
    result = _copy(client, location, away)
    assert (result.skipped, result.copied) == (whole, len(STOPPED_SIZES) - whole)
    assert result.copied_bytes == sum(STOPPED_SIZES[whole:])
    assert _assembled(emu, AWAY, location) == content
    container, name = location.split("/")
    assert _listing(emu, AWAY, container, name + "-") == _listing(emu, HOME, container,
                                                                   name + "-")


def test_a_stopped_copy_ends_its_threads_writes_no_manifest_and_a_rerun_finishes_it(
        emu: EmulatorHandle, client: imgtools.Client, away: imgtools.Client) -> None:
    location, content = _lay_out(emu, sizes=STOPPED_SIZES, seed=15)
    half = sum(STOPPED_SIZES[:4])
    stop = threading.Event()

    def progress(done: int, _total: int) -> None:
        if done > half:  # the fifth segment's first chunk: four are at the target
            stop.set()

    stored = _object_puts(emu, 201)
    with pytest.raises(CopyCancelled, match=r"stopped during segment .*-00005"):
        _copy(client, location, away, workers=1, progress=progress, cancel=stop)
    assert live_threads(THREAD_PREFIX) == []
    _nothing_half_done(emu, location, whole=4)
    assert _object_puts(emu, 201) == stored + 4
    _finish(emu, client, away, location, content, whole=4)


def test_ctrl_c_stops_the_segments_in_flight_and_starts_no_other(
        emu: EmulatorHandle, client: imgtools.Client, away: imgtools.Client) -> None:
    """Ctrl-C in the thread waiting for the segments (the main one): the four in flight end
    at their next chunk, the four waiting never start, and the KeyboardInterrupt goes on up
    once the copy's threads have ended."""
    location, content = _lay_out(emu, sizes=STOPPED_SIZES, seed=16)
    stop = threading.Event()
    interrupts: list[str] = []

    def ctrl_c(_signum: int, _frame: object) -> None:
        if not interrupts:  # one Ctrl-C, however many signals it took to land
            interrupts.append("raised")
            raise KeyboardInterrupt

    def progress(done: int, _total: int) -> None:
        # Progress is reported under the copy's tally lock: holding it here holds every
        # segment before its chunk goes on, until the main thread has seen the Ctrl-C. A
        # signal landing just before the main thread blocks wakes nothing: sent until taken.
        main = threading.main_thread().ident or 0
        while done and not stop.is_set():
            signal.pthread_kill(main, signal.SIGINT)
            stop.wait(0.01)

    puts = _object_puts(emu)
    previous = signal.signal(signal.SIGINT, ctrl_c)
    try:
        with pytest.raises(KeyboardInterrupt):
            _copy(client, location, away, progress=progress, cancel=stop)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert interrupts == ["raised"] and stop.is_set()  # set by copy_export, on the Ctrl-C
    assert live_threads(THREAD_PREFIX) == []
    assert _object_puts(emu) - puts <= 4  # the segments in flight only (cut, not stored)
    _nothing_half_done(emu, location, whole=0)
    _finish(emu, client, away, location, content, whole=0)


@pytest.mark.anyio
async def test_a_cancelled_async_copy_ends_its_threads_before_the_task_ends(
        emu: EmulatorHandle) -> None:
    location, content = _lay_out(emu, sizes=STOPPED_SIZES, seed=17)
    loop = asyncio.get_running_loop()
    stop = threading.Event()
    running: list[asyncio.Task[CopyResult]] = []

    def progress(done: int, _total: int) -> None:
        if done and len(running) == 1:
            running.append(running[0])
            loop.call_soon_threadsafe(running[0].cancel)
        if done:
            stop.wait(REACHED)  # held (as above) until the cancellation has set the event

    options: dict[str, Any] = {"username": "demo", "api_key": "demo-key",
                               "identity_url": emu.identity_url, "log": False}
    async with imgtools.AsyncClient(**options) as home, \
            imgtools.AsyncClient(region=AWAY, **options) as away_async:
        running.append(asyncio.create_task(copy_export_async(
            home.files, location, away_async.files, listing_delay=0, progress=progress,
            cancel=stop)))
        with pytest.raises(asyncio.CancelledError):
            await running[0]
        assert stop.is_set()  # only the task's cancellation sets it
        assert live_threads(THREAD_PREFIX) == []  # the task ended after the copy's threads
    _nothing_half_done(emu, location, whole=0)
    with make_client(emu) as client, make_client(emu, region=AWAY) as away:
        _finish(emu, client, away, location, content, whole=0)

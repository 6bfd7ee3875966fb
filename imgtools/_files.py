"""Cloud Files (Swift): containers and objects, and the export's Dynamic Large Object.

An export is a zero-byte manifest ``<container>/<uuid>.vhd`` whose ``X-Object-Manifest``
names the prefix of its segments ``<uuid>.vhd-00001``, ``-00002``, ... in the same container.
The manifest's ETag is not the MD5 of the content, so verification and download go segment
by segment, each checked against the MD5 the container listing gives.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from imgtools._bulk import body_readinto
from imgtools._convert import check_convert, convert_vhd
from imgtools._exceptions import (
    APIError,
    ChecksumMismatch,
    DownloadError,
    NotFound,
    ResponseError,
    TaskFailed,
    TransportError,
    ValidationError,
)
from imgtools._http import raise_for_status
from imgtools._models import Task, TaskStatus
from imgtools._ops import Call, acall
from imgtools._transport import READ_BODY_EXTENSION

__all__ = [
    "AsyncFiles",
    "ContainerInfo",
    "DownloadResult",
    "ExportReport",
    "Files",
    "ObjectInfo",
    "Progress",
    "Segment",
    "resolve_export",
    "split_location",
]

#: Bytes read from the network per chunk (bytes); large chunks keep MD5 and writes cheap.
DEFAULT_DOWNLOAD_CHUNK = 4 * 1024 * 1024
#: Segments (or pieces of one) downloaded at once by ``download_export``.
DEFAULT_DOWNLOAD_WORKERS = 2
#: A segment too large for the workers to share out whole is fetched as ranged GETs of about
#: this many bytes (its one MD5 still runs through them in order: see ``_Cursor``).
DOWNLOAD_PIECE = 32 * 1024 * 1024
#: A segment whose connection breaks is asked for again from where it stopped; it fails after
#: this many tries in a row that brought no byte.
SEGMENT_STALLS = 3
#: Seconds before the first try after one that brought nothing; doubles, up to the maximum.
STALL_BACKOFF = 0.5
STALL_BACKOFF_MAX = 8.0
#: Names of ``verify_export``'s threads, as ``threading`` lists them.
VERIFY_THREADS = "imgtools-verify"
#: Swift's largest listing page (names per request).
SWIFT_LISTING_LIMIT = 10_000

Progress = Callable[[int, int], None]
"""A progress callback: ``(bytes_done, bytes_total)``."""


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    """A container: its name, object count and bytes used."""

    name: str
    count: int
    bytes: int


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """An object as a listing or HEAD describes it; ``hash`` is the unquoted MD5 (or ETag)."""

    name: str
    bytes: int
    hash: str
    content_type: str | None = None
    last_modified: str | None = None
    manifest: str | None = None
    headers: dict[str, str] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Segment:
    """One DLO segment and where its bytes go in the assembled file."""

    name: str
    bytes: int
    md5: str
    offset: int


@dataclass(frozen=True, slots=True)
class ExportReport:
    """What ``verify_export`` found. ``ok`` is true only when ``problems`` is empty."""

    location: str
    manifest: str | None
    segments: tuple[Segment, ...]
    total_bytes: int
    expected_bytes: int | None
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        verdict = "OK" if self.ok else "FAILED: " + "; ".join(self.problems)
        return (f"{self.location}: {len(self.segments)} segment(s), {self.total_bytes} bytes, "
                f"{verdict}")


@dataclass(frozen=True, slots=True)
class DownloadResult:
    """A finished, verified download."""

    path: Path
    bytes: int
    segments: int
    resumed_from: int
    #: The raw or qcow2 disk made from ``path`` when ``convert=`` asked for one (the VHD stays).
    converted: Path | None = None


def split_location(location: str) -> tuple[str, str]:
    """Split ``<container>/<object>`` (an ``export_location``) into its two parts."""
    container, sep, name = location.partition("/")
    if not sep or not container or not name:
        raise ValidationError(
            f"export location must look like '<container>/<object>', got {location!r}",
            field="location", problems=("missing '/'",))
    return container, name


def _count(item: dict[str, Any], key: str) -> int:
    value = item.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ResponseError(f"Cloud Files listing item {item.get('name')!r}: {key!r} is "
                            f"{value!r}, not a count")
    return value


def _text(item: dict[str, Any], key: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value:
        raise ResponseError(f"Cloud Files listing item {item.get('name')!r}: {key!r} is "
                            f"missing or not text")
    return value


def _check_swift_name(name: str) -> None:
    # Swift's own rules; export containers have stricter ones (imgtools._validation).
    problems = []
    if not isinstance(name, str) or not name:
        problems.append("is empty or not a string")
    else:
        if "/" in name:
            problems.append("contains a slash '/'")
        if len(name.encode("utf-8")) > 256:
            problems.append("is longer than 256 bytes in UTF-8")
    if problems:
        raise ValidationError(f"invalid container name {name!r}: {'; '.join(problems)}",
                              field="container", problems=tuple(problems))


@contextlib.contextmanager
def _network(what: str) -> Iterator[None]:
    # Network failures that the transport's retries could not fix, as imgtools errors.
    try:
        yield
    except httpx.HTTPError as exc:
        raise TransportError(f"{what}: {type(exc).__name__}: {exc}") from None


def _path(container: str, name: str | None = None) -> str:
    out = "/" + quote(container, safe="")
    if name is not None:
        out += "/" + quote(name, safe="")
    return out


class Files:
    """Cloud Files calls made through an ``httpx.Client`` based at the storage URL.

    The client supplies authentication and per-request retries; this class only knows Swift.
    """

    def __init__(self, http: httpx.Client) -> None:
        self._http = http

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        # httpx gives a base URL a trailing slash; the account itself is the URL without it.
        url = path or str(self._http.base_url).rstrip("/")
        with _network(f"{method} {path or '/'}"):
            response = self._http.request(method, url, **kwargs)
        if 300 <= response.status_code < 400:
            raise ResponseError(f"{method} {path or '/'}: unexpected redirect "
                                f"({response.status_code}) from Cloud Files")
        return response

    # -- containers -------------------------------------------------------------------
    def containers(self, *, prefix: str | None = None) -> list[ContainerInfo]:
        """Every container in the account (all pages)."""
        out: list[ContainerInfo] = []
        for item in self._listing("", prefix=prefix):
            out.append(ContainerInfo(name=_text(item, "name"), count=_count(item, "count"),
                                     bytes=_count(item, "bytes")))
        return out

    def create_container(self, name: str) -> bool:
        """Create ``name``; returns True when it was new (201), False when it existed (202)."""
        _check_swift_name(name)
        response = self._send("PUT", _path(name), headers={"Content-Length": "0"})
        raise_for_status(response)
        return response.status_code == 201

    def head_container(self, name: str) -> ContainerInfo:
        """Counts for one container; ``NotFound`` when it does not exist."""
        response = self._send("HEAD", _path(name))
        raise_for_status(response)
        return ContainerInfo(
            name=name,
            count=int(response.headers.get("x-container-object-count", 0)),
            bytes=int(response.headers.get("x-container-bytes-used", 0)),
        )

    def container_exists(self, name: str) -> bool:
        try:
            self.head_container(name)
        except NotFound:
            return False
        return True

    # -- objects ----------------------------------------------------------------------
    def objects(self, container: str, *, prefix: str | None = None) -> Iterator[ObjectInfo]:
        """Every object in ``container`` (all pages), in name order."""
        for item in self._listing(_path(container), prefix=prefix):
            if "name" not in item:  # a "subdir" entry
                continue
            yield ObjectInfo(name=str(item["name"]), bytes=_count(item, "bytes"),
                             hash=_text(item, "hash"), content_type=item.get("content_type"),
                             last_modified=item.get("last_modified"))

    def head_object(self, container: str, name: str, *, manifest: bool = False) -> ObjectInfo:
        """Headers of one object; ``manifest=True`` reads a DLO manifest itself."""
        params = {"multipart-manifest": "get"} if manifest else None
        response = self._send("HEAD", _path(container, name), params=params)
        raise_for_status(response)
        headers = response.headers
        return ObjectInfo(
            name=name,
            bytes=int(headers.get("content-length", 0)),
            hash=headers.get("etag", "").strip('"'),
            content_type=headers.get("content-type"),
            last_modified=headers.get("last-modified"),
            manifest=headers.get("x-object-manifest"),
            headers={k.lower(): v for k, v in headers.items()},
        )

    def _listing(self, path: str, *, prefix: str | None) -> Iterator[dict[str, Any]]:
        marker: str | None = None
        while True:
            params: dict[str, str | int] = {"format": "json", "limit": SWIFT_LISTING_LIMIT}
            if prefix:
                params["prefix"] = prefix
            if marker is not None:
                params["marker"] = marker
            response = self._send("GET", path, params=params)
            raise_for_status(response)
            if response.status_code == 204 or not response.content:
                return
            try:
                page = response.json()
            except ValueError:
                raise ResponseError(f"Cloud Files listing of {path or '/'} is not JSON") from None
            if not isinstance(page, list):
                raise ResponseError(f"Cloud Files listing of {path or '/'} is not a list")
            if not page:
                return
            for item in page:
                if not isinstance(item, dict):
                    raise ResponseError("Cloud Files listing item is not an object")
                yield item
            if len(page) < SWIFT_LISTING_LIMIT:
                return
            last = page[-1]
            marker = last.get("name") or last.get("subdir")

    # -- exports ----------------------------------------------------------------------
    def export_segments(self, location: str) -> tuple[str | None, tuple[Segment, ...]]:
        """The manifest's ``X-Object-Manifest`` value and its segments in order.

        ``NotFound`` when the manifest is missing.
        """
        container, name = split_location(location)
        head = self.head_object(container, name, manifest=True)
        manifest = head.manifest
        if manifest:
            seg_container, _, prefix = manifest.partition("/")
        else:
            seg_container, prefix = container, name + "-"
        segments: list[Segment] = []
        offset = 0
        for obj in self.objects(seg_container, prefix=prefix):
            segments.append(Segment(name=obj.name, bytes=obj.bytes, md5=obj.hash, offset=offset))
            offset += obj.bytes
        return manifest, tuple(segments)

    def verify_export(self, location: str, *, expected_bytes: int | None = None,
                      progress: Progress | None = None) -> ExportReport:
        """Check an export end to end and say what is wrong; never raises for a bad export.

        The manifest must exist and name its segments; the segments must be numbered
        ``-00001`` upwards without gaps; their sizes must add up to ``expected_bytes`` (the
        image size, when known); each segment, downloaded, must hash to its listed MD5
        (``DEFAULT_DOWNLOAD_WORKERS`` segments at a time). A connection that breaks
        mid-segment is asked again from where it stopped, as in ``download_export``.
        Ctrl-C (or any error) ends the segments being read at their next chunk.
        """
        return self._verify_export(location, expected_bytes=expected_bytes, progress=progress,
                                   stop=threading.Event())

    def _verify_export(self, location: str, *, expected_bytes: int | None,
                       progress: Progress | None, stop: threading.Event) -> ExportReport:
        """``verify_export``, which raises ``_Stopped`` once ``stop`` is set (by the caller: a
        transfer step whose task was cancelled) and sets it on its own failure or Ctrl-C, so
        no thread goes on reading a segment (of up to 1000 MiB) for a caller that is gone."""
        problems: list[str] = []
        try:
            manifest, segments = self.export_segments(location)
        except NotFound:
            return ExportReport(location, None, (), 0, expected_bytes,
                                (f"manifest {location} not found",))
        container, name = split_location(location)
        if not manifest:
            problems.append(f"{location} has no X-Object-Manifest header")
        elif manifest != f"{container}/{name}-":
            problems.append(f"manifest points at {manifest!r}, not {container}/{name}-")
        if not segments:
            problems.append("no segments listed")
        problems.extend(_numbering_problems(name, segments))
        total = sum(s.bytes for s in segments)
        if expected_bytes is not None and total != expected_bytes:
            problems.append(f"segments hold {total} bytes, the image has {expected_bytes}")
        seg_container = manifest.partition("/")[0] if manifest else container
        tally = _Tally(total, progress)

        def check(seg: Segment) -> str | None:
            hasher = _SegmentHasher(seg, tally, stop)
            hasher.check()  # stopped before this one began: it never starts
            try:
                _fetch_segment(self._http, seg_container, seg, hasher)
            except NotFound:
                return f"segment {seg.name} is listed but missing"
            got, actual = hasher.written, hasher.digest.hexdigest()
            if got != seg.bytes:
                return f"segment {seg.name} has {got} bytes, listed as {seg.bytes}"
            if actual != seg.md5:
                return f"segment {seg.name} hashes to {actual}, listed as {seg.md5}"
            return None

        # Each segment has its own MD5: as many at once as a download takes, one core each.
        pool = ThreadPoolExecutor(max_workers=DEFAULT_DOWNLOAD_WORKERS,
                                  thread_name_prefix=VERIFY_THREADS)
        try:
            problems.extend(p for p in pool.map(check, segments) if p)
        except BaseException:
            stop.set()  # the others end at their next chunk; none not begun starts
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return ExportReport(location, manifest, segments, total, expected_bytes, tuple(problems))

    def download_export(self, location: str, dest: str | os.PathLike[str], *,
                        expected_bytes: int | None = None, resume: bool = True,
                        workers: int = DEFAULT_DOWNLOAD_WORKERS,
                        progress: Progress | None = None, fsync: bool = False,
                        convert: str | None = None) -> DownloadResult:
        """Download an export into ``dest``, verified segment by segment.

        Bytes go into ``<dest>.part``; a journal ``<dest>.part.json`` records what is done,
        so an interrupted download resumes (``Range`` + ``If-Range``) where it stopped. The
        file is renamed to ``dest`` only when every segment matched its MD5 and the total
        matched. A mismatch raises ``ChecksumMismatch``; the bad segment is dropped from the
        journal so nothing that looks complete is kept. ``workers`` segments download at once.
        A connection that breaks mid-segment is asked again from where it stopped while bytes
        keep coming; after ``SEGMENT_STALLS`` tries in a row that bring none, ``TransportError``
        (what arrived stays in the journal for the next call).

        ``fsync`` (default false, as curl and ``swift download`` do) leaves writing the bytes
        out to the kernel. True flushes the file to disk before the rename, so the name never
        points at bytes a power cut could still lose: use it for a copy that will be the only
        one (a backup before the export is deleted). It costs what the disk's sustained write
        speed costs (``benchmarks/download.py``). Either way a resume re-hashes what is on disk.

        ``convert`` (``"raw"`` or ``"qcow2"``): then convert the verified VHD with qemu-img
        (``imgtools._convert.convert_vhd``) into ``result.converted``, beside it; the VHD is kept.
        qemu-img's absence is a ``ConfigurationError`` before any request.
        """
        qemu_img = check_convert(convert)
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        manifest, segments = self.export_segments(location)
        if not segments:
            raise DownloadError(f"{location}: no segments listed, nothing to download")
        container, name = split_location(location)
        problems = list(_numbering_problems(name, segments))
        if problems:
            raise DownloadError(f"{location}: " + "; ".join(problems))
        total = sum(s.bytes for s in segments)
        if expected_bytes is not None and total != expected_bytes:
            raise DownloadError(f"{location}: segments hold {total} bytes, "
                                f"the image has {expected_bytes}")
        seg_container = manifest.partition("/")[0] if manifest else container
        job = _Download(self._http, seg_container, segments, dest, resume=resume,
                        progress=progress, total=total, fsync=fsync)
        resumed_from = job.run(workers=max(1, workers))
        converted = None
        if convert is not None:
            converted = convert_vhd(dest, convert, qemu_img=qemu_img).path
        return DownloadResult(path=dest, bytes=total, segments=len(segments),
                              resumed_from=resumed_from, converted=converted)


class AsyncFiles:
    """``Files`` for an ``AsyncClient``: the same calls, awaited.

    Each call runs on a worker thread over a blocking connection, so the event loop (a
    notebook's kernel) stays free while segments stream; listings come back as lists.
    """

    def __init__(self, files: Files) -> None:
        self._files = files

    async def containers(self, *, prefix: str | None = None) -> list[ContainerInfo]:
        return await asyncio.to_thread(self._files.containers, prefix=prefix)

    async def create_container(self, name: str) -> bool:
        return await asyncio.to_thread(self._files.create_container, name)

    async def head_container(self, name: str) -> ContainerInfo:
        return await asyncio.to_thread(self._files.head_container, name)

    async def container_exists(self, name: str) -> bool:
        return await asyncio.to_thread(self._files.container_exists, name)

    async def objects(self, container: str, *, prefix: str | None = None) -> list[ObjectInfo]:
        return await asyncio.to_thread(lambda: list(self._files.objects(container,
                                                                         prefix=prefix)))

    async def head_object(self, container: str, name: str, *,
                          manifest: bool = False) -> ObjectInfo:
        return await asyncio.to_thread(self._files.head_object, container, name,
                                       manifest=manifest)

    async def verify_export(self, location: str, *, expected_bytes: int | None = None,
                            progress: Progress | None = None) -> ExportReport:
        # Cancelled, it stops the reading thread and waits for it (no read goes on unseen).
        stop = threading.Event()
        report: ExportReport = await acall(Call(
            lambda: self._files._verify_export(location, expected_bytes=expected_bytes,
                                               progress=progress, stop=stop), stop=stop))
        return report

    async def download_export(self, location: str, dest: str | os.PathLike[str], *,
                              expected_bytes: int | None = None, resume: bool = True,
                              workers: int = DEFAULT_DOWNLOAD_WORKERS,
                              progress: Progress | None = None,
                              fsync: bool = False, convert: str | None = None) -> DownloadResult:
        check_convert(convert)  # before the worker thread: a clear error, no request
        return await asyncio.to_thread(self._files.download_export, location, dest,
                                       expected_bytes=expected_bytes, resume=resume,
                                       workers=workers, progress=progress, fsync=fsync,
                                       convert=convert)


def _numbering_problems(name: str, segments: tuple[Segment, ...]) -> list[str]:
    expected = [f"{name}-{n:05d}" for n in range(1, len(segments) + 1)]
    names = [s.name for s in segments]
    if names == expected:
        return []
    missing = sorted(set(expected) - set(names))
    if missing:
        return [f"segment numbering has gaps (missing {missing[0]})"]
    return ["segment names do not follow <name>-00001, -00002, ..."]


# The journal is rewritten at most this often per segment (bytes), so a resume loses little.
_JOURNAL_EVERY = 8 * 1024 * 1024


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    # A regular file may still take fewer bytes than asked (a signal, a nearly full disk).
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _start_writeback(fd: int, offset: int, length: int) -> None:
    # Ask the kernel to start writing these pages now: the fsync before the rename then waits
    # for little, disk and network overlap, and a 40 GB export does not fill the page cache.
    if hasattr(os, "posix_fadvise"):
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


class _Sink(Protocol):
    """Where the bytes ``[start, end)`` of a segment go: ``written`` of them so far.

    A sink that keeps the views ``add`` gets may also have ``lend() -> bytearray``: each read
    then goes into a buffer it lent, which it owns again once ``add`` got it."""

    start: int
    end: int
    written: int

    def add(self, data: bytes | memoryview) -> None: ...

    def restart(self) -> None: ...


def _fetch_segment(http: httpx.Client, container: str, seg: Segment, sink: _Sink, *,
                   on_break: Callable[[int], Any] | None = None,
                   chunk: int | None = None) -> None:
    """GET the sink's part of ``seg`` into it, from ``sink.written`` on.

    A connection that breaks is asked again for the rest (``Range`` + ``If-Range``) at once
    while bytes keep coming (``on_break(written)`` first, to keep what arrived); after
    ``SEGMENT_STALLS`` tries in a row that brought none, its ``TransportError`` is raised.
    ``chunk``: bytes per read (default ``DEFAULT_DOWNLOAD_CHUNK``)."""
    stalled = 0
    while True:
        before = sink.written
        try:
            _get_into(http, container, seg, sink, chunk)
            return
        except TransportError:
            stalled = 0 if sink.written > before else stalled + 1
            if stalled > SEGMENT_STALLS:
                raise
            if on_break is not None:
                on_break(sink.written)
            if stalled:
                time.sleep(min(STALL_BACKOFF_MAX, STALL_BACKOFF * 2 ** (stalled - 1)))


def _get_into(http: httpx.Client, container: str, seg: Segment, sink: _Sink,
              chunk: int | None = None) -> None:
    """One GET of the sink's part of ``seg``, from ``sink.written`` on, into ``sink``."""
    pos = sink.start + sink.written
    whole = pos == 0 and sink.end == seg.bytes
    # If-Range: should the segment have changed, the server sends all of it (200), not a
    # range of bytes that would not fit with the ones already here.
    last = "" if sink.end == seg.bytes else sink.end - 1  # to the end: a longer body shows
    headers = {} if whole else {"Range": f"bytes={pos}-{last}", "If-Range": seg.md5}
    # Streamed here (and resumed with Range above), never read whole by the retry transport.
    with _network(f"GET {seg.name}"), \
            http.stream("GET", _path(container, seg.name), headers=headers,
                        extensions={READ_BODY_EXTENSION: False}) as response:
        raise_for_status(response)
        if not whole and response.status_code == 200:
            sink.restart()
        readinto = body_readinto(response)
        lend: Callable[[], bytearray] | None = getattr(sink, "lend", None)
        if readinto is not None and lend is not None:
            # A sink that keeps what it is given (a copy queues it for the PUT) lends its
            # own buffers: one read per buffer, and no copy of the bytes on the way.
            while n := readinto(buffer := lend()):
                sink.add(memoryview(buffer)[:n])
        elif readinto is not None:
            # Straight off the socket into one reused buffer: no bytes object per chunk.
            buffer = bytearray(chunk or DEFAULT_DOWNLOAD_CHUNK)
            view = memoryview(buffer)
            while n := readinto(buffer):
                sink.add(view[:n])
        else:
            for data in response.iter_raw():  # as the transport cut them: no copy
                sink.add(data)


class _Tally:
    """Bytes checked by segments hashed at once, reported in order (under the lock, so a
    progress bar never sees the count go back)."""

    def __init__(self, total: int, progress: Progress | None) -> None:
        self.total, self.progress = total, progress
        self.done = 0
        self.lock = threading.Lock()

    def add(self, n: int) -> None:
        with self.lock:
            self.done += n
            if self.progress:
                self.progress(self.done, self.total)


class _Stopped(Exception):
    """A verification's ``stop`` was set: its reads end (not an ``ImgToolsError``: it only
    reaches a caller that set the stop, never a user)."""


class _SegmentHasher:
    """``verify_export``'s sink: hashes and counts, reports progress, keeps nothing; ends
    with ``_Stopped`` at the next chunk once ``stop`` is set."""

    def __init__(self, seg: Segment, tally: _Tally, stop: threading.Event) -> None:
        self.start, self.end = 0, seg.bytes
        self.seg, self.tally, self.stop = seg, tally, stop
        self.written = 0
        self.digest = hashlib.md5(usedforsecurity=False)

    def check(self) -> None:
        if self.stop.is_set():
            raise _Stopped(f"the verification was stopped at segment {self.seg.name}")

    def add(self, data: bytes | memoryview) -> None:
        self.check()
        self.digest.update(data)
        self.written += len(data)
        self.tally.add(len(data))

    def restart(self) -> None:
        self.tally.add(-self.written)
        self.written = 0
        self.digest = hashlib.md5(usedforsecurity=False)


def _pieces(segments: list[Segment], have: dict[str, int],
            workers: int) -> list[tuple[Segment, int, int]]:
    """The ranges ``(segment, start, end)`` to fetch: whole segments while there are enough
    of them to keep ``workers`` busy; a segment larger than its share is cut into ranges of
    about ``DOWNLOAD_PIECE`` bytes (a lone 1000 MiB segment goes as some 30 ranged GETs)."""
    remaining = sum(s.bytes - have.get(s.name, 0) for s in segments)
    share = max(DOWNLOAD_PIECE, -(-remaining // (2 * workers)))
    out = []
    for seg in segments:
        start = have.get(seg.name, 0)
        left = seg.bytes - start
        # Small pieces: the worker that holds the segment's MD5 hashes the pieces the others
        # bring as they land, so one core hashes while the rest download.
        k = -(-left // DOWNLOAD_PIECE) if workers > 1 and left > share else 1
        bounds = [start + left * i // k for i in range(k + 1)]
        out += [(seg, a, b) for a, b in itertools.pairwise(bounds)]
    return out


class _Cursor:
    """One segment's MD5, fed in byte order. The piece that starts where the cursor stands
    hashes as it downloads; a piece that ends first waits in ``waiting`` and is hashed from
    the file by whichever worker brings the cursor to it. ``busy``: a worker is feeding it."""

    def __init__(self, seg: Segment, hashed: int, digest: Any) -> None:
        self.seg, self.hashed, self.digest = seg, hashed, digest
        self.lock = threading.Lock()
        self.busy = False
        self.waiting: dict[int, int] = {}  # start -> end of pieces written, not yet hashed

    def claim(self, start: int) -> bool:
        """Take the cursor for a piece starting at ``start``, if it stands there and is free."""
        with self.lock:
            if self.busy or self.hashed != start:
                return False
            self.busy = True
            return True


class _SegmentWriter:
    """Writes one piece of a segment at its offsets, in the downloading thread, and hashes it
    as it goes when the piece holds the segment's cursor.

    Each worker hashes and writes what it downloads (MD5 and page-cache writes both release
    the GIL), so ``workers`` pieces use as many cores. A second thread per piece to overlap
    the two measured slower than a second worker (queue hand-offs). The journal counts only
    bytes already written and hashed in order.
    """

    def __init__(self, job: _Download, fd: int, cursor: _Cursor, start: int, end: int,
                 inline: bool) -> None:
        self.job, self.fd, self.cursor = job, fd, cursor
        self.seg = cursor.seg
        self.start, self.end, self.inline = start, end, inline
        self.written = 0
        self._since_journal = 0

    def restart(self) -> None:
        """The server sent the whole segment for a range: it changed since it was listed.
        All of it again, if this piece is the rest of the segment; else this download fails."""
        seg = self.seg
        if not (self.inline and self.end == seg.bytes):
            self.job._forget(seg)
            raise ChecksumMismatch(f"segment {seg.name} changed while it was being downloaded "
                                   "(a range was answered with the whole object)",
                                   name=seg.name, expected=seg.md5, actual="(changed)")
        self.job._add_progress(-(self.start + self.written))
        self.start = self.written = self._since_journal = 0
        with self.cursor.lock:
            self.cursor.hashed = 0
            self.cursor.digest = hashlib.md5(usedforsecurity=False)

    def add(self, data: bytes | memoryview) -> None:
        seg, n = self.seg, len(data)
        if self.written + n > self.end - self.start:
            self.job._forget(seg)
            raise ChecksumMismatch(
                f"segment {seg.name} is longer than its listed {seg.bytes} bytes"
                if self.end == seg.bytes else
                f"segment {seg.name}: more than the {self.end - self.start} bytes asked for "
                f"at byte {self.start}", name=seg.name, expected=seg.md5, actual="(too long)")
        if self.inline:
            self.cursor.digest.update(data)
        _pwrite_all(self.fd, data, seg.offset + self.start + self.written)
        self.written += n
        self._since_journal += n
        self.job._add_progress(n)
        if self._since_journal >= _JOURNAL_EVERY:
            if self.inline:
                if self.job.fsync:  # (a piece hashed later is read back: keep it cached)
                    _start_writeback(self.fd, seg.offset + self.start + self.written
                                     - self._since_journal, self._since_journal)
                self.job._checkpoint(seg, self.start + self.written)
            self._since_journal = 0

    def checkpoint(self, written: int) -> None:
        if self.inline:
            self.job._checkpoint(self.seg, self.start + written)


class _Download:
    """One download: a ``.part`` file written at segment offsets plus a JSON journal."""

    def __init__(self, http: httpx.Client, container: str, segments: tuple[Segment, ...],
                 dest: Path, *, resume: bool, progress: Progress | None, total: int,
                 fsync: bool) -> None:
        self.http = http
        self.container = container
        self.segments = segments
        self.dest = dest
        self.part = dest.with_name(dest.name + ".part")
        self.journal_path = dest.with_name(dest.name + ".part.json")
        self.progress = progress
        self.total = total
        self.lock = threading.Lock()
        self.done_bytes = 0
        # segment name -> bytes from its start already in .part, hashed in order (== size
        # when finished and verified)
        self.state: dict[str, int] = {}
        self.resume = resume
        # Without the final fsync there is nothing to shorten: writeback is left to the kernel.
        self.fsync = fsync
        self.fingerprint = [[s.name, s.bytes, s.md5] for s in segments]

    def _load_journal(self) -> None:
        if not (self.resume and self.part.exists() and self.journal_path.exists()):
            return
        try:
            data = json.loads(self.journal_path.read_text())
        except (OSError, ValueError):
            return
        # A journal for other segments (the export was redone) is worthless.
        if data.get("segments") != self.fingerprint:
            return
        state = data.get("done", {})
        if isinstance(state, dict):
            self.state = {str(k): int(v) for k, v in state.items()}

    def _save_journal(self) -> None:
        # Called with self.lock held. Written to a temp file and renamed: never half a journal.
        tmp = self.journal_path.with_name(self.journal_path.name + ".tmp")
        tmp.write_text(json.dumps({"segments": self.fingerprint, "done": self.state}))
        os.replace(tmp, self.journal_path)

    def run(self, *, workers: int) -> int:
        self._load_journal()
        resumed_from = sum(self.state.values())
        self.done_bytes = resumed_from
        if not self.state:
            with contextlib.suppress(FileNotFoundError):
                self.part.unlink()
        fd = os.open(self.part, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.ftruncate(fd, self.total)
            with self.lock:
                self._save_journal()
            if self.progress:
                self.progress(self.done_bytes, self.total)
            todo = [s for s in self.segments if self.state.get(s.name, 0) < s.bytes
                    or (s.bytes == 0 and s.name not in self.state)]
            # Resuming must still check whole segments: what is on disk is hashed again.
            cursors = {s.name: self._cursor(fd, s) for s in todo}
            pieces = _pieces(todo, self.state, workers)
            if workers == 1 or len(pieces) <= 1:
                for seg, start, end in pieces:
                    self._piece(fd, cursors[seg.name], start, end)
            else:
                with ThreadPoolExecutor(max_workers=workers) as pool:
                    futures = [pool.submit(self._piece, fd, cursors[seg.name], start, end)
                               for seg, start, end in pieces]
                    try:
                        for fut in futures:
                            fut.result()
                    except BaseException:
                        for fut in futures:  # the download has failed: start nothing more
                            fut.cancel()
                        raise
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(self.part, self.dest)
        with contextlib.suppress(FileNotFoundError):
            self.journal_path.unlink()
        return resumed_from

    def _cursor(self, fd: int, seg: Segment) -> _Cursor:
        have = self.state.get(seg.name, 0)
        digest = hashlib.md5(usedforsecurity=False)
        _hash_file(fd, digest, seg.offset, have)
        return _Cursor(seg, have, digest)

    def _piece(self, fd: int, cursor: _Cursor, start: int, end: int) -> None:
        seg = cursor.seg
        writer = _SegmentWriter(self, fd, cursor, start, end, cursor.claim(start))
        short = False
        try:
            _fetch_segment(self.http, self.container, seg, writer, on_break=writer.checkpoint)
        except APIError as exc:
            if exc.status_code != 416:
                raise
            short = True  # the range begins past the segment's end
        if short or writer.written != writer.end - writer.start:
            self._forget(seg)
            raise ChecksumMismatch(f"segment {seg.name} is shorter than its listed "
                                   f"{seg.bytes} bytes", name=seg.name, expected=seg.md5,
                                   actual="(too short)")
        self._settle(fd, cursor, writer.start, end, writer.inline)

    def _settle(self, fd: int, cursor: _Cursor, start: int, end: int, inline: bool) -> None:
        """Record a written piece, then feed the cursor every piece waiting where it stands;
        the worker that brings it to the end checks the segment's MD5."""
        with cursor.lock:
            if inline:
                cursor.hashed = end
                self._checkpoint(cursor.seg, end)
            else:
                cursor.waiting[start] = end
                if cursor.busy:
                    return  # its worker will reach this piece
                cursor.busy = True
        seg = cursor.seg
        while True:
            with cursor.lock:
                start = cursor.hashed
                end_ = cursor.waiting.pop(start, None)
                if end_ is None:
                    cursor.busy = False
                    finished = start == seg.bytes
                    break
            _hash_file(fd, cursor.digest, seg.offset + start, end_ - start)
            with cursor.lock:
                cursor.hashed = end_
            self._checkpoint(seg, end_)
        if not finished:
            return
        actual = cursor.digest.hexdigest()
        if actual != seg.md5:
            self._forget(seg)
            raise ChecksumMismatch(
                f"segment {seg.name}: got {seg.bytes} bytes hashing to {actual}, "
                f"listed {seg.bytes} bytes with MD5 {seg.md5}",
                name=seg.name, expected=seg.md5, actual=actual)
        self._record(seg, seg.bytes)

    def _checkpoint(self, seg: Segment, written: int) -> None:
        """Journal ``written`` bytes of ``seg`` as kept. Never all of them: a segment counts
        as done only once its MD5 matched (a resume skips done segments unread)."""
        if written < seg.bytes:
            self._record(seg, written)

    def _record(self, seg: Segment, written: int) -> None:
        with self.lock:
            self.state[seg.name] = written
            self._save_journal()

    def _forget(self, seg: Segment) -> None:
        with self.lock:
            self.state.pop(seg.name, None)
            self._save_journal()

    def _add_progress(self, n: int) -> None:
        with self.lock:
            self.done_bytes += n
            done = self.done_bytes
        if self.progress:
            self.progress(done, self.total)


def _hash_file(fd: int, digest: Any, offset: int, length: int) -> None:
    """Feed ``digest`` the file's bytes ``[offset, offset + length)``."""
    pos = 0
    while pos < length:
        chunk = os.pread(fd, min(DEFAULT_DOWNLOAD_CHUNK, length - pos), offset + pos)
        if not chunk:
            raise DownloadError(f"{length - pos} bytes missing from the partial file at byte "
                                f"{offset + pos}")
        digest.update(chunk)
        pos += len(chunk)


def resolve_export(task: Task | Any) -> tuple[Task, str]:
    """The finished export task and its ``export_location``; a clear error otherwise."""
    if not isinstance(task, Task):
        raise ValidationError(f"expected a Task, got {type(task).__name__}", field="task")
    if task.status is TaskStatus.FAILURE:
        raise TaskFailed(f"task {task.id} failed: {task.message or 'no message'}; "
                         f"there is no export to read", task=task)
    if task.status is not TaskStatus.SUCCESS:
        raise ValidationError(f"task {task.id} is still {task.status.value}: wait for it "
                              f"first", field="task", problems=("not finished",))
    location = task.export_location
    if not location:
        raise ValidationError(f"task {task.id} ({task.type}) has no export_location",
                              field="task", problems=("not an export",))
    return task, location


def tqdm_progress(total: int, description: str) -> tuple[Progress, Callable[[], None]]:
    """A ``Progress`` callback drawing a ``tqdm.auto`` bar, and the function that closes it."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=description)
    lock = threading.Lock()

    def update(done: int, _total: int) -> None:
        with lock:
            bar.update(done - bar.n)

    return update, bar.close

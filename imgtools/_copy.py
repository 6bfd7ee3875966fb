"""Copy an export (a Dynamic Large Object) to another Cloud Files account or region, streaming.

No byte touches the local disk: each segment's GET at the source feeds its PUT at the target
through a small bounded queue, so memory stays at a few chunks per segment in flight. The
source GET runs on its own thread (``_fetch_segment``, the read loop downloads use: a broken
connection resumes with ``Range`` + ``If-Range``); the PUT pulls from the queue.

Checks, as the transfer how-to and the scripts people wrote do them:

- the source listing is read again until two reads in a row agree and the segments are
  numbered without gaps (Cloud Files listings can miss objects);
- each segment's MD5 is computed as it passes and compared with the listing's ``hash``; the
  listed hash goes as the PUT's ``ETag``, so the target refuses (422) bytes damaged on the
  way; the last chunk is held back until the MD5 matched, so a segment the source sent wrong
  never completes at the target either;
- a refused or broken segment starts over from its first byte, ``tries`` times at most;
- a rerun lists the target first and copies only segments missing there or with another ETag
  (each match confirmed by a HEAD: a listing can also lag a delete);
- the manifest is written last, once every segment is in place, and the target's DLO is then
  read back (``HEAD``): its size and ETag (the MD5 of the segments' ETags) must be the source's;
- a stop (the ``cancel`` event set, Ctrl-C, the async task cancelled) ends every segment in
  flight at its next chunk: its GET is closed, its PUT's body ends short, so the target
  stores nothing of it (Swift keeps no PUT whose body is shorter than its Content-Length);
  segments not started never start, no manifest is written, and the call returns (raises)
  only once its threads have ended. A rerun copies what is missing.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import httpx

from imgtools._exceptions import (
    APIError,
    ChecksumMismatch,
    DownloadError,
    NotFound,
    TransportError,
    ValidationError,
)
from imgtools._files import (
    AsyncFiles,
    Files,
    ObjectInfo,
    Progress,
    Segment,
    _check_swift_name,
    _fetch_segment,
    _numbering_problems,
    _path,
    _Tally,
    split_location,
)
from imgtools._http import raise_for_status
from imgtools._ops import Call, acall

__all__ = [
    "COPY_CHUNK",
    "COPY_QUEUE_CHUNKS",
    "COPY_SEGMENT_TRIES",
    "COPY_STOP_POLL",
    "DEFAULT_COPY_WORKERS",
    "DEFAULT_LISTING_DELAY",
    "LISTING_READS_MAX",
    "CopyCancelled",
    "CopyError",
    "CopyResult",
    "SegmentRejected",
    "copy_export",
    "copy_export_async",
]

#: Segments copied at once (each is one GET feeding one PUT, on two threads). Each stream is
#: bound by one MD5 (about 730 MiB/s a core here), so two already keep two cores busy; four
#: fill the gaps a stream leaves (its start, the last chunk held until the MD5 matched, the
#: target's answer) for about 5 MiB of memory each. Eight measured no faster on 2 cores and
#: took the peak RSS from 58 to 79 MiB (``benchmarks/transfer.py --workers``).
DEFAULT_COPY_WORKERS = 4
#: Bytes per read from the source (and per write to the target): 1024 Python-level steps per
#: GiB and stream cost nothing measurable next to the MD5; larger chunks only cost memory.
COPY_CHUNK = 1024 * 1024
#: Chunks read ahead of the PUT per segment; with ``COPY_CHUNK`` this bounds the memory.
COPY_QUEUE_CHUNKS = 2
#: Tries per segment (a 422, a source MD5 mismatch, a connection the transport's own retries
#: could not save, a 5xx after them); each starts from the segment's first byte.
COPY_SEGMENT_TRIES = 3
#: Source listings read at most, waiting for two in a row that agree.
LISTING_READS_MAX = 5
#: Seconds between two reads of the source listing (Cloud Files needs time to fill it in).
DEFAULT_LISTING_DELAY = 1.0
#: Seconds a segment's PUT waits for its next chunk before it looks whether the copy was
#: stopped: a source that sends nothing for a while must not hold a stop up that long.
COPY_STOP_POLL = 0.05
#: Names of the copy's threads (pool workers and each segment's GET), as ``threading`` lists them.
THREAD_PREFIX = "imgtools-copy"


class CopyError(DownloadError):
    """An export could not be copied: the source's listing never settled, the target holds
    foreign objects under the segment prefix, a segment changed mid-copy, or the target's
    assembled object does not match the source's."""


class CopyCancelled(CopyError):
    """The copy was stopped (its ``cancel`` event set) before it finished: no manifest was
    written, each segment at the target is either whole and verified or absent, and no
    thread of the copy runs any more. Copying again finishes it (only what is missing)."""


class SegmentRejected(ChecksumMismatch):
    """The target refused a segment (422): the bytes it received do not hash to the ``ETag``
    sent, the source listing's MD5 (damaged on the way); or it stored another ETag."""


@dataclass(frozen=True, slots=True)
class CopyResult:
    """A finished, verified copy: ``bytes`` is the export's size, ``copied_bytes`` what went
    across in the segments copied this time (``skipped`` ones were already at the target);
    ``retries`` counts segments started over; ``listings`` the source listing reads."""

    source: str
    target: str
    bytes: int
    copied_bytes: int
    segments: int
    copied: int
    skipped: int
    retries: int
    listings: int
    seconds: float

    @property
    def mib_per_s(self) -> float:
        """Copied MiB per second of the whole call (listings and manifest included)."""
        return self.copied_bytes / (1024 * 1024) / self.seconds if self.seconds > 0 else 0.0


class _Cancelled(Exception):
    """The PUT this GET fed is over (a replay or a failure): stop reading."""


class _SourceFailed(Exception):
    """Carries the source side's error out of the PUT's body (not an httpx error, so no
    transport layer retries or rewraps it)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


_END = object()


class _Pipe:
    """One run of a segment's source GET on its own thread, handing chunks to the PUT.

    It is ``_fetch_segment``'s sink: it lends the job's buffers to the reads, hashes and
    counts what arrives, queues the filled buffers (bounded: no copy, the PUT sends them
    and gives them back), and ends with ``_END`` once the MD5 matched, or with the error."""

    def __init__(self, job: _Copy, seg: Segment) -> None:
        self.job, self.seg = job, seg
        self.start, self.end, self.written = 0, seg.bytes, 0
        self.digest = hashlib.md5(usedforsecurity=False)
        self.queue: queue.Queue[object] = queue.Queue(maxsize=COPY_QUEUE_CHUNKS)
        self.lock = threading.Lock()
        self.cancelled = False
        self.lent: bytearray | None = None  # lent to a read, not yet handed to ``add``
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name=f"{THREAD_PREFIX}-get-{seg.name}")

    def _run(self) -> None:
        seg = self.seg
        outcome: object = _END
        try:
            _fetch_segment(self.job.source_http, self.job.source_container, seg, self,
                           chunk=COPY_CHUNK)
            actual = self.digest.hexdigest()
            if self.written != seg.bytes:
                outcome = ChecksumMismatch(
                    f"segment {seg.name}: the source sent {self.written} bytes, listed "
                    f"{seg.bytes}", name=seg.name, expected=seg.md5, actual="(too short)")
            elif actual != seg.md5:
                outcome = ChecksumMismatch(
                    f"segment {seg.name}: the source's bytes hash to {actual}, listed "
                    f"{seg.md5}", name=seg.name, expected=seg.md5, actual=actual)
        except _Cancelled:
            return
        except BaseException as exc:  # handed to the PUT's thread, raised there
            outcome = exc
        finally:
            if self.lent is not None:  # the read that found the end of the body
                self.job.give_back(self.lent)
                self.lent = None
        try:
            self._put(outcome)
        except _Cancelled:
            return

    def _put(self, item: object) -> None:
        while True:
            try:
                self.queue.put(item, timeout=0.05)
                return
            except queue.Full:
                if self.cancelled:
                    raise _Cancelled from None

    def lend(self) -> bytearray:
        """A buffer for the next read (one a broken read left unused, else the job's)."""
        if self.lent is None:
            self.lent = self.job.take_buffer()
        return self.lent

    def add(self, data: bytes | memoryview) -> None:
        seg, n = self.seg, len(data)
        self.job.check(seg)  # stopped: the error goes to the PUT, which ends short
        if self.written + n > seg.bytes:
            raise ChecksumMismatch(f"segment {seg.name} is longer than its listed {seg.bytes} "
                                   "bytes", name=seg.name, expected=seg.md5, actual="(too long)")
        self.digest.update(data)
        chunk: bytes | memoryview
        if isinstance(data, memoryview) and self.lent is not None and data.obj is self.lent:
            chunk, self.lent = data, None  # the buffer is the PUT's until it gives it back
        else:
            chunk = bytes(data)  # another transport's chunk (bytes already: not copied)
        with self.lock:
            if self.cancelled:
                raise _Cancelled
            self.written += n
        self.job.tally.add(n)
        self._put(chunk)

    def restart(self) -> None:
        # A ranged GET answered whole: the segment changed since it was listed. What went to
        # the target already cannot be taken back, and the listed MD5 is stale.
        raise CopyError(f"segment {self.seg.name} changed at the source while it was being "
                        "copied: copy the export again once it is stable")

    def cancel(self) -> None:
        """Stop the GET; take its bytes back from the progress count."""
        with self.lock:
            self.cancelled = True
            counted, self.written = self.written, 0
        self.job.tally.add(-counted)
        while True:  # free a producer blocked on a full queue
            try:
                self.queue.get_nowait()
            except queue.Empty:
                break
        self.thread.join()


class _SegmentBody(httpx.SyncByteStream):
    """The PUT's body: every iteration is a new GET of the segment from its first byte (the
    transport's retries, the auth flow's re-login and a stale keep-alive connection all send
    the request again). The last chunk waits until the source's MD5 matched."""

    def __init__(self, job: _Copy, seg: Segment) -> None:
        self.job, self.seg = job, seg
        self.pipe: _Pipe | None = None
        self.runs = 0

    def __iter__(self) -> Iterator[bytes]:
        if self.pipe is not None:
            self.pipe.cancel()
        self._stop_check()
        if self.runs:
            self.job.retried()
        self.runs += 1
        pipe = self.pipe = _Pipe(self.job, self.seg)
        pipe.thread.start()
        held: bytes | memoryview | None = None
        while True:
            try:
                item = pipe.queue.get(timeout=COPY_STOP_POLL)
            except queue.Empty:
                self._stop_check()
                continue
            if isinstance(item, bytes | memoryview):
                if held is not None:
                    self._stop_check()
                    yield held  # type: ignore[misc]  # a memoryview sends as bytes do
                    # Asked for more: the transport has sent it, its buffer is free again.
                    self.job.give_back_view(held)
                held = item
            elif item is _END:
                break
            else:
                assert isinstance(item, BaseException)
                raise _SourceFailed(item)
        if held is not None:
            self._stop_check()
            yield held  # type: ignore[misc]
            self.job.give_back_view(held)

    def _stop_check(self) -> None:
        # Raised out of the body, the PUT ends short of its Content-Length: the target keeps
        # nothing of it. Not an httpx error, so no retry sends the body again.
        try:
            self.job.check(self.seg)
        except CopyCancelled as stopped:
            raise _SourceFailed(stopped) from None

    def finish(self, *, keep: bool) -> None:
        """After the PUT: wait for the GET thread; ``keep=False`` takes its bytes back."""
        pipe = self.pipe
        if pipe is None:
            return
        if keep:
            pipe.thread.join()
        else:
            pipe.cancel()


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, ChecksumMismatch | TransportError):
        return True
    return isinstance(exc, APIError) and exc.status_code >= 500


class _Copy:
    """One copy: the source segments, the target names, counters shared by the workers."""

    def __init__(self, source: Files, source_container: str, target: Files,
                 target_container: str, target_name: str, prefix: str,
                 segments: tuple[Segment, ...], *, tries: int,
                 progress: Progress | None, stop: threading.Event) -> None:
        self.source_http = source._http
        self.source_container = source_container
        self.target = target
        self.target_container = target_container
        self.target_name = target_name
        self.prefix = prefix
        self.segments = segments
        self.tries = tries
        self.stop = stop
        self.tally = _Tally(sum(s.bytes for s in segments), progress)
        self.lock = threading.Lock()
        self.retries = 0
        self.buffers: list[bytearray] = []  # free read buffers, ``COPY_CHUNK`` bytes each

    def take_buffer(self) -> bytearray:
        with self.lock:
            if self.buffers:
                return self.buffers.pop()
        return bytearray(COPY_CHUNK)

    def give_back(self, buffer: bytearray) -> None:
        with self.lock:
            self.buffers.append(buffer)

    def give_back_view(self, chunk: bytes | memoryview) -> None:
        """Return the buffer under a chunk the PUT has sent (``bytes`` chunks are not ours)."""
        if isinstance(chunk, memoryview) and isinstance(chunk.obj, bytearray):
            self.give_back(chunk.obj)

    def target_of(self, seg: Segment) -> str:
        return f"{self.target_name}-{seg.name[len(self.prefix):]}"

    def check(self, seg: Segment | None = None) -> None:
        """``CopyCancelled`` once the copy is stopped."""
        if self.stop.is_set():
            raise CopyCancelled(f"the copy to {self.target_container}/{self.target_name} was "
                                "stopped" + (f" during segment {seg.name}" if seg else "")
                                + ": copy it again to finish it")

    def retried(self) -> None:
        with self.lock:
            self.retries += 1

    def segment(self, seg: Segment, listed: ObjectInfo | None) -> bool:
        """Copy one segment unless it is at the target already; True when it was copied."""
        self.check(seg)  # stopped before this one began: it never starts
        name = self.target_of(seg)
        if listed is not None and (listed.bytes, listed.hash) == (seg.bytes, seg.md5):
            try:
                head = self.target.head_object(self.target_container, name)
            except NotFound:
                head = None
            if head is not None and (head.bytes, head.hash) == (seg.bytes, seg.md5):
                self.tally.add(seg.bytes)
                return False
        for attempt in range(1, self.tries + 1):
            self.check(seg)
            try:
                self.put(seg, name)
                return True
            except Exception as exc:
                if attempt == self.tries or not _retryable(exc):
                    raise
                self.retried()
        raise AssertionError("unreachable")  # pragma: no cover

    def put(self, seg: Segment, name: str) -> None:
        body = _SegmentBody(self, seg)
        headers = {"ETag": seg.md5, "Content-Length": str(seg.bytes),
                   "Content-Type": "application/octet-stream"}
        path = _path(self.target_container, name)
        keep = False
        try:
            try:
                response = self.target._send("PUT", path, content=body, headers=headers)
            except _SourceFailed as failed:
                raise failed.error from None
            if response.status_code == 422:
                raise SegmentRejected(
                    f"the target refused segment {name} (422): the bytes it received do not "
                    f"hash to {seg.md5}", name=name, expected=seg.md5, actual="(refused)")
            raise_for_status(response)
            stored = response.headers.get("etag", "").strip('"').lower()
            if stored and stored != seg.md5:
                raise SegmentRejected(f"the target stored segment {name} with ETag {stored}, "
                                      f"not {seg.md5}", name=name, expected=seg.md5,
                                      actual=stored)
            keep = True
        finally:
            body.finish(keep=keep)


def _pause(seconds: float, stop: threading.Event, what: str) -> None:
    """Wait ``seconds`` (between two listings), or less: ``CopyCancelled`` once stopped."""
    if stop.wait(seconds) if seconds > 0 else stop.is_set():
        raise CopyCancelled(f"the copy was stopped while {what}: copy it again to finish it")


def _source_segments(source: Files, container: str, prefix: str, *, reads_max: int,
                     delay: float, stop: threading.Event) -> tuple[tuple[Segment, ...], int]:
    """The segments under ``prefix``, from the first two listings in a row that agree and
    number them without gaps; and how many listings that took."""
    previous: tuple[tuple[str, int, str], ...] | None = None
    base = prefix[:-1] if prefix.endswith("-") else None
    problems: list[str] = []
    for read in range(1, reads_max + 1):
        if read > 1:
            _pause(delay, stop, "the source was being listed")
        listing = tuple((o.name, o.bytes, o.hash)
                        for o in source.objects(container, prefix=prefix))
        segments, offset = [], 0
        for name, size, md5 in listing:
            segments.append(Segment(name=name, bytes=size, md5=md5.lower(), offset=offset))
            offset += size
        # A gap in the numbering is a segment the listing missed this time.
        problems = _numbering_problems(base, tuple(segments)) if base is not None else []
        if not listing:
            problems = ["no segments listed"]
        if listing == previous and not problems:
            return tuple(segments), read
        previous = listing
    raise CopyError(f"{container}/{prefix}: the source listing did not settle in {reads_max} "
                    f"reads" + (f" ({'; '.join(problems)})" if problems else ""))


def copy_export(source: Files, location: str, target: Files, target_location: str | None = None,
                *, workers: int = DEFAULT_COPY_WORKERS, tries: int = COPY_SEGMENT_TRIES,
                listing_reads: int = LISTING_READS_MAX,
                listing_delay: float = DEFAULT_LISTING_DELAY,
                progress: Progress | None = None,
                cancel: threading.Event | None = None) -> CopyResult:
    """Copy the export at ``location`` (``<container>/<object>``, its DLO manifest) from
    ``source`` to ``target_location`` (default: the same name) in ``target``; see the module.

    The target container is created when missing. Raises ``CopyError`` (listing never settled,
    foreign objects under the target prefix, the assembled target not matching),
    ``SegmentRejected`` / ``ChecksumMismatch`` when a segment still fails after ``tries``,
    ``NotFound`` when the manifest or a listed segment is gone, ``TransportError`` / ``APIError``
    from the connections. ``progress(done, total)``: bytes, already-present segments included.

    ``cancel``: an event another thread (or ``progress``) may set to stop the copy: the
    segments in flight end at their next chunk, none is left half-written, no manifest is
    written, and ``CopyCancelled`` is raised once every thread of the copy has ended. Ctrl-C
    (any ``BaseException`` that is no ``Exception``) stops it the same way, then goes on up.
    A segment that fails for good lets the others in flight finish (a rerun keeps them).
    """
    started = time.perf_counter()
    for name, value in (("workers", workers), ("tries", tries),
                        ("listing_reads", listing_reads)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValidationError(f"{name} must be an integer >= 1, got {value!r}", field=name)
    if listing_reads < 2:
        raise ValidationError("listing_reads must be >= 2: a listing is stable when two reads "
                              "agree", field="listing_reads")
    if not isinstance(listing_delay, int | float) or listing_delay < 0:
        raise ValidationError(f"listing_delay must be seconds >= 0, got {listing_delay!r}",
                              field="listing_delay")
    target_location = location if target_location is None else target_location
    container, name = split_location(location)
    tcontainer, tname = split_location(target_location)
    _check_swift_name(container)
    _check_swift_name(tcontainer)

    manifest = source.head_object(container, name, manifest=True)
    if manifest.manifest:
        seg_container, _, prefix = manifest.manifest.strip('"').partition("/")
    else:
        seg_container, prefix = container, name + "-"
    stop = cancel if cancel is not None else threading.Event()
    segments, reads = _source_segments(source, seg_container, prefix, reads_max=listing_reads,
                                       delay=listing_delay, stop=stop)

    target.create_container(tcontainer)
    job = _Copy(source, seg_container, target, tcontainer, tname, prefix, segments,
                tries=tries, progress=progress, stop=stop)
    present = {o.name: o for o in target.objects(tcontainer, prefix=tname + "-")}
    wanted = {job.target_of(s) for s in segments}
    foreign = sorted(set(present) - wanted)
    if foreign:
        # The manifest would take them in: refuse rather than delete what is not ours.
        raise CopyError(f"{target_location}: the target holds objects under {tname}- that are "
                        f"not segments of this export ({', '.join(foreign[:3])}"
                        f"{', ...' if len(foreign) > 3 else ''}): remove them first")

    if progress:
        progress(0, job.tally.total)
    done = _copy_segments(job, present, workers)
    copied = sum(done)
    # Every segment is in place and verified: only now does the target get its manifest
    # (unless the copy was stopped after its last segment: a stop leaves no manifest).
    job.check()
    response = target._send("PUT", _path(tcontainer, tname), content=b"", headers={
        "X-Object-Manifest": f"{tcontainer}/{tname}-", "Content-Length": "0",
        "Content-Type": manifest.content_type or "application/octet-stream"})
    raise_for_status(response)
    _check_assembled(target, tcontainer, tname, segments, reads=listing_reads,
                     delay=listing_delay, stop=stop)
    copied_bytes = sum(s.bytes for s, was_copied in zip(segments, done, strict=True)
                       if was_copied)
    return CopyResult(source=location, target=target_location, bytes=job.tally.total,
                      copied_bytes=copied_bytes, segments=len(segments), copied=copied,
                      skipped=len(segments) - copied, retries=job.retries, listings=reads,
                      seconds=time.perf_counter() - started)


def _copy_segments(job: _Copy, present: dict[str, ObjectInfo], workers: int) -> list[bool]:
    """Each segment copied (True) or found in place (False), ``workers`` at once; the first
    failure (in segment order) is raised once those running have ended.

    Returns or raises only once every thread of the copy has ended: a copy left running
    behind the caller's back would race the rerun that follows (same objects, twice the
    bandwidth). So the pool runs on a thread of its own, which no signal interrupts (Python
    runs signal handlers on the main thread only): a Ctrl-C lands in this thread's wait for
    it, never halfway through the pool starting a worker it then could not join. (The wait
    is on an event, not ``join``: an interrupted ``join`` takes the thread for ended.)"""
    futures: list[Future[bool]] = []
    broken: list[BaseException] = []
    finished = threading.Event()

    def run_pool() -> None:
        try:
            with ThreadPoolExecutor(max_workers=min(workers, len(job.segments)),
                                    thread_name_prefix=THREAD_PREFIX) as pool:
                futures.extend(pool.submit(job.segment, s, present.get(job.target_of(s)))
                               for s in job.segments)
                for fut in futures:
                    error = fut.exception()
                    if error is not None:  # the copy has failed: start nothing more
                        if not isinstance(error, Exception):
                            job.stop.set()  # a kill stand-in: the others end at a chunk too
                        for other in futures:
                            other.cancel()
                        break  # those running finish (a rerun keeps them) or stop
        except BaseException as exc:  # the pool itself (no new threads at shutdown)
            broken.append(exc)
        finally:
            finished.set()

    runner = threading.Thread(target=run_pool, name=f"{THREAD_PREFIX}-pool", daemon=True)
    try:
        runner.start()
    except BaseException:
        job.stop.set()  # Ctrl-C as it started: a segment begun stops at its first check
        raise
    try:
        finished.wait()
    except BaseException:
        job.stop.set()  # Ctrl-C, a cancelled task: the running segments end at a chunk
        finished.wait()
        raise
    finally:
        runner.join()
    if broken:
        raise broken[0]
    return [fut.result() for fut in futures]


def _check_assembled(target: Files, container: str, name: str, segments: tuple[Segment, ...],
                     *, reads: int, delay: float, stop: threading.Event) -> None:
    """The target's DLO, as its server assembles it, has the source's size and ETag (the MD5
    of the segment ETags in order); read again while the target's listing catches up."""
    size = sum(s.bytes for s in segments)
    etag = hashlib.md5("".join(s.md5 for s in segments).encode(),
                       usedforsecurity=False).hexdigest()
    got = (0, "")
    for read in range(1, reads + 1):
        if read > 1:
            _pause(delay, stop, "the target's object was being checked")
        head = target.head_object(container, name)
        got = (head.bytes, head.hash.lower())
        if got == (size, etag):
            return
    raise CopyError(f"{container}/{name} at the target assembles to {got[0]} bytes with ETag "
                    f"{got[1]}, the source's is {size} bytes with ETag {etag}")


async def copy_export_async(source: AsyncFiles | Files, location: str, target: AsyncFiles | Files,
                            target_location: str | None = None, *,
                            workers: int = DEFAULT_COPY_WORKERS, tries: int = COPY_SEGMENT_TRIES,
                            listing_reads: int = LISTING_READS_MAX,
                            listing_delay: float = DEFAULT_LISTING_DELAY,
                            progress: Progress | None = None,
                            cancel: threading.Event | None = None) -> CopyResult:
    """``copy_export`` on a worker thread (its own threads stream the segments), so an event
    loop (a notebook's kernel) stays free; takes an ``AsyncClient``'s ``files`` too.

    Cancelling the task stops the copy as ``cancel`` does (the event is set): the task
    waits, without blocking the loop, until the copy's threads have ended, then the
    ``CancelledError`` goes on up."""
    def blocking(files: AsyncFiles | Files) -> Files:
        return files._files if isinstance(files, AsyncFiles) else files

    stop = cancel if cancel is not None else threading.Event()
    src, tgt = blocking(source), blocking(target)
    return await acall(Call(lambda: copy_export(  # type: ignore[no-any-return]
        src, location, tgt, target_location, workers=workers, tries=tries,
        listing_reads=listing_reads, listing_delay=listing_delay, progress=progress,
        cancel=stop), stop=stop))

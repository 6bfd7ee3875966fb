"""Move an image to another region or account: export, copy the segments across (streaming),
import, re-apply its metadata, verify, clean up; every step recorded, so a transfer can resume.

``client.transfer(image_id, to=...)`` (``to``: a region name, or a client of another account)
returns a ``Transfer`` handle; ``AsyncClient.transfer`` an ``AsyncTransfer``. The steps, in
order (``STEPS``): ``preflight`` (both sides), ``export`` (started, or an existing complete and
verified export reused), ``export_wait``, ``copy`` (``_copy.copy_export``: streaming, MD5 per
segment, only what is missing), ``manifest`` (the target's DLO read back: its size and MD5),
``import`` (started), ``import_wait``, ``metadata`` (a JSON-patch PATCH: the chosen source
properties and coordinating ones naming the source), ``verify`` (the new image's size and
checksum are those of the bytes copied), ``cleanup`` (optional, never before the import
succeeded).

The steps are one ``_ops`` operation, written once: each client operation it runs goes
through ``_ops.via(source or target, op)`` (the driver's sender sends each request through the
client it is addressed to), and a blocking call (the copy, which has its own threads) is an
``_ops.Call``. ``Transfer.run`` drives it with ``_ops.run`` over blocking clients,
``AsyncTransfer.run`` with ``_ops.arun`` over async ones; both hand every error, Ctrl-C
included, to the step, which records it. A stop reaches the copy too: Ctrl-C on the blocking
driver's thread, or the async task cancelled (the copy's ``Call`` carries its stop event), ends
its segments in flight and the step ends only once its threads have. ``transfer_all`` is one
operation over many transfers, driven the same two ways.

The record (``TransferRecord`` in ``_transfer_store``) is saved as each step starts and ends,
in the audit log's SQLite file. A resumed transfer starts at the first step not completed;
the export and import task ids are saved the moment they are known, and a step that was
interrupted between its POST and that save looks for the task it may have made (created
since the step first started) before posting again: never a second export or import.
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, TypedDict, Unpack, cast
from urllib.parse import quote

import httpx

from imgtools._copy import COPY_CHUNK, DEFAULT_COPY_WORKERS, DEFAULT_LISTING_DELAY, copy_export
from imgtools._exceptions import (
    ConfigurationError,
    ImgToolsError,
    ImportFailed,
    NotExportable,
    NotFound,
    PreflightError,
    TaskFailed,
    TaskNotConfirmed,
    ValidationError,
)
from imgtools._files import (
    Files,
    Progress,
    Segment,
    _fetch_segment,
    resolve_export,
    split_location,
)
from imgtools._http import raise_for_status
from imgtools._imports import (
    IMPORT_SIZE_LIMIT,
    MAX_IMAGE_NAME_CHARS,
    describe_import,
    op_import_preflight,
    validate_import_args,
)
from imgtools._models import Image, Task
from imgtools._ops import Call, Op, Send, arun, run, via
from imgtools._polling import op_wait, op_wait_all
from imgtools._regions import region_session
from imgtools._transfer_store import StepRow, TransferRecord, TransferStore
from imgtools._transport import RETRY_EXTENSION
from imgtools._validation import check_all, validate_container, validate_image_id

if TYPE_CHECKING:
    import pandas as pd

    from imgtools._client import AsyncClient, Client, _BaseClient

__all__ = [
    "CLEANUP_POLICIES",
    "COORDINATING_PREFIX",
    "DEFAULT_CLEANUP",
    "DEFAULT_PROPERTIES",
    "DEFAULT_TRANSFER_CONTAINER",
    "STEPS",
    "AsyncTransfer",
    "CleanupPolicy",
    "NewOptions",
    "OnStep",
    "RunOptions",
    "StepRow",
    "Transfer",
    "TransferFailed",
    "TransferRecord",
    "TransferRefused",
    "TransferStore",
    "TransferVerifyFailed",
    "abegin_transfer",
    "aresume_transfer",
    "atransfer_all",
    "begin_transfer",
    "came_from",
    "lineage_of",
    "resume_transfer",
    "transfer_all",
    "transfers",
    "transfers_frame",
    "went_to",
]

#: The steps of a transfer, in order.
STEPS = ("preflight", "export", "export_wait", "copy", "manifest", "import", "import_wait",
         "metadata", "verify", "cleanup")
#: The container exports go to at the source, and the copy at the target (unless given).
DEFAULT_TRANSFER_CONTAINER = "imgtools-transfers"
#: What ``cleanup=`` takes: nothing, the source export, the target copy, or both.
CleanupPolicy = Literal["none", "export", "copy", "both"]
CLEANUP_POLICIES: tuple[CleanupPolicy, ...] = ("none", "export", "copy", "both")
#: Nothing is deleted unless asked.
DEFAULT_CLEANUP: CleanupPolicy = "none"
#: The source properties re-applied by default (besides the user's own keys).
DEFAULT_PROPERTIES = ("os_distro", "os_version", "tags")
#: Coordinating metadata keys start with this (the image id changes across regions).
COORDINATING_PREFIX = "imgtools_source_"
#: Properties Cloud Images keeps to itself: never re-applied (the service refuses them).
RESERVED_PREFIXES = ("com.rackspace__1__", "os_glance", "org.openstack__1__")
#: Image attributes and service-set properties that are not the user's own keys.
SYSTEM_KEYS = frozenset({
    "id", "name", "status", "visibility", "owner", "size", "virtual_size", "checksum",
    "created_at", "updated_at", "self", "file", "schema", "locations", "direct_url",
    "os_hash_algo", "os_hash_value", "os_hidden", "protected", "min_disk", "min_ram",
    "container_format", "disk_format", "image_type", "os_type", "vm_mode",
    "auto_disk_config", "cache_in_nova", "flavor_classes", "instance_uuid", "user_id",
    "base_image_ref", "image_location", "image_state", "owner_id", "tags"})
#: Times the export and import steps ask again after a ``TaskNotConfirmed`` before failing
#: (a resume asks again too: it looks for the task first).
NOT_CONFIRMED_ASKS = 3
#: Tasks older than this are not looked at when finding an earlier export of the image.
REUSE_LOOKBACK = timedelta(days=2)
_PATCH_TYPE = "application/openstack-images-v2.1-json-patch"

#: ``on_step(step, state)``: a step is ``"running"``, or ended (``"done"``, ``"reused"``,
#: ``"failed"``).
OnStep = Callable[[str, str], object]


class TransferRefused(PreflightError):
    """The preflight found the transfer cannot work (a Windows image, too large for the
    target's import limit, an export or target object in the way)."""


class TransferVerifyFailed(ImgToolsError):
    """The new image's size or checksum is not that of the bytes copied."""


class TransferFailed(ImgToolsError):
    """A step failed; ``transfer_id``, ``step`` and the cause (``__cause__``) say which and
    why. ``client.resume_transfer(transfer_id)`` continues from the last completed step."""

    def __init__(self, message: str, *, transfer_id: str, step: str) -> None:
        super().__init__(message)
        self.transfer_id = transfer_id
        self.step = step


# -- the drivers' senders: each request through the client it is addressed to ----------------

_Steps = Op[Any]
#: Ctrl-C, a cancelled task or a kill stand-in too: the step records it, then it goes on up.
_ALL = (BaseException,)


def _send(step: Send) -> httpx.Response:
    return cast("Client", step.via)._send(step)


async def _asend(step: Send) -> httpx.Response:
    return await cast("AsyncClient", step.via)._asend(step)


def _path(*parts: str) -> str:
    return "/".join(quote(p, safe="") for p in parts)


def _op_head(client: _BaseClient[Any], container: str, name: str | None = None) -> Any:
    """HEAD a container or object: its status (404 included) and headers."""
    parts = (container,) if name is None else (container, name)
    response = yield client._http_request("HEAD", _path(*parts), storage=True)
    if response.status_code != 404:
        client._check(response)
    return response.status_code, response.headers


def _wait(client: _BaseClient[Any], task_id: str, timeout: float | None) -> Op[Task]:
    """Follow one task as ``wait`` does (the client's poll policy; trouble ridden out until
    the deadline): the finished task, failed or not; ``TaskTimeout`` after ``timeout``
    seconds."""
    ops = cast("Client | AsyncClient", client).ops
    try:
        return (yield from via(client, op_wait(ops, task_id, timeout=timeout)))
    except TaskFailed as failed:
        return failed.task


def _create(client: _BaseClient[Any], task_type: str, task_input: Mapping[str, Any],
            what: str, check: str) -> _Steps:
    """POST the task; after a ``TaskNotConfirmed`` (the answer lost and the task not found),
    ask again as the error says, ``NOT_CONFIRMED_ASKS`` times: the client first looks for
    the task of the earlier attempt, so asking again makes no duplicate."""
    asked = 0
    while True:
        try:
            if asked:
                earlier = yield from via(client, client._op_earlier(task_type, task_input,
                                                                    what, check))
                if earlier is not None:
                    return earlier
            return (yield from via(client, client._op_create_task(task_type, task_input, what,
                                                                  live=True, check=check)))
        except TaskNotConfirmed:
            asked += 1
            if asked > NOT_CONFIRMED_ASKS:
                raise


def _op_find_export(client: _BaseClient[Any], task_input: Mapping[str, Any],
                    since: datetime) -> Any:
    """The newest successful export task of this input created since ``since``, whoever
    started it (``None`` if the service no longer lists one: tasks vanish after 48 h)."""
    from imgtools._models import parse_time

    url: str | None = "tasks"
    query: dict[str, Any] | None = {"sort_key": "created_at", "sort_dir": "desc", "limit": 100}
    seen: set[str] = set()
    while url is not None:
        items, url, _ = yield from client._op_page(url, query, "tasks", seen)
        query = None
        for item in items:
            created = parse_time(item.get("created_at")) if isinstance(item, dict) else None
            if created is None or created < since:
                return None
            if item.get("type") != "export" or item.get("status") != "success":
                continue
            known = client._known_input(str(item.get("id")))
            if known is None:
                task, _ = yield from client._op_get_task(str(item["id"]))
                known = task.input or {}
            if all(known.get(k) == v for k, v in task_input.items()):
                return str(item["id"])
    return None


def _op_patch_image(client: _BaseClient[Any], image_id: str, ops: list[dict[str, Any]]) -> Any:
    # The patch only sets values (v2.1 ``add`` replaces a property that exists, ``replace``
    # of tags): sending it twice gives the same image, so a 503, a lost answer or a cut body
    # is asked again like a GET instead of failing the step.
    response = yield client._http_request("PATCH", _path("images", image_id),
                                          content=json.dumps(ops).encode(),
                                          headers={"Content-Type": _PATCH_TYPE},
                                          extensions={RETRY_EXTENSION: True})
    client._check(response)
    return Image.from_json(response.json())


def _sync_files(client: _BaseClient[Any]) -> Files:
    """Blocking Cloud Files calls for the copy's threads (an async client's own)."""
    if hasattr(client, "_storage_blocking"):  # an AsyncClient
        return Files(client._storage_blocking())
    return Files(client._storage)  # type: ignore[attr-defined]


def _public_twin(client: _BaseClient[Any]) -> _BaseClient[Any] | None:
    """The client as it is but on Cloud Files' public URL, when it uses ServiceNet (which only
    reaches Cloud Files of its own region); ``None`` when it does not, or cannot say (a bare
    token has no catalog to take the public URL from)."""
    session = client._session
    if not client.servicenet or session is None or not session.catalog or not client.region:
        return None
    twin = copy.copy(client)
    twin._servicenet = False
    twin._fork(region_session(session, client.region, servicenet=False))
    return twin


def _close(client: _BaseClient[Any]) -> None:
    """Close a client made here (a blocking close is fine for an async one: it never sent on
    its async connections, only on the blocking ones of the copy's threads)."""
    for http in (*getattr(client, "_blocking", ()), client._http, client._storage_http):
        if isinstance(http, httpx.Client):
            http.close()


def _since(started: float | None, client: _BaseClient[Any]) -> datetime | None:
    if started is None:
        return None
    return datetime.fromtimestamp(started - client._reconcile_skew, UTC)


# -- the job: both clients, the record, the steps ----------------------------------------------


class _Job:
    """One transfer's work. Its clients: ``base`` (the caller's), and the twins of other
    regions it makes (``in_region``) for as long as a run lasts: ``open`` before, the runner
    closes ``made`` after, so a handle keeps no connection between runs."""

    def __init__(self, base: _BaseClient[Any], to: Any, record: TransferRecord,
                 store: TransferStore, *, listing_delay: float, on_step: OnStep | None,
                 progress: Progress | None, workers: int = DEFAULT_COPY_WORKERS) -> None:
        self.base, self.to = base, to
        self.made: list[_BaseClient[Any]] = []
        self.source: _BaseClient[Any] = base
        self.target: _BaseClient[Any] = base
        self.opened = False
        self.record, self.store = record, store
        self.listing_delay, self.workers = listing_delay, workers
        self.on_step, self.progress = on_step, progress
        self.earlier: float | None = None  # when the running step was first started, if before

    def open(self) -> None:
        if self.opened:
            return
        base, region = self.base, self.record.source_region
        self.source = base
        if region and base.region and region.upper() != base.region.upper():
            self.source = base.in_region(region)
            self.made.append(self.source)
        self.target = _target_of(self.source, self.to)
        if self.target is not self.source and self.target is not self.to:
            self.made.append(self.target)
        self.opened = True

    def adopt(self, source: _BaseClient[Any], target: _BaseClient[Any]) -> None:
        """Run on these clients (the caller's to close): ``transfer_all``'s shared ends."""
        self.source, self.target, self.made, self.opened = source, target, [], True

    def closing(self) -> list[_BaseClient[Any]]:
        """The twins to close after a run (and forget: the next run makes its own)."""
        made, self.made, self.opened = self.made, [], False
        return made

    def save(self) -> None:
        self.store.save(self.record)

    @property
    def export_object(self) -> str:
        return f"{self.record.source_image}.vhd"

    @property
    def target_location(self) -> str:
        return f"{self.record.target_container}/{self.export_object}"

    # -- the steps (each returns its outcome and a detail) --------------------------------------

    def preflight(self) -> _Steps:
        rec, src, tgt = self.record, self.source, self.target
        try:
            image: Image = yield from via(src, src._op_get_image(rec.source_image))
        except NotFound:
            raise NotExportable(f"cannot transfer image {rec.source_image}: no such image (or "
                                "it is not visible to you)", reason="image not found") from None
        verdict = src.exportability(image)
        if not verdict.ok:
            raise NotExportable(f"cannot transfer image {rec.source_image}: {verdict.reason}",
                                reason=verdict.reason or "not exportable")
        if str(image.properties.get("os_type", "")).lower() == "windows":
            raise TransferRefused(f"cannot transfer image {rec.source_image}: Windows images "
                                  "cannot be imported", reason="windows")
        if image.size is not None and image.size > IMPORT_SIZE_LIMIT:
            raise TransferRefused(f"cannot transfer image {rec.source_image}: {image.size} bytes "
                                  f"is over the target's import limit of {IMPORT_SIZE_LIMIT} "
                                  "bytes", reason="too large")
        if not rec.name:  # the new image keeps the source's name unless given another
            rec.name = (image.name or image.id)[:MAX_IMAGE_NAME_CHARS]
        # The target can be reached (Cloud Images and Cloud Files) before anything is made.
        yield from via(tgt, tgt._op_page("images", {"limit": 1}, "images", None))
        yield from via(tgt, _op_head(tgt, rec.target_container))
        exported, _ = yield from via(src, _op_head(src, rec.source_container,
                                                  self.export_object))
        there, _ = yield from via(tgt, _op_head(tgt, rec.target_container,
                                                self.export_object))
        if there != 404 and exported == 404:
            raise TransferRefused(f"{self.target_location} already exists at the target and "
                                  "no export of this image is there to reuse: delete it or "
                                  "choose another target container", reason="target exists")
        return "done", "export exists: reused if verified" if exported != 404 else None

    def export(self) -> _Steps:
        rec, src = self.record, self.source
        if rec.export_task is not None or rec.export_reused:  # saved before a stop
            return "done", rec.export_task or rec.export_location
        location = f"{rec.source_container}/{self.export_object}"
        task_input, what, check = src._export_task(rec.source_image, rec.source_container)
        found: Task | None = None
        if self.earlier is not None:  # a run of this step was cut off: its task may exist
            found = yield from via(src, src._op_find_task("export", task_input,
                                                          _since(self.earlier, src)))
            if found is not None and found.status.value == "failure":
                found = None  # a failed export is no duplicate: start another
        if found is None:
            status, _ = yield from via(src, _op_head(src, rec.source_container,
                                                     self.export_object))
            if status != 404:
                stop = threading.Event()  # set if the step's task is cancelled meanwhile
                report = yield Call(lambda: _sync_files(src)._verify_export(
                    location, expected_bytes=None, progress=None, stop=stop), stop=stop)
                if not report.ok:
                    raise TransferRefused(
                        f"{location} exists but is not a complete export "
                        f"({'; '.join(report.problems)}): delete it or choose another "
                        "container", reason="export incomplete")
                since = datetime.now(UTC) - REUSE_LOOKBACK
                earlier = yield from via(src, _op_find_export(src, task_input, since))
                rec.export_reused, rec.export_location = True, location
                rec.export_task = earlier
                self.save()
                return "reused", f"{location} (export task {rec.export_task or 'unknown'})"
            yield from via(src, src._op_put_container(rec.source_container))
            found = yield from _create(src, "export", task_input, what, check)
        assert found is not None
        rec.export_task = found.id
        self.save()
        return "done", found.id

    def export_wait(self) -> _Steps:
        rec = self.record
        if rec.export_reused:
            return "reused", rec.export_location
        assert rec.export_task is not None
        task: Task = yield from _wait(self.source, rec.export_task,
                                      self.source.wait_timeout)
        if task.status.value != "success":
            # A resume starts another export (this one made nothing to duplicate).
            rec.export_task, rec.step = None, "preflight"
            raise TaskFailed(f"export task {task.id} failed: {task.message}", task=task)
        _, rec.export_location = resolve_export(task)
        return "done", rec.export_location

    @property
    def same_region(self) -> bool:
        return (self.source.region or "").upper() == (self.target.region or "").upper()

    def copy(self) -> _Steps:
        rec = self.record
        assert rec.export_location is not None
        # ServiceNet reaches only its own region's Cloud Files: across regions, the public URLs.
        ends = [self.source, self.target]
        made: list[_BaseClient[Any]] = []
        if not self.same_region:
            for i, end in enumerate(ends):
                twin = _public_twin(end)
                if twin is not None:
                    ends[i] = twin
                    made.append(twin)
        source, target = _sync_files(ends[0]), _sync_files(ends[1])
        # Set when the async driver's task is cancelled (a Stop): the copy's threads end
        # before the step is recorded failed, so a Resume never races them.
        stop = threading.Event()
        try:
            result = yield Call(lambda: copy_export(
                source, rec.export_location or "", target, self.target_location,
                workers=self.workers, listing_delay=self.listing_delay,
                progress=self.progress, cancel=stop), stop=stop)
        finally:
            for twin in made:
                _close(twin)
        rec.copy_bytes, rec.copy_segments = result.bytes, result.segments
        rec.copy_copied_bytes += result.copied_bytes
        rec.copy_retries += result.retries
        rec.copy_seconds += result.seconds
        rec.target_location = self.target_location
        rec.servicenet = self.same_region and ends[0].servicenet and ends[1].servicenet
        return "done", (f"{result.copied} segments copied, {result.skipped} already there, "
                        f"{result.copied_bytes} bytes")

    def manifest(self) -> _Steps:
        rec = self.record
        files = _sync_files(self.target)
        container, name = split_location(self.target_location)
        head = yield Call(lambda: files.head_object(container, name, manifest=True))
        if not head.manifest:
            raise TransferVerifyFailed(f"{self.target_location} at the target is not a DLO "
                                       "manifest")

        # The assembled object read back whole; a connection cut halfway is asked again for
        # the rest (Range, If-Range on the object's ETag), as downloads do, not failing the
        # step: reading it again from the start is what a resume would do.
        whole = yield Call(lambda: files.head_object(container, name))
        # The whole image is read: a Stop (the task cancelled) ends the read at a chunk too.
        stop = threading.Event()
        sink = _Hasher(self.target_location, whole.bytes, stop)
        yield Call(lambda: _fetch_segment(files._http, container,
                                           Segment(name, whole.bytes, whole.hash, 0), sink,
                                           chunk=COPY_CHUNK), stop=stop)
        size, md5 = sink.written, sink.digest.hexdigest()
        if rec.copy_bytes is not None and size != rec.copy_bytes:
            raise TransferVerifyFailed(f"{self.target_location} assembles to {size} bytes, "
                                       f"{rec.copy_bytes} were copied")
        rec.copy_md5 = md5
        return "done", f"{head.manifest} ({size} bytes, md5 {md5})"

    def import_(self) -> _Steps:
        rec, tgt = self.record, self.target
        if rec.import_task is not None:  # saved before a stop
            return "done", rec.import_task
        container, obj, task_input = validate_import_args(self.target_location, rec.name, "vhd")
        what, check = describe_import(task_input)
        found: Task | None = None
        if self.earlier is not None:
            found = yield from via(tgt, tgt._op_find_task("import", task_input,
                                                          _since(self.earlier, tgt)))
            if found is not None and found.status.value == "failure":
                found = None
        if found is None:
            yield from via(tgt, op_import_preflight(tgt, container, obj, task_input))
            found = yield from _create(tgt, "import", task_input, what, check)
        assert found is not None
        rec.import_task = found.id
        self.save()
        return "done", found.id

    def import_wait(self) -> _Steps:
        rec = self.record
        assert rec.import_task is not None
        task: Task = yield from _wait(self.target, rec.import_task,
                                      self.target.wait_timeout)
        if task.status.value != "success":
            rec.import_task, rec.step = None, "manifest"  # a resume imports again
            raise ImportFailed(f"import task {task.id} failed: {task.message}", task=task)
        image_id = (task.result or {}).get("image_id")
        if not isinstance(image_id, str):
            raise TransferVerifyFailed(f"import task {task.id} succeeded without an image id")
        rec.target_image = image_id
        return "done", image_id

    def metadata(self) -> _Steps:
        rec = self.record
        assert rec.target_image is not None
        src, tgt = self.source, self.target
        image: Image = yield from via(src, src._op_get_image(rec.source_image))
        ops = patch_for(image, rec)
        yield from via(tgt, _op_patch_image(tgt, rec.target_image, ops))
        return "done", ", ".join(op["path"].lstrip("/") for op in ops)

    def verify(self) -> _Steps:
        rec = self.record
        assert rec.target_image is not None
        tgt = self.target
        image: Image = yield from via(tgt, tgt._op_get_image(rec.target_image))
        if (image.size, image.checksum) != (rec.copy_bytes, rec.copy_md5):
            raise TransferVerifyFailed(
                f"image {image.id} is {image.size} bytes with checksum {image.checksum}; the "
                f"bytes copied were {rec.copy_bytes} with MD5 {rec.copy_md5}")
        return "done", f"{image.size} bytes, checksum {image.checksum}"

    def cleanup(self) -> _Steps:
        rec = self.record
        if rec.cleanup == "none":
            return "done", "nothing to clean up"
        done = {s.step for s in self.store.steps(rec.id) if s.outcome == "done"}
        if rec.target_image is None or "import_wait" not in done:
            raise TransferRefused("cleanup refused: the import has not succeeded",
                                  reason="import not done")
        removed: list[str] = []
        if rec.cleanup in ("export", "both") and rec.export_location:
            files = _sync_files(self.source)
            n = yield Call(lambda: _delete_dlo(files, rec.export_location or ""))
            removed.append(f"source {rec.export_location} ({n} objects)")
        if rec.cleanup in ("copy", "both"):
            files = _sync_files(self.target)
            n = yield Call(lambda: _delete_dlo(files, self.target_location))
            removed.append(f"target {self.target_location} ({n} objects)")
        rec.cleaned = "; ".join(removed)
        return "done", rec.cleaned


class _Hasher:
    """``_fetch_segment``'s sink for the manifest step: hashes and counts, keeps nothing."""

    def __init__(self, location: str, size: int, stop: threading.Event) -> None:
        self.location, self.stop = location, stop
        self.start, self.end, self.written = 0, size, 0
        self.digest = hashlib.md5(usedforsecurity=False)

    def add(self, data: bytes | memoryview) -> None:
        if self.stop.is_set():  # the step's task was cancelled: read no further
            raise TransferVerifyFailed(f"reading {self.location} back was stopped")
        self.digest.update(data)
        self.written += len(data)

    def restart(self) -> None:
        # A ranged GET answered whole: the object changed since the HEAD; the bytes hashed
        # so far belong to another version.
        raise TransferVerifyFailed(f"{self.location} changed at the target while it was "
                                   "being read back")


def _delete_dlo(files: Files, location: str) -> int:
    """Delete a DLO: its segments, then its manifest (so no manifest outlives a segment);
    already-missing objects count as deleted. How many objects were removed."""
    from imgtools._files import _path

    container, name = split_location(location)
    try:
        head = files.head_object(container, name, manifest=True)
        seg_container, _, prefix = (head.manifest or f"{container}/{name}-").partition("/")
    except NotFound:
        seg_container, prefix = container, name + "-"
    removed = 0
    for obj in list(files.objects(seg_container, prefix=prefix)):
        response = files._send("DELETE", _path(seg_container, obj.name))
        if response.status_code != 404:
            raise_for_status(response)
            removed += 1
    response = files._send("DELETE", _path(container, name))
    if response.status_code != 404:
        raise_for_status(response)
        removed += 1
    return removed


def chosen_properties(image: Image, keys: Sequence[str] | None) -> dict[str, Any]:
    """The source properties to re-apply: ``keys`` (``None``: ``DEFAULT_PROPERTIES`` and the
    user's own keys), never a reserved one."""
    props = image.properties
    if keys is None:
        wanted = [k for k in DEFAULT_PROPERTIES] + sorted(
            k for k in props if k not in SYSTEM_KEYS and not k.startswith(RESERVED_PREFIXES)
            and not k.startswith(COORDINATING_PREFIX) and k not in DEFAULT_PROPERTIES)
    else:
        wanted = list(keys)
    return {k: props[k] for k in wanted
            if k in props and props[k] is not None and not k.startswith(RESERVED_PREFIXES)}


def patch_for(image: Image, rec: TransferRecord) -> list[dict[str, Any]]:
    """The JSON patch for the new image: chosen properties and coordinating metadata."""
    keys = None if rec.properties == ["*default*"] else rec.properties
    ops: list[dict[str, Any]] = []
    for key, value in chosen_properties(image, keys).items():
        if key == "tags":
            ops.append({"op": "replace", "path": "/tags", "value": list(value)})
        else:
            ops.append({"op": "add", "path": f"/{key}", "value": str(value)})
    coordinating = {"region": rec.source_region, "account": rec.source_account,
                    "image": rec.source_image, "export_task": rec.export_task,
                    "transfer": rec.id}
    for key, value in coordinating.items():
        if value is not None:
            ops.append({"op": "add", "path": f"/{COORDINATING_PREFIX}{key}",
                        "value": str(value)})
    return ops


# -- the step loop (one operation) and the handles that drive it ---------------------------------


def _op_run(job: _Job, until: str | None) -> Op[TransferRecord]:
    """The steps not completed yet (through ``until``), as one operation: each step's start
    and end saved; a step that raises is saved as failed, then ``TransferFailed`` (or, for a
    ``BaseException``, that itself) goes on up."""
    rec, store = job.record, job.store
    start = 0 if rec.step is None else STEPS.index(rec.step) + 1
    rec.status, rec.error = "running", None
    job.save()
    for step in STEPS[start:]:
        job.earlier = store.first_start(rec.id, step)
        started = store.step_started(rec.id, step)
        if job.on_step:
            job.on_step(step, "running")
        try:
            outcome, detail = yield from getattr(job, "import_" if step == "import" else step)()
        except BaseException as exc:
            text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            store.step_ended(rec.id, step, started, "failed", text)
            rec.status, rec.error = "failed", f"{step}: {text}"
            job.save()
            if job.on_step:
                job.on_step(step, "failed")
            if isinstance(exc, Exception):
                raise TransferFailed(f"transfer {rec.id} failed at {step}: {text}; resume it "
                                     f"with client.resume_transfer({rec.id!r})",
                                     transfer_id=rec.id, step=step) from exc
            raise
        store.step_ended(rec.id, step, started, outcome, detail)
        rec.step = step
        job.save()
        if job.on_step:
            job.on_step(step, outcome)
        if step == until:
            return rec
    rec.status = "done"
    job.save()
    return rec


class _Handle:
    """What both handles share: the record, the store, the two clients."""

    def __init__(self, job: _Job) -> None:
        self._job = job

    @property
    def id(self) -> str:
        return self._job.record.id

    @property
    def record(self) -> TransferRecord:
        """The transfer as last saved (lineage, copy figures, status, last step)."""
        return self._job.record

    @property
    def status(self) -> str:
        return self._job.record.status

    @property
    def target_image(self) -> str | None:
        return self._job.record.target_image

    def steps(self) -> list[StepRow]:
        """Every step run so far: start, end, outcome (a resumed step has a row per run)."""
        return self._job.store.steps(self.id)

    def __repr__(self) -> str:
        rec = self._job.record
        return (f"{type(self).__name__}(id={rec.id!r}, source_image={rec.source_image!r}, "
                f"{rec.source_region}->{rec.target_region}, status={rec.status!r}, "
                f"step={rec.step!r})")


class Transfer(_Handle):
    """A transfer followed through blocking clients; see the module."""

    def run(self, *, until: str | None = None) -> TransferRecord:
        """Run the steps not completed yet (through ``until``, if given); ``TransferFailed``
        (the cause chained) when one fails, its state saved."""
        job = self._job
        try:
            job.open()
            return run(_op_run(job, until), _send, errors=_ALL)
        finally:
            for twin in job.closing():
                cast("Client", twin).close()

    def resume(self) -> TransferRecord:
        """Continue from the last completed step."""
        return self.run()


class AsyncTransfer(_Handle):
    """The async twin of ``Transfer``: the same operation, awaited (blocking calls on a worker
    thread)."""

    async def run(self, *, until: str | None = None) -> TransferRecord:
        job = self._job
        try:
            job.open()
            await cast("AsyncClient", job.target).open()  # another account's may not be yet
            return await arun(_op_run(job, until), _asend, errors=_ALL)
        finally:
            for twin in job.closing():
                await cast("AsyncClient", twin).aclose()

    async def resume(self) -> TransferRecord:
        return await self.run()


# -- starting and resuming ---------------------------------------------------------------------


def _store_of(client: _BaseClient[Any], store: TransferStore | None) -> TransferStore:
    if store is not None:
        return store
    log = client.log
    path = getattr(log, "path", None)
    return TransferStore(path)


def _validate(image_id: Any, to: Any, name: Any, properties: Any, cleanup: Any,
              container: Any, target_container: Any) -> tuple[str, list[str], str, str]:
    errors: list[ValidationError] = []
    image = container_ok = target_ok = ""
    try:
        image = validate_image_id(image_id)
    except ValidationError as exc:
        errors.append(exc)
    for field, value in (("container", container), ("target_container", target_container)):
        try:
            if field == "container":
                container_ok = validate_container(value, field=field)
            else:
                target_ok = validate_container(value, field=field)
        except ValidationError as exc:
            errors.append(exc)
    # Duck-typed: this module never imports the client at run time (the client imports it).
    is_client = hasattr(to, "in_region") and hasattr(to, "_run")
    if not (isinstance(to, str) or is_client) or (isinstance(to, str) and not to.strip()):
        errors.append(ValidationError(f"to must be a region name or a client, got {to!r}",
                                      field="to"))
    if name is not None and (not isinstance(name, str) or not name.strip()
                             or len(name) > MAX_IMAGE_NAME_CHARS):
        errors.append(ValidationError(f"name must be a non-empty string of at most "
                                      f"{MAX_IMAGE_NAME_CHARS} characters, got {name!r}",
                                      field="name"))
    keys: list[str] = ["*default*"]
    if properties is not None:
        if isinstance(properties, str) or not isinstance(properties, Iterable):
            errors.append(ValidationError("properties must be a list of property names",
                                          field="properties"))
        else:
            keys = list(properties)
            bad = [k for k in keys if not isinstance(k, str) or not k
                   or k.startswith(RESERVED_PREFIXES)]
            if bad:
                errors.append(ValidationError(
                    f"properties: {bad!r} cannot be re-applied (reserved by Cloud Images, or "
                    "not a property name)", field="properties"))
    policy = "none" if cleanup is None else cleanup
    if policy not in CLEANUP_POLICIES:
        errors.append(ValidationError(f"cleanup must be one of {', '.join(CLEANUP_POLICIES)}, "
                                      f"got {cleanup!r}", field="cleanup"))
    check_all(errors)
    return image, keys, container_ok, target_ok


def _target_of(client: _BaseClient[Any], to: Any) -> _BaseClient[Any]:
    if isinstance(to, str):
        if client.region is not None and to.strip().upper() == client.region.upper():
            return client
        return client.in_region(to)
    if type(to) is not type(client):
        raise ValidationError(f"to must be a client of the same kind ({type(client).__name__}), "
                              f"not {type(to).__name__}", field="to")
    return to  # type: ignore[no-any-return]


def _target_facts(client: _BaseClient[Any], to: Any) -> tuple[str | None, str | None]:
    """The target's region and account, checked with no client made and no request sent
    (``UnknownRegion`` for a region the catalog does not offer)."""
    if not isinstance(to, str):
        _target_of(client, to)  # the kind of client
        return to.region, to.tenant_id
    if client.region is not None and to.strip().upper() == client.region.upper():
        return client.region, client.tenant_id
    if client._session is None:
        raise ConfigurationError("the client has not logged in yet: await client.open() first")
    session = region_session(client._session, to, servicenet=client.servicenet)
    return session.region, client.tenant_id


class RunOptions(TypedDict, total=False):
    """How a transfer runs (new or resumed); the defaults are the named constants."""

    listing_delay: float
    workers: int
    store: TransferStore | None
    on_step: OnStep | None
    progress: Progress | None


class NewOptions(RunOptions, total=False):
    """What a new transfer is, besides its image and target."""

    name: str | None
    properties: Sequence[str] | None
    cleanup: CleanupPolicy
    container: str
    target_container: str | None


def _new_job(client: _BaseClient[Any], image_id: str, *, to: Any, name: str | None = None,
             properties: Sequence[str] | None = None,
             cleanup: CleanupPolicy = DEFAULT_CLEANUP,
             container: str = DEFAULT_TRANSFER_CONTAINER, target_container: str | None = None,
             listing_delay: float = DEFAULT_LISTING_DELAY, workers: int = DEFAULT_COPY_WORKERS,
             store: TransferStore | None = None, on_step: OnStep | None = None,
             progress: Progress | None = None) -> _Job:
    target_container = container if target_container is None else target_container
    image, keys, source_c, target_c = _validate(image_id, to, name, properties, cleanup,
                                                container, target_container)
    target_region, target_account = _target_facts(client, to)
    record = TransferRecord(
        name=name if name is not None else "", source_image=image,
        source_container=source_c, target_container=target_c, properties=keys,
        cleanup="none" if cleanup is None else cleanup, source_region=client.region,
        source_account=client.tenant_id, target_region=target_region,
        target_account=target_account)
    job = _Job(client, to, record, _store_of(client, store), listing_delay=listing_delay,
               workers=workers, on_step=on_step, progress=progress)
    job.save()
    return job


def _resumed_job(client: _BaseClient[Any], transfer_id: str, *, to: Any,
                 listing_delay: float = DEFAULT_LISTING_DELAY,
                 workers: int = DEFAULT_COPY_WORKERS, store: TransferStore | None = None,
                 on_step: OnStep | None = None, progress: Progress | None = None) -> _Job:
    if not isinstance(transfer_id, str) or not transfer_id:
        raise ValidationError(f"transfer_id must be a transfer's id, got {transfer_id!r}",
                              field="transfer_id")
    store = _store_of(client, store)
    record = store.get(transfer_id)
    if record is None:
        raise ValidationError(f"no transfer {transfer_id!r} in {store.path}",
                              field="transfer_id")
    if record.source_account not in (None, client.tenant_id):
        raise ConfigurationError(f"transfer {transfer_id} is from account "
                                 f"{record.source_account}: resume it with a client of that "
                                 "account")
    if to is None:
        if record.target_account not in (None, client.tenant_id):
            raise ConfigurationError(f"transfer {transfer_id} goes to account "
                                     f"{record.target_account}: pass to= a client of it")
        to = record.target_region or client.region or ""
    return _Job(client, to, record, store, listing_delay=listing_delay, workers=workers,
                on_step=on_step, progress=progress)


def begin_transfer(client: Client, image_id: str, *, to: str | Client,
                   **options: Unpack[NewOptions]) -> Transfer:
    """A new transfer's handle, its record saved, no step run (``Client.transfer`` runs it)."""
    return Transfer(_new_job(client, image_id, to=to, **options))


def resume_transfer(client: Client, transfer_id: str, *, to: str | Client | None = None,
                    **options: Unpack[RunOptions]) -> Transfer:
    """The handle of a recorded transfer (``run()`` continues it); ``to``: the target's client
    when it is another account's (default: this login in the recorded target region)."""
    return Transfer(_resumed_job(client, transfer_id, to=to, **options))


async def abegin_transfer(client: AsyncClient, image_id: str, *, to: str | AsyncClient,
                          **options: Unpack[NewOptions]) -> AsyncTransfer:
    """As ``begin_transfer``, for an ``AsyncClient`` (logged in first if need be)."""
    await client.open()
    return AsyncTransfer(_new_job(client, image_id, to=to, **options))


async def aresume_transfer(client: AsyncClient, transfer_id: str, *,
                           to: str | AsyncClient | None = None,
                           **options: Unpack[RunOptions]) -> AsyncTransfer:
    """As ``resume_transfer``, for an ``AsyncClient``."""
    await client.open()
    return AsyncTransfer(_resumed_job(client, transfer_id, to=to, **options))


# -- many at once: one operation, two thin drivers ---------------------------------------------


def _op_all(jobs: list[_Job], source: _BaseClient[Any], target: _BaseClient[Any]) -> _Steps:
    """``transfer_all``'s operation: every transfer through its export, one batch wait
    (``wait_all``: one listing per round, not one GET per task) for the exports at the source;
    every one through its import, one batch wait for the imports at the target; then the rest.
    A transfer that fails is left failed (its ``status``, ``record.error``) and the others go
    on."""
    for job in jobs:
        job.adopt(source, target)
    alive = list(jobs)
    try:
        for until, end in (("export", source), ("import", target)):
            yield from _advance(alive, until)
            tasks = [t for job in alive if (t := _followed(job.record, until))]
            if tasks:
                ops = cast("Client | AsyncClient", end).ops
                yield from via(end, op_wait_all(ops, tasks))
        yield from _advance(alive, None)
    finally:
        for job in jobs:
            job.closing()


def _advance(alive: list[_Job], until: str | None) -> _Steps:
    """Run each transfer through ``until``; drop from ``alive`` those that fail."""
    for job in list(alive):
        try:
            yield from _op_run(job, until)
        except TransferFailed:
            alive.remove(job)


def _followed(rec: TransferRecord, until: str) -> str | None:
    """The task ``transfer_all`` waits for after running a transfer through ``until``."""
    if until == "import":
        return rec.import_task
    return None if rec.export_reused else rec.export_task


def transfer_all(client: Client, images: Iterable[str], *, to: str | Client,
                 **options: Unpack[NewOptions]) -> list[Transfer]:
    """Transfer many images (see ``_op_all``); every handle is returned, resumable."""
    jobs = [_new_job(client, image, to=to, **options) for image in images]
    target = cast("Client", _target_of(client, to))
    try:
        run(_op_all(jobs, client, target), _send, errors=_ALL)
    finally:
        if target is not client and target is not to:
            target.close()
    return [Transfer(job) for job in jobs]


async def atransfer_all(client: AsyncClient, images: Iterable[str], *, to: str | AsyncClient,
                        **options: Unpack[NewOptions]) -> list[AsyncTransfer]:
    """As ``transfer_all``, for an ``AsyncClient``."""
    await client.open()
    jobs = [_new_job(client, image, to=to, **options) for image in images]
    target = cast("AsyncClient", _target_of(client, to))
    try:
        await target.open()
        await arun(_op_all(jobs, client, target), _asend, errors=_ALL)
    finally:
        if target is not client and target is not to:
            await target.aclose()
    return [AsyncTransfer(job) for job in jobs]


# -- lineage and listing -----------------------------------------------------------------------


def transfers(*, store: TransferStore | None = None) -> list[TransferRecord]:
    """Every recorded transfer (any state), oldest first."""
    return (store or TransferStore()).records()


def came_from(image_id: str, *, store: TransferStore | None = None) -> list[TransferRecord]:
    """Where did this image come from? The transfers that made it, nearest first, back to
    the original (each record's ``source_image`` is the previous one's target)."""
    store = store or TransferStore()
    chain: list[TransferRecord] = []
    seen: set[str] = set()
    current = image_id
    while current not in seen:
        seen.add(current)
        made = [r for r in store.records(target_image=current) if r.status == "done"]
        if not made:
            break
        chain.append(made[-1])
        current = made[-1].source_image
    return chain


def went_to(image_id: str, *, store: TransferStore | None = None) -> list[TransferRecord]:
    """Where did this image go? Its transfers (any state), oldest first."""
    return (store or TransferStore()).records(source_image=image_id)


def lineage_of(image_id: str, *, store: TransferStore | None = None
               ) -> dict[str, list[TransferRecord]]:
    """Both answers: ``{"came_from": [...], "went_to": [...]}``."""
    store = store or TransferStore()
    return {"came_from": came_from(image_id, store=store),
            "went_to": went_to(image_id, store=store)}


def transfers_frame(records: Iterable[TransferRecord] | None = None, *,
                    store: TransferStore | None = None) -> pd.DataFrame:
    """The transfers as a typed DataFrame (one row each; step times in ``steps``)."""
    from imgtools._transfer_frames import transfers_frame as build

    store = store or TransferStore()
    records = store.records() if records is None else list(records)
    return build(records, store.steps())

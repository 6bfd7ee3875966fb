"""Cost hygiene: the export manifests and segments in an account that nothing still needs.

An export is a Dynamic Large Object: a zero-byte manifest whose ``X-Object-Manifest`` names
a segment prefix (``<container>/<uuid>.vhd-``) and the segments ``<prefix>00001``, ... under
it. Both keep costing money after a download or a transfer. ``find_leftovers`` lists them:

- every manifest found by HEAD-ing the account's zero-byte objects, with the segments its
  prefix covers ("export");
- segments named ``<base>-NNNNN`` that no manifest covers ("orphan segments": the manifest
  was deleted, or an upload stopped before writing it);

leaving out every *protected* location (``<container>/<object>``: the manifest, and the
segments under ``<object>-``). ``Client.leftovers`` (and ``AsyncClient``'s) always protects
the exports of tasks still ``pending``/``processing`` in the service (their segments exist
before the manifest; ``op_running_exports``) and of transfers the audit log records as
unfinished (``running_transfer_locations``).
``delete_leftovers`` removes exactly the objects of a listing, manifests before their
segments, so no half object is ever served whole.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from imgtools._exceptions import NotFound, ValidationError
from imgtools._files import Files, ObjectInfo, _path, split_location
from imgtools._http import raise_for_status
from imgtools._models import Task, TaskStatus
from imgtools._ops import Gather, Op

if TYPE_CHECKING:
    from imgtools._client import Ops

__all__ = [
    "DeleteReport",
    "Leftover",
    "LeftoverKind",
    "LeftoversReport",
    "check_protected",
    "delete_leftovers",
    "find_leftovers",
    "op_running_exports",
    "protected_prefixes",
    "running_export_locations",
    "running_transfer_locations",
]

#: A DLO segment's name: the manifest's name, a dash, and a number of at least five digits.
SEGMENT_RE: Final = re.compile(r"^(?P<base>.+)-(?P<number>\d{5,})$")
#: A transfer in one of these states needs nothing any more; every other state (``running``,
#: and ``failed``, which ``resume`` continues from) keeps its export and copy protected.
FINAL_TRANSFER_STATES: Final = frozenset({"done", "cancelled", "canceled", "abandoned"})
#: The audit log's table of transfers (written by imgtools.transfer when it is there).
TRANSFERS_TABLE: Final = "transfers"
#: Columns of that table holding a ``<container>/<object>`` location.
TRANSFER_LOCATION_COLUMNS: Final = ("export_location", "target_location")
#: Columns naming the image and its containers, for a transfer whose locations are not yet
#: recorded: the export goes to ``<container>/<image>.vhd``.
TRANSFER_IMAGE_COLUMN: Final = "source_image"
TRANSFER_CONTAINER_COLUMNS: Final = ("source_container", "target_container")
#: Export suffix of Cloud Images: ``<container>/<image uuid>.vhd``.
EXPORT_SUFFIX: Final = ".vhd"
#: The columns of the table, CSV and JSON forms of a listing.
COLUMNS: Final = ("kind", "container", "manifest", "segments", "bytes", "last_modified",
                  "age_days")

#: What a ``Leftover`` is: a whole export, or segments whose manifest is gone.
LeftoverKind = Literal["export", "orphan segments"]


@dataclass(frozen=True, slots=True)
class Leftover:
    """One export (``kind="export"``: ``manifest`` and its segments) or a set of segments
    without a manifest (``kind="orphan segments"``, ``manifest`` is ``None``)."""

    kind: LeftoverKind
    container: str
    manifest: str | None
    #: Where the segments are: ``<container>/<prefix>`` (a manifest's X-Object-Manifest).
    segment_prefix: str
    segments: tuple[str, ...]
    bytes: int
    #: The newest of its objects' modification times (UTC), when the listing gave them.
    last_modified: datetime | None
    #: Each segment's bytes, in the order of ``segments``.
    segment_bytes: tuple[int, ...] = field(default=(), compare=False, repr=False)

    @property
    def objects(self) -> tuple[tuple[str, str], ...]:
        """Every ``(container, name)`` it holds: the manifest first, then its segments."""
        seg_container = self.segment_prefix.partition("/")[0]
        head = ((self.container, self.manifest),) if self.manifest is not None else ()
        return head + tuple((seg_container, s) for s in self.segments)

    def age(self, now: datetime) -> float | None:
        """Seconds since it was last modified."""
        if self.last_modified is None:
            return None
        return (now - self.last_modified).total_seconds()


@dataclass(frozen=True, slots=True)
class LeftoversReport:
    """What ``find_leftovers`` found; ``protected`` are the locations it left out."""

    items: tuple[Leftover, ...]
    protected: frozenset[str]
    checked_at: datetime
    containers: tuple[str, ...] = field(default=())

    @property
    def bytes(self) -> int:
        return sum(item.bytes for item in self.items)

    @property
    def object_count(self) -> int:
        return sum(len(item.objects) for item in self.items)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per leftover, with the keys of ``COLUMNS``."""
        out = []
        for item in self.items:
            age = item.age(self.checked_at)
            out.append({
                "kind": item.kind, "container": item.container,
                "manifest": item.manifest or "", "segments": len(item.segments),
                "bytes": item.bytes,
                "last_modified": (item.last_modified.strftime("%Y-%m-%dT%H:%M:%SZ")
                                  if item.last_modified else ""),
                "age_days": round(age / 86400, 2) if age is not None else None,
            })
        return out

    def to_json(self) -> str:
        return json.dumps({"leftovers": self.rows(), "bytes": self.bytes,
                           "objects": self.object_count,
                           "protected": sorted(self.protected)}, indent=2)

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows())
        return buffer.getvalue()

    def table(self) -> str:
        if not self.items:
            return f"no leftovers ({len(self.protected)} location(s) protected)"
        rows = [{k: ("" if v is None else str(v)) for k, v in row.items()}
                for row in self.rows()]
        widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in COLUMNS}
        right = {"segments", "bytes", "age_days"}

        def line(values: dict[str, str]) -> str:
            return "  ".join(values[c].rjust(widths[c]) if c in right else
                             values[c].ljust(widths[c]) for c in COLUMNS).rstrip()

        out = [line({c: c for c in COLUMNS}), *(line(r) for r in rows)]
        out.append(f"{len(self.items)} leftover(s), {self.object_count} object(s), "
                   f"{self.bytes} bytes ({len(self.protected)} location(s) protected)")
        return "\n".join(out)

    def __str__(self) -> str:
        return self.table()


@dataclass(frozen=True, slots=True)
class DeleteReport:
    """What ``delete_leftovers`` did: objects deleted, already gone, and leftovers skipped
    because they had become protected since the listing."""

    deleted: int
    already_gone: int
    bytes: int
    skipped: tuple[Leftover, ...] = ()

    def __str__(self) -> str:
        skipped = f", {len(self.skipped)} skipped (now in use)" if self.skipped else ""
        return (f"deleted {self.deleted} object(s), {self.bytes} bytes"
                f"{f', {self.already_gone} already gone' if self.already_gone else ''}{skipped}")


def protected_prefixes(locations: Iterable[str]) -> set[tuple[str, str]]:
    """``(container, name)`` of each location: the manifest it names, and its segments."""
    out = set()
    for location in locations:
        if not isinstance(location, str):
            raise ValidationError(f"a protected location must be text, got {location!r}",
                                  field="protected")
        container, name = split_location(location)
        out.add((container, name))
    return out


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _newest(objects: Iterable[ObjectInfo]) -> datetime | None:
    times = [t for t in (_time(o.last_modified) for o in objects) if t is not None]
    return max(times) if times else None


def find_leftovers(files: Files, *, protected: Iterable[str] = (),
                   containers: Iterable[str] | None = None,
                   now: datetime | None = None) -> LeftoversReport:
    """List the account's exports and orphan segments, leaving out ``protected`` locations
    (``<container>/<object>``: that manifest and the segments under ``<object>-``).

    ``containers``: list leftovers in these only (default: every container of the account).
    Manifests are still looked for in every container: segments that a manifest elsewhere
    points at are no orphans.
    """
    keep = frozenset(protected)
    guarded = protected_prefixes(keep)  # bad locations fail here, before any request
    every = [c.name for c in files.containers()]
    names = list(dict.fromkeys(containers)) if containers is not None else every
    listing: dict[str, list[ObjectInfo]] = {c: list(files.objects(c))
                                            for c in dict.fromkeys([*names, *every])}
    manifests: list[tuple[str, ObjectInfo, str]] = []  # container, manifest, its prefix
    for container, objects in listing.items():
        for obj in objects:
            # A manifest is an object of zero bytes; segments are never HEAD-ed.
            if obj.bytes != 0 or SEGMENT_RE.match(obj.name):
                continue
            with contextlib.suppress(NotFound):  # deleted since the listing
                head = files.head_object(container, obj.name, manifest=True)
                if head.manifest and "/" in head.manifest:
                    manifests.append((container, obj, head.manifest))
    claimed: set[tuple[str, str]] = set()
    items: list[Leftover] = []
    for container, obj, pointer in manifests:
        seg_container, _, prefix = pointer.partition("/")
        # (A manifest pointing at a container that does not exist has no segments.)
        segments = [o for o in listing.get(seg_container, ()) if o.name.startswith(prefix)
                    and o.name != obj.name] if prefix else []
        claimed.update((seg_container, s.name) for s in segments)
        if (container, obj.name) in guarded or container not in names:
            continue
        items.append(Leftover("export", container, obj.name, pointer,
                              tuple(s.name for s in segments), sum(s.bytes for s in segments),
                              _newest([obj, *segments]), tuple(s.bytes for s in segments)))
    for container in names:
        orphans: dict[str, list[ObjectInfo]] = {}
        for obj in listing[container]:
            found = SEGMENT_RE.match(obj.name)
            if found and (container, obj.name) not in claimed:
                orphans.setdefault(found["base"], []).append(obj)
        for base, segments in orphans.items():
            if (container, base) in guarded:
                continue
            items.append(Leftover("orphan segments", container, None, f"{container}/{base}-",
                                  tuple(s.name for s in segments),
                                  sum(s.bytes for s in segments), _newest(segments),
                                  tuple(s.bytes for s in segments)))
    items.sort(key=lambda i: (i.container, i.manifest or i.segment_prefix))
    return LeftoversReport(tuple(items), keep, now or datetime.now(UTC), tuple(names))


def _guarded(item: Leftover, guarded: set[tuple[str, str]]) -> bool:
    seg_container, _, prefix = item.segment_prefix.partition("/")
    return ((item.manifest is not None and (item.container, item.manifest) in guarded)
            or (seg_container, prefix.removesuffix("-")) in guarded)


def delete_leftovers(files: Files, report: LeftoversReport, *,
                     protected: Iterable[str] = ()) -> DeleteReport:
    """Delete exactly the objects ``report`` lists, manifests before their segments; skip a
    leftover whose location is in ``protected`` (in use since the listing was made)."""
    guarded = protected_prefixes(protected)
    deleted = gone = size = 0
    skipped = []
    for item in report.items:
        if _guarded(item, guarded):
            skipped.append(item)
            continue
        sizes = dict(zip(item.segments, item.segment_bytes, strict=False))
        for container, name in item.objects:
            response = files._send("DELETE", _path(container, name))
            if response.status_code == 404:
                gone += 1
                continue
            raise_for_status(response)
            deleted += 1
            size += sizes.get(name, 0) if name != item.manifest else 0
    return DeleteReport(deleted, gone, size, tuple(skipped))


def running_transfer_locations(path: str | os.PathLike[str] | None = None) -> set[str]:
    """Locations the audit log's unfinished transfers still need: each row of its
    ``transfers`` table whose ``status`` is not in ``FINAL_TRANSFER_STATES`` gives its export
    and target locations (or ``<container>/<image>.vhd`` before they are recorded).

    A log without that table (no transfer module yet, or none ever run) protects nothing.
    ``path``: the SQLite file, default the audit log's (``$IMGTOOLS_LOG`` or the user's).
    """
    if path is None:
        from imgtools._tasklog import default_log_path

        path = default_log_path()
    file = Path(path)
    if not file.is_file():
        return set()
    try:
        conn = sqlite3.connect(f"{file.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return set()
    try:
        columns = {row[1] for row in conn.execute(f"PRAGMA table_info({TRANSFERS_TABLE})")}
        if "status" not in columns:
            return set()
        conn.row_factory = sqlite3.Row
        rows = conn.execute(f"SELECT * FROM {TRANSFERS_TABLE}").fetchall()
    except sqlite3.Error:
        return set()
    finally:
        conn.close()
    out: set[str] = set()
    for row in rows:
        if str(row["status"]).lower() in FINAL_TRANSFER_STATES:
            continue
        for column in TRANSFER_LOCATION_COLUMNS:
            value = row[column] if column in columns else None
            if isinstance(value, str) and "/" in value:
                out.add(value)
        image = row[TRANSFER_IMAGE_COLUMN] if TRANSFER_IMAGE_COLUMN in columns else None
        for column in TRANSFER_CONTAINER_COLUMNS:
            container = row[column] if column in columns else None
            if isinstance(image, str) and image and isinstance(container, str) and container:
                out.add(f"{container}/{image}{EXPORT_SUFFIX}")
    return out


def running_export_locations(tasks: Iterable[Task]) -> set[str]:
    """Where the export tasks among ``tasks`` that are not finished write: their segments
    appear before their manifest, so they are protected from the start."""
    out = set()
    for task in tasks:
        if task.type != "export" or task.done:
            continue
        if task.export_location:
            out.add(task.export_location)
        if task.container and task.image_id:
            out.add(f"{task.container}/{task.image_id}{EXPORT_SUFFIX}")
    return out


def op_running_exports(ops: Ops) -> Op[set[str]]:
    """The locations of the exports still ``pending``/``processing`` in the service: every
    page of each status, then the stubs fetched whole side by side (their input names the
    container and image). Run by ``Client.ops.run`` or, awaited, ``AsyncClient.ops.run``."""
    running: list[Task] = []
    for status in (TaskStatus.PENDING, TaskStatus.PROCESSING):
        pages = yield from ops.status_pages(status)
        for items, _retry_after in pages:
            running.extend(t for t in (Task.from_json(i) for i in items) if t.type == "export")
    stubs = [t for t in running if t.is_stub]
    fetched = (yield Gather(tuple(ops.get_task(t.id) for t in stubs))) if stubs else []
    full = [t for t in running if not t.is_stub]
    for answer in fetched:
        if isinstance(answer, NotFound):
            continue  # purged since the listing: it needs nothing any more
        if isinstance(answer, BaseException):
            raise answer
        full.append(answer[0])
    return running_export_locations(full)


def check_protected(protected: Iterable[str]) -> frozenset[str]:
    """``protected`` as a set, each ``<container>/<object>`` checked before any request."""
    out = frozenset(protected)
    protected_prefixes(out)
    return out

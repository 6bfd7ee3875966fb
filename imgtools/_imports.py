"""Import tasks: a VHD in this region's Cloud Files becomes a new image.

``begin_import`` / ``import_`` (on both clients) check the arguments locally, then, before
``POST /v2/tasks``, that the object (or DLO manifest) exists in this region's Cloud Files, that
its size is within ``IMPORT_SIZE_LIMIT`` (for a manifest, the sum of its segments), and that no
import of the same object is already ``pending`` or ``processing``. The task is created with
the same lost-POST reconciliation as exports (``_client._op_create_task``): a lost answer ends
in the task or ``ImportNotConfirmed``, never a second import. The handle (``ImportTask``) waits
as an ``ExportTask`` does; its ``image_id`` is the new image once it succeeded, and a failure
raises ``ImportFailed`` whose ``failure`` is an ``ImportFailure`` category (the service's text
kept as ``message``).

The operations here are sans-IO generators run by each client's driver, like those of
``_client.py``.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from imgtools._config import DEFAULT_TASKS_PAGE_SIZE
from imgtools._exceptions import (
    ImgToolsError,
    ImportInProgress,
    ImportSourceNotFound,
    ImportTooLarge,
    ResponseError,
    ValidationError,
)
from imgtools._models import Task
from imgtools._polling import AsyncTaskHandle, TaskHandle
from imgtools._validation import _fail, check_all, validate_container

if TYPE_CHECKING:
    from imgtools._client import _BaseClient

__all__ = [
    "IMPORT_FORMATS",
    "IMPORT_SIZE_LIMIT",
    "MAX_IMAGE_NAME_CHARS",
    "MAX_OBJECT_NAME_BYTES",
    "AsyncImportTask",
    "ImportTask",
    "describe_import",
    "import_input",
    "op_import_preflight",
    "validate_import_args",
]

#: The largest VHD Cloud Images imports, in bytes: 160 GB since 2019 (40 GB before;
#: transfers.md, "Import size limit"). Taken as 160 GiB: a preflight must never refuse what
#: the service would accept, so the binary reading (the larger) is the safe one.
IMPORT_SIZE_LIMIT = 160 * 1024**3
#: Disk formats an import accepts: Cloud Images imports VHDs only.
IMPORT_FORMATS = ("vhd",)
#: Cloud Files' limit on an object name (cloud-images-api.md 4.2).
MAX_OBJECT_NAME_BYTES = 1024
#: Glance's limit on an image name.
MAX_IMAGE_NAME_CHARS = 255
#: Segments listed per page when adding up a manifest's size (Swift's maximum).
_LISTING_PAGE = 10_000

_Op = Generator[Any, Any, Any]


def _path(*parts: str) -> str:
    return "/".join(quote(p, safe="") for p in parts)


# -- local validation -----------------------------------------------------------------------


def _validate_object(value: str) -> str:
    problems: list[str] = []
    if value == "":
        problems.append("has no object name after the container")
    elif len(value.encode("utf-8", "surrogatepass")) > MAX_OBJECT_NAME_BYTES:
        problems.append(f"has an object name over {MAX_OBJECT_NAME_BYTES} bytes of UTF-8")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        problems.append("has control characters in the object name")
    if problems:
        raise _fail("location", value, problems)
    return value


def validate_import_args(location: Any, name: Any, format: Any
                         ) -> tuple[str, str, dict[str, Any]]:
    """``(container, object, task input)``; one ``ValidationError`` naming every problem.

    ``location`` is ``container/object`` (the container by the rules exports use, the object
    any non-empty Cloud Files name), ``name`` the new image's name (the only image property
    an import takes), ``format`` ``"vhd"``.
    """
    errors: list[ValidationError] = []
    container = obj = ""
    if not isinstance(location, str):
        errors.append(_fail("location", location,
                            [f"must be a string 'container/object', not "
                             f"{type(location).__name__}"]))
    elif "/" not in location:
        errors.append(_fail("location", location,
                            ["must be 'container/object' (no '/' found)"]))
    else:
        head, _, tail = location.partition("/")
        try:
            container = validate_container(head, field="location")
        except ValidationError as exc:
            errors.append(exc)
        try:
            obj = _validate_object(tail)
        except ValidationError as exc:
            errors.append(exc)
    if not isinstance(name, str):
        errors.append(_fail("name", name, [f"must be a string, not {type(name).__name__}"]))
    elif name.strip() == "":
        errors.append(_fail("name", name, ["is empty"]))
    elif len(name) > MAX_IMAGE_NAME_CHARS:
        errors.append(_fail("name", name, [f"is over {MAX_IMAGE_NAME_CHARS} characters"]))
    if not isinstance(format, str) or format.lower() not in IMPORT_FORMATS:
        errors.append(_fail("format", format,
                            [f"must be one of {', '.join(IMPORT_FORMATS)}: Cloud Images "
                             "imports VHDs only"]))
    check_all(errors)
    return container, obj, import_input(f"{container}/{obj}", name, str(format).lower())


def import_input(location: str, name: str, format: str = "vhd") -> dict[str, Any]:
    """The task input Rackspace documents (``import_from_format`` as pyrax and the how-to
    articles send it; upstream Glance requires it)."""
    return {"import_from": location, "import_from_format": format,
            "image_properties": {"name": name}}


def describe_import(task_input: Mapping[str, Any]) -> tuple[str, str]:
    """How to name an import in messages, and what to check before trying it again."""
    location = task_input["import_from"]
    name = task_input["image_properties"]["name"]
    return (f"import {location} as image {name!r}",
            f"whether an image named {name!r} appeared (client.images(name={name!r}))")


# -- the preflight (sans-IO) ----------------------------------------------------------------


def op_import_preflight(client: _BaseClient[Any], container: str, obj: str,
                        task_input: Mapping[str, Any]) -> _Op:
    """Refuse before ``POST /v2/tasks``: ``ImportSourceNotFound``, ``ImportTooLarge``,
    ``ImportInProgress``. Returns the object's size in bytes."""
    location = f"{container}/{obj}"
    response = yield client._http_request("HEAD", _path(container, obj), storage=True)
    if response.status_code == 404:
        raise ImportSourceNotFound(
            f"cannot import {location}: no such object in this region's Cloud Files "
            f"({client.region or 'region unknown'}); upload it (or its DLO manifest) first",
            reason="object not found", location=location)
    client._check(response)
    manifest = response.headers.get("x-object-manifest")
    if manifest:
        size = yield from _op_manifest_size(client, manifest)
    else:
        try:
            size = int(response.headers.get("content-length", ""))
        except ValueError:
            raise ResponseError(f"HEAD {location}: no Content-Length") from None
    if size > IMPORT_SIZE_LIMIT:
        raise ImportTooLarge(
            f"cannot import {location}: it is {size} bytes, over the import limit of "
            f"{IMPORT_SIZE_LIMIT} bytes (160 GB)", reason="too large", location=location,
            size=size, limit=IMPORT_SIZE_LIMIT)
    yield from _op_no_live_import(client, task_input)
    return size


def _op_manifest_size(client: _BaseClient[Any], manifest: str) -> _Op:
    """The sum of a DLO's segments: the listing of ``<container>/<prefix>``, page by page
    (the manifest's own Content-Length is left out by Swift past one listing page)."""
    seg_container, _, prefix = manifest.lstrip("/").partition("/")
    total, marker = 0, ""
    while True:
        params = {"format": "json", "prefix": prefix, "limit": _LISTING_PAGE}
        if marker:
            params["marker"] = marker
        response = yield client._http_request("GET", _path(seg_container), storage=True,
                                              params=params)
        if response.status_code == 204:
            return total
        client._check(response)
        try:
            items = response.json()
        except ValueError:
            items = None
        if not isinstance(items, list):
            raise ResponseError(f"GET {seg_container}: the listing is not a JSON list")
        for item in items:
            if isinstance(item, Mapping) and isinstance(item.get("bytes"), int):
                total += item["bytes"]
        if len(items) < _LISTING_PAGE or not isinstance(items[-1], Mapping):
            return total
        marker = str(items[-1].get("name", ""))


def _op_no_live_import(client: _BaseClient[Any], task_input: Mapping[str, Any]) -> _Op:
    """``ImportInProgress`` when a pending or processing import reads the same object, unless
    it is this very import (same input) that no caller of this client got back: that one the
    task creation returns instead of starting another."""
    location = task_input["import_from"]
    for status in ("pending", "processing"):
        url: str | None = "tasks"
        query: dict[str, Any] | None = {"status": status, "sort_key": "created_at",
                                        "sort_dir": "desc", "limit": DEFAULT_TASKS_PAGE_SIZE}
        seen: set[str] = set()
        while url is not None:
            items, url, _ = yield from client._op_page(url, query, "tasks", seen)
            query = None
            for item in items:
                if not isinstance(item, Mapping) or item.get("type") != "import":
                    continue
                task_id = item.get("id")
                if not isinstance(task_id, str):
                    continue
                known = client._known_input(task_id)
                if known is None:
                    try:
                        task, _ = yield from client._op_get_task(task_id)
                    except ImgToolsError:
                        continue  # gone meanwhile: it no longer stands in the way
                    known = task.input or {}
                if known.get("import_from") != location:
                    continue
                with client._lock:
                    ours = task_id in client._claimed
                if not ours and all(known.get(k) == v for k, v in task_input.items()):
                    continue  # the same import, started elsewhere: creation returns it
                raise ImportInProgress(
                    f"cannot import {location}: import task {task_id} of the same object is "
                    f"already {status}; wait for it (client.resume({task_id!r}).wait())",
                    reason="import in progress", location=location, task_id=task_id)


# -- the handles ----------------------------------------------------------------------------


class _ImportView:
    """What an import handle adds to a task handle: the source and the new image."""

    _task: Task | None

    @property
    def location(self) -> str | None:
        """``container/object`` imported from (once the task was seen in full)."""
        source = None if self._task is None or self._task.input is None \
            else self._task.input.get("import_from")
        return source if isinstance(source, str) else None

    @property
    def image_id(self) -> str | None:
        """The new image's id, once the import succeeded (``None`` before)."""
        result = None if self._task is None else self._task.result
        value = None if result is None else result.get("image_id")
        return value if isinstance(value, str) else None


class ImportTask(_ImportView, TaskHandle):
    """An import task followed through a ``Client``; made by ``begin_import`` or ``resume``.
    ``wait()`` returns the finished task (``task.image_id`` / ``handle.image_id`` is the new
    image) or raises ``ImportFailed`` (``.failure``, ``.code``, ``.message``)."""


class AsyncImportTask(_ImportView, AsyncTaskHandle):
    """The async twin of ``ImportTask``."""

"""The exceptions imgtools raises.

Every error is an ``ImgToolsError``; none of them carries a token, API key or password.

    ImgToolsError
    ├── ConfigurationError          no usable credentials or endpoints
    │   ├── UnknownRegion           a region the service catalog does not offer (.regions)
    │   └── MissingSetting          an operation needs what a bare token cannot tell (.setting)
    ├── ValidationError             a bad argument, caught before any request (also ValueError)
    ├── PreflightError              the export would fail; found before POST /v2/tasks
    │   ├── NotExportable           the image cannot be exported (.reason)
    │   ├── ContainerNotFound       the receiving container does not exist
    │   ├── ExportExists            <uuid>.vhd is already in the container
    │   └── NotImportable           the import would fail (.reason)
    │       ├── ImportSourceNotFound    no such object (or manifest) in this region
    │       ├── ImportTooLarge          over IMPORT_SIZE_LIMIT (.size)
    │       └── ImportInProgress        an import of the object is pending/processing (.task_id)
    ├── ServiceError                talking to the service went wrong
    │   ├── TransportError          network failure that retries did not fix
    │   ├── ResponseError           an answer imgtools cannot understand (damaged, truncated)
    │   ├── TaskNotConfirmed        POST /v2/tasks got no answer and its task was not found
    │   │   ├── ExportNotConfirmed  ... for an export (.image_id, .container, .lookup())
    │   │   └── ImportNotConfirmed  ... for an import (.location, .name, .lookup())
    │   └── APIError                an HTTP error status (.status_code, .message, .request_id)
    │       ├── AuthError           401 / 403
    │       ├── NotFound            404
    │       └── RateLimited         413 / 429 (.retry_after)
    ├── TaskError                   about one task (.task)
    │   ├── TaskFailed              the task ended in ``failure`` (.message)
    │   │   └── ImportFailed        ... an import (.failure: ImportFailure, .code)
    │   └── TaskTimeout             the deadline passed first (.task is the last one seen)
    ├── DownloadError               an export could not be verified or stored
    │   ├── ChecksumMismatch        bytes that do not hash to the listed MD5
    │   └── ConversionError         qemu-img could not convert the VHD (.path: kept)
    └── LogUnavailable              the team audit log cannot be reached (.spooled rows kept)
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from imgtools._models import Task

__all__ = [
    "APIError",
    "AuthError",
    "ChecksumMismatch",
    "ConfigurationError",
    "ContainerNotFound",
    "ConversionError",
    "DownloadError",
    "ExportExists",
    "ExportNotConfirmed",
    "ImgToolsError",
    "ImportFailed",
    "ImportFailure",
    "ImportInProgress",
    "ImportNotConfirmed",
    "ImportSourceNotFound",
    "ImportTooLarge",
    "LogUnavailable",
    "MissingSetting",
    "NotExportable",
    "NotFound",
    "NotImportable",
    "PreflightError",
    "RateLimited",
    "ResponseError",
    "ServiceError",
    "TaskError",
    "TaskFailed",
    "TaskNotConfirmed",
    "TaskTimeout",
    "TransportError",
    "UnknownRegion",
    "ValidationError",
]


class ImgToolsError(Exception):
    """Base class of every imgtools error."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class ConfigurationError(ImgToolsError):
    """No usable credentials or endpoints, or contradictory settings."""


class UnknownRegion(ConfigurationError):
    """A region the service catalog does not offer; ``regions`` lists those it does. Raised
    before any request to Cloud Images or Cloud Files."""

    def __init__(self, message: str, *, region: str, regions: tuple[str, ...]) -> None:
        super().__init__(message)
        self.region = region
        self.regions = regions


class MissingSetting(ConfigurationError):
    """An operation needs something the client could not find out (a bare token has no
    service catalog); ``setting`` names what to set, e.g. ``"region"``."""

    def __init__(self, message: str, *, setting: str) -> None:
        super().__init__(message)
        self.setting = setting


class ValidationError(ImgToolsError, ValueError):
    """An argument is invalid; raised before any request is sent.

    ``field`` names the argument and ``problems`` lists every rule it breaks.
    """

    def __init__(self, message: str, *, field: str | None = None,
                 problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.field = field
        self.problems = problems


class PreflightError(ImgToolsError):
    """The export would fail; found by the checks made before ``POST /v2/tasks``."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class NotExportable(PreflightError):
    """The image cannot be exported: not yours, not active, or a licensing restriction."""


class ContainerNotFound(PreflightError):
    """The receiving Cloud Files container does not exist."""


class ExportExists(PreflightError):
    """``<uuid>.vhd`` is already in the receiving container."""


class NotImportable(PreflightError):
    """The import would fail; found before ``POST /v2/tasks``. ``location`` is the
    ``container/object`` asked for."""

    def __init__(self, message: str, *, reason: str, location: str) -> None:
        super().__init__(message, reason=reason)
        self.location = location


class ImportSourceNotFound(NotImportable):
    """The object (or DLO manifest) to import is not in this region's Cloud Files."""


class ImportTooLarge(NotImportable):
    """The object is over the import limit; ``size`` and ``limit`` in bytes."""

    def __init__(self, message: str, *, reason: str, location: str, size: int,
                 limit: int) -> None:
        super().__init__(message, reason=reason, location=location)
        self.size = size
        self.limit = limit


class ImportInProgress(NotImportable):
    """An import of the same object is already ``pending`` or ``processing``: ``task_id``."""

    def __init__(self, message: str, *, reason: str, location: str, task_id: str) -> None:
        super().__init__(message, reason=reason, location=location)
        self.task_id = task_id


class ServiceError(ImgToolsError):
    """Talking to the service went wrong."""


class TransportError(ServiceError):
    """A network failure (connect, read, reset) that the retries did not overcome.

    ``request_sent`` is ``False`` when the request certainly never reached the server (the
    connection could not be opened), ``True`` or ``None`` when it may have.
    """

    def __init__(self, message: str, *, request_sent: bool | None = None) -> None:
        super().__init__(message)
        self.request_sent = request_sent


class ResponseError(ServiceError):
    """The service answered with something imgtools cannot understand."""


class TaskNotConfirmed(ServiceError):
    """``POST /v2/tasks`` was sent, but neither its answer nor its task could be found.

    The task may or may not exist. What finds it later: ``task_type``, ``input`` (the task's
    input as sent), ``posted_at`` (UTC, when the first such POST was sent) and ``lookup()``,
    which looks again and returns the task's handle, or ``None`` when the service holds no
    such task (an ``AsyncClient``'s is awaited). Asking the same client for the same task
    again looks for it first, too, and creates another only when there is none.
    """

    def __init__(self, message: str, *, task_type: str, input: Mapping[str, Any],
                 posted_at: datetime, lookup: Callable[[], Any]) -> None:
        super().__init__(message)
        self.task_type = task_type
        self.input = input
        self.posted_at = posted_at
        self.lookup = lookup


class ExportNotConfirmed(TaskNotConfirmed):
    """The export ``POST /v2/tasks`` was sent, but neither its answer nor its task could be
    found (see ``TaskNotConfirmed``); ``image_id`` and ``container`` say which export."""

    @property
    def image_id(self) -> str:
        return str(self.input["image_uuid"])

    @property
    def container(self) -> str:
        return str(self.input["receiving_swift_container"])


class ImportNotConfirmed(TaskNotConfirmed):
    """The import ``POST /v2/tasks`` was sent, but neither its answer nor its task could be
    found (see ``TaskNotConfirmed``); ``location`` and ``name`` say which import."""

    @property
    def location(self) -> str:
        return str(self.input["import_from"])

    @property
    def name(self) -> str | None:
        props = self.input.get("image_properties")
        return str(props["name"]) if isinstance(props, Mapping) and "name" in props else None


class APIError(ServiceError):
    """The service answered with an HTTP error status."""

    def __init__(self, message: str, *, status_code: int, method: str = "", path: str = "",
                 request_id: str | None = None) -> None:
        where = f" ({method} {path})" if method else ""
        super().__init__(f"{status_code}: {message}{where}")
        self.status_code = status_code
        self.message = message
        self.method = method
        self.path = path
        self.request_id = request_id


class AuthError(APIError):
    """401 or 403: the token is missing, expired or lacks the right role.

    ``renewable`` is true for a 401 that a new login may cure (the client logs in with a
    username and key, and identity accepted them): waits ride it out. A refused bare token, a
    403 or identity refusing the credentials is final.
    """

    def __init__(self, message: str, *, status_code: int, method: str = "", path: str = "",
                 request_id: str | None = None, renewable: bool = False) -> None:
        super().__init__(message, status_code=status_code, method=method, path=path,
                         request_id=request_id)
        self.renewable = renewable


class NotFound(APIError):
    """404: no such task, image, container or object (or not visible to you)."""


class RateLimited(APIError):
    """413 or 429: the service asks to slow down; ``retry_after`` is in seconds."""

    def __init__(self, message: str, *, status_code: int, retry_after: float | None = None,
                 method: str = "", path: str = "", request_id: str | None = None) -> None:
        super().__init__(message, status_code=status_code, method=method, path=path,
                         request_id=request_id)
        self.retry_after = retry_after


class TaskError(ImgToolsError):
    """An error about one task; ``task`` is the last state seen."""

    def __init__(self, message: str, *, task: Task) -> None:
        super().__init__(message)
        self.task = task


class TaskFailed(TaskError):
    """The task ended in ``failure``; ``message`` is the service's reason."""

    @property
    def message(self) -> str | None:
        return self.task.message


class ImportFailure(enum.StrEnum):
    """Why an import task failed, by the service's message (which ``ImportFailed`` keeps).

    The VHD codes are Rackspace's documented ones, in the wire form
    ``Image cannot be imported. Error code: '396'``.
    """

    #: "Image not found for import. Possible invalid location": the object is gone.
    SOURCE_NOT_FOUND = "source_not_found"
    #: An image property other than ``name``, or none at all.
    BAD_PROPERTIES = "bad_properties"
    #: The input's location was refused ("Invalid location", file URLs).
    BAD_LOCATION = "bad_location"
    #: 396: not a VHD at all.
    NOT_VHD = "not_vhd"
    #: 111: a VHD that failed validation for an unspecified reason.
    INVALID_VHD = "invalid_vhd"
    #: 413: the virtual disk is over the size the service imports.
    VIRTUAL_SIZE_TOO_LARGE = "virtual_size_too_large"
    #: 609: the VHD file is over the size the service imports.
    FILE_TOO_LARGE = "file_too_large"
    #: 523: neither a fixed nor a dynamic disk.
    UNSUPPORTED_DISK_TYPE = "unsupported_disk_type"
    #: 614: the VHD's own UUID is all zeros.
    ZERO_UUID = "zero_uuid"
    #: 721: a differencing disk (it has a parent).
    HAS_PARENT = "has_parent"
    #: "Unknown error occurred during image import": the service's own trouble; try again.
    SERVICE_ERROR = "service_error"
    #: A message imgtools does not know.
    OTHER = "other"

    @classmethod
    def of(cls, message: str | None) -> tuple[ImportFailure, str | None]:
        """The category of a failed import's ``message``, and its VHD error code if any."""
        text = message or ""
        match = _IMPORT_CODE.search(text)
        if match is not None:
            code = match.group(1)
            return _IMPORT_CODES.get(code, cls.INVALID_VHD), code
        lowered = text.lower()
        for needle, failure in _IMPORT_TEXTS:
            if needle in lowered:
                return failure, None
        return cls.OTHER, None


_IMPORT_CODE = re.compile(r"Error code: '?(\d+)'?")
_IMPORT_CODES = {"111": ImportFailure.INVALID_VHD, "396": ImportFailure.NOT_VHD,
                 "413": ImportFailure.VIRTUAL_SIZE_TOO_LARGE, "609": ImportFailure.FILE_TOO_LARGE,
                 "523": ImportFailure.UNSUPPORTED_DISK_TYPE, "614": ImportFailure.ZERO_UUID,
                 "721": ImportFailure.HAS_PARENT}
_IMPORT_TEXTS = (("not found for import", ImportFailure.SOURCE_NOT_FOUND),
                 ("image_properties", ImportFailure.BAD_PROPERTIES),
                 ("invalid location", ImportFailure.BAD_LOCATION),
                 ("file based imports", ImportFailure.BAD_LOCATION),
                 ("unknown error", ImportFailure.SERVICE_ERROR))


class ImportFailed(TaskFailed):
    """An import task ended in ``failure``: ``failure`` is its category, ``code`` the VHD error
    code (``'396'``...) when the service gave one, ``message`` the service's own text."""

    def __init__(self, message: str, *, task: Task) -> None:
        super().__init__(message, task=task)
        self.failure, self.code = ImportFailure.of(task.message)


class TaskTimeout(TaskError):
    """The deadline passed before the task finished; ``task`` is the last one seen."""


class DownloadError(ImgToolsError):
    """An export could not be verified or stored completely."""


class ChecksumMismatch(DownloadError):
    """Downloaded bytes do not hash to the MD5 the container listing gives."""

    def __init__(self, message: str, *, name: str, expected: str, actual: str) -> None:
        super().__init__(message)
        self.name = name
        self.expected = expected
        self.actual = actual


class ConversionError(DownloadError):
    """``qemu-img`` failed to convert a downloaded VHD, or its result did not check out.

    ``path`` is the downloaded VHD, which is kept; nothing is left at the converted name.
    """

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class LogUnavailable(ImgToolsError):
    """The team log could not be reached, or refused the operation (a read-only role writing,
    a schema not initialised). When a write could not be made, ``spooled`` says how many task
    rows were kept in the local spool, to be sent later."""

    def __init__(self, message: str, *, spooled: int = 0) -> None:
        super().__init__(message)
        self.spooled = spooled

"""The exceptions imgtools raises.

Every error is an ``ImgToolsError``; none of them carries a token, API key or password.

    ImgToolsError
    ├── ConfigurationError          no usable credentials or endpoints
    ├── ValidationError             a bad argument, caught before any request (also ValueError)
    ├── PreflightError              the export would fail; found before POST /v2/tasks
    │   ├── NotExportable           the image cannot be exported (.reason)
    │   ├── ContainerNotFound       the receiving container does not exist
    │   └── ExportExists            <uuid>.vhd is already in the container
    ├── ServiceError                talking to the service went wrong
    │   ├── TransportError          network failure that retries did not fix
    │   ├── ResponseError           an answer imgtools cannot understand (damaged, truncated)
    │   ├── ExportNotConfirmed      POST /v2/tasks got no answer and no matching task was found
    │   └── APIError                an HTTP error status (.status_code, .message, .request_id)
    │       ├── AuthError           401 / 403
    │       ├── NotFound            404
    │       └── RateLimited         413 / 429 (.retry_after)
    ├── TaskError                   about one task (.task)
    │   ├── TaskFailed              the task ended in ``failure`` (.message)
    │   └── TaskTimeout             the deadline passed first (.task is the last one seen)
    └── DownloadError               an export could not be verified or stored
        ├── ChecksumMismatch        bytes that do not hash to the listed MD5
        └── ConversionError         qemu-img could not convert the VHD (.path: kept)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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
    "NotExportable",
    "NotFound",
    "PreflightError",
    "RateLimited",
    "ResponseError",
    "ServiceError",
    "TaskError",
    "TaskFailed",
    "TaskTimeout",
    "TransportError",
    "ValidationError",
]


class ImgToolsError(Exception):
    """Base class of every imgtools error."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class ConfigurationError(ImgToolsError):
    """No usable credentials or endpoints, or contradictory settings."""


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


class ExportNotConfirmed(ServiceError):
    """``POST /v2/tasks`` got no usable answer and no matching task could be found.

    The task may or may not exist: list recent export tasks before trying again.
    """


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
    """401 or 403: the token is missing, expired or lacks the right role."""


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

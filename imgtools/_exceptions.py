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
    │   ├── TaskNotConfirmed        POST /v2/tasks got no answer and its task was not found
    │   │   └── ExportNotConfirmed  ... for an export (.image_id, .container, .lookup())
    │   └── APIError                an HTTP error status (.status_code, .message, .request_id)
    │       ├── AuthError           401 / 403
    │       ├── NotFound            404
    │       └── RateLimited         413 / 429 (.retry_after)
    ├── TaskError                   about one task (.task)
    │   ├── TaskFailed              the task ended in ``failure`` (.message)
    │   └── TaskTimeout             the deadline passed first (.task is the last one seen)
    └── DownloadError               an export could not be verified or stored
        └── ChecksumMismatch        bytes that do not hash to the listed MD5
"""

from __future__ import annotations

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
    "TaskNotConfirmed",
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

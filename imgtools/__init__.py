"""imgtools: export Cloud Images to Cloud Files through the tasks API, follow the tasks,
keep an audit log, and read it all as tables."""

from imgtools._exceptions import (
    APIError,
    AuthError,
    ChecksumMismatch,
    ConfigurationError,
    ContainerNotFound,
    DownloadError,
    ExportExists,
    ExportNotConfirmed,
    ImgToolsError,
    NotExportable,
    NotFound,
    PreflightError,
    RateLimited,
    ResponseError,
    ServiceError,
    TaskError,
    TaskFailed,
    TaskTimeout,
    TransportError,
    ValidationError,
)
from imgtools._models import Image, Task, TaskStatus

__version__ = "0.1.0"

__all__ = [
    "APIError",
    "AuthError",
    "ChecksumMismatch",
    "ConfigurationError",
    "ContainerNotFound",
    "DownloadError",
    "ExportExists",
    "ExportNotConfirmed",
    "Image",
    "ImgToolsError",
    "NotExportable",
    "NotFound",
    "PreflightError",
    "RateLimited",
    "ResponseError",
    "ServiceError",
    "Task",
    "TaskError",
    "TaskFailed",
    "TaskStatus",
    "TaskTimeout",
    "TransportError",
    "ValidationError",
]

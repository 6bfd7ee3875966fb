"""imgtools: export Cloud Images to Cloud Files through the tasks API, follow the tasks,
keep an audit log, and read it all as tables."""

import typing as _typing

from imgtools._client import (
    AsyncClient,
    Client,
    Exportability,
    OnProgress,
    OnUpdate,
    TaskRecorder,
)
from imgtools._embedded import connect, connect_async
from imgtools._exceptions import (
    APIError,
    AuthError,
    ChecksumMismatch,
    ConfigurationError,
    ContainerNotFound,
    ConversionError,
    DownloadError,
    ExportExists,
    ExportNotConfirmed,
    ImgToolsError,
    ImportFailed,
    ImportFailure,
    ImportInProgress,
    ImportNotConfirmed,
    ImportSourceNotFound,
    ImportTooLarge,
    LogUnavailable,
    MissingSetting,
    NotExportable,
    NotFound,
    NotImportable,
    PreflightError,
    RateLimited,
    ResponseError,
    ServiceError,
    TaskError,
    TaskFailed,
    TaskNotConfirmed,
    TaskTimeout,
    TransportError,
    UnknownRegion,
    ValidationError,
)
from imgtools._files import (
    AsyncFiles,
    ContainerInfo,
    DownloadResult,
    ExportReport,
    Files,
    ObjectInfo,
    Progress,
    Segment,
)
from imgtools._imports import IMPORT_SIZE_LIMIT, AsyncImportTask, ImportTask
from imgtools._leftovers import DeleteReport, Leftover, LeftoverKind, LeftoversReport
from imgtools._models import Image, Task, TaskStatus
from imgtools._polling import (
    AsyncExportTask,
    AsyncTaskHandle,
    ExportTask,
    PollPolicy,
    TaskHandle,
    TaskRef,
    Timeout,
    WaitAllResult,
    WaitProgress,
)
from imgtools._sources import AsyncTaskSource, TaskSource
from imgtools._taskfields import Origin
from imgtools._tasklog import TaskLog
from imgtools.transfer import (
    AsyncTransfer,
    CleanupPolicy,
    OnStep,
    StepRow,
    Transfer,
    TransferFailed,
    TransferRecord,
    TransferRefused,
    TransferStore,
    TransferVerifyFailed,
)

if _typing.TYPE_CHECKING:
    # What __getattr__ returns, as type checkers should see it.
    from imgtools._region_frames import (
        audit_frame,
    )
    from imgtools.history import (
        Summary,
        merged,
        style_tasks,
        summary,
        tasks_frame,
        tasks_frame_async,
    )

__version__ = "0.1.0"

# The pandas side loads on first use: the CLI and the client should not pay for it.
#: Each lazy name and the module it comes from.
_LAZY = {
    **dict.fromkeys(("Summary", "merged", "style_tasks", "summary", "tasks_frame",
                     "tasks_frame_async"), "imgtools.history"),
    "audit_frame": "imgtools._region_frames",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'imgtools' has no attribute {name!r}")


# Plainly sorted (tests/unit/test_exported_members.py), constants among the names.
__all__ = [  # noqa: RUF022
    "APIError",
    "AsyncClient",
    "AsyncExportTask",
    "AsyncFiles",
    "AsyncImportTask",
    "AsyncTaskHandle",
    "AsyncTaskSource",
    "AsyncTransfer",
    "AuthError",
    "ChecksumMismatch",
    "CleanupPolicy",
    "Client",
    "ConfigurationError",
    "ContainerInfo",
    "ContainerNotFound",
    "ConversionError",
    "DeleteReport",
    "DownloadError",
    "DownloadResult",
    "ExportExists",
    "ExportNotConfirmed",
    "ExportReport",
    "ExportTask",
    "Exportability",
    "Files",
    "IMPORT_SIZE_LIMIT",
    "Image",
    "ImgToolsError",
    "ImportFailed",
    "ImportFailure",
    "ImportInProgress",
    "ImportNotConfirmed",
    "ImportSourceNotFound",
    "ImportTask",
    "ImportTooLarge",
    "Leftover",
    "LeftoverKind",
    "LeftoversReport",
    "LogUnavailable",
    "MissingSetting",
    "NotExportable",
    "NotFound",
    "NotImportable",
    "ObjectInfo",
    "OnProgress",
    "OnStep",
    "OnUpdate",
    "Origin",
    "PollPolicy",
    "PreflightError",
    "Progress",
    "RateLimited",
    "ResponseError",
    "Segment",
    "ServiceError",
    "StepRow",
    "Summary",
    "Task",
    "TaskError",
    "TaskFailed",
    "TaskHandle",
    "TaskLog",
    "TaskNotConfirmed",
    "TaskRecorder",
    "TaskRef",
    "TaskSource",
    "TaskStatus",
    "TaskTimeout",
    "Timeout",
    "Transfer",
    "TransferFailed",
    "TransferRecord",
    "TransferRefused",
    "TransferStore",
    "TransferVerifyFailed",
    "TransportError",
    "UnknownRegion",
    "ValidationError",
    "WaitAllResult",
    "WaitProgress",
    "audit_frame",
    "connect",
    "connect_async",
    "merged",
    "style_tasks",
    "summary",
    "tasks_frame",
    "tasks_frame_async",
]

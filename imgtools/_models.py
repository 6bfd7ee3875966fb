"""Typed, immutable views of what the service returns: tasks and images."""

from __future__ import annotations

import copy
import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from imgtools import _taskfields as fields
from imgtools._exceptions import ResponseError
from imgtools._times import parse_time

__all__ = ["Image", "Task", "TaskStatus", "parse_time"]


class TaskStatus(enum.StrEnum):
    """Where a task is: ``pending -> processing -> success | failure``."""

    PENDING = "pending"
    PROCESSING = "processing"
    SUCCESS = "success"
    FAILURE = "failure"

    @property
    def terminal(self) -> bool:
        return self in (TaskStatus.SUCCESS, TaskStatus.FAILURE)


def _frozen(value: Any) -> Mapping[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ResponseError(f"expected a JSON object, got {type(value).__name__}")
    return _FrozenDict(copy.deepcopy(dict(value)))


class _FrozenDict(dict[str, Any]):
    """A dict that refuses changes, so a ``Task`` stays immutable yet JSON-serialisable."""

    def _readonly(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("task fields are read-only")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _readonly  # type: ignore[assignment]

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(json.dumps(self, sort_keys=True, default=str))

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return copy.deepcopy(dict(self), memo)


_REQUIRED_TASK_FIELDS = ("id", "type", "status", "created_at", "updated_at")


@dataclass(frozen=True, slots=True)
class Task:
    """One task as the service last described it.

    A task from the list endpoint is a *stub*: ``input``, ``result`` and ``message`` are
    unknown (``is_stub`` is true); ``Client.get_task`` fills them in. Times are aware UTC
    datetimes; ``message`` is ``None`` when the service sent ``"None"`` or ``""``.
    """

    id: str
    type: str
    status: TaskStatus
    created_at: datetime
    updated_at: datetime
    owner: str | None = None
    expires_at: datetime | None = None
    input: Mapping[str, Any] | None = None
    result: Mapping[str, Any] | None = None
    message: str | None = None
    is_stub: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, data: Any, *, stub: bool | None = None) -> Task:
        """Build a task from a task body; a damaged body raises ``ResponseError``.

        ``stub`` defaults to "``input`` is absent", which is how list items look.
        """
        if not isinstance(data, Mapping):
            raise ResponseError(f"a task must be a JSON object, got {type(data).__name__}")
        missing = [name for name in _REQUIRED_TASK_FIELDS if name not in data]
        if missing:
            raise ResponseError(f"task is missing field(s): {', '.join(missing)}")
        try:
            status = TaskStatus(data["status"])
        except ValueError:
            raise ResponseError(f"unknown task status: {data['status']!r}") from None
        if not isinstance(data["id"], str) or not isinstance(data["type"], str):
            raise ResponseError("task id and type must be strings")
        created = parse_time(data["created_at"])
        updated = parse_time(data["updated_at"])
        if created is None or updated is None:
            raise ResponseError("task has empty created_at/updated_at")
        is_stub = ("input" not in data) if stub is None else stub
        known = {"id", "type", "status", "owner", "created_at", "updated_at", "expires_at",
                 "input", "result", "message", "self", "schema"}
        return cls(
            id=data["id"],
            type=data["type"],
            status=status,
            created_at=created,
            updated_at=updated,
            owner=None if data.get("owner") is None else str(data["owner"]),
            expires_at=parse_time(data.get("expires_at")),
            input=None if is_stub else _frozen(data.get("input")),
            result=None if is_stub else _frozen(data.get("result")),
            message=None if is_stub else fields.message(data.get("message")),
            is_stub=is_stub,
            extra=_FrozenDict({k: v for k, v in data.items() if k not in known}),
        )

    def to_json(self) -> dict[str, Any]:
        """The task as the service would send it (times in ``...Z`` form)."""
        out: dict[str, Any] = {
            "id": self.id,
            "type": self.type,
            "status": self.status.value,
            "owner": self.owner,
            "created_at": _fmt(self.created_at),
            "updated_at": _fmt(self.updated_at),
        }
        if self.expires_at is not None:
            out["expires_at"] = _fmt(self.expires_at)
        if not self.is_stub:
            out["input"] = copy.deepcopy(dict(self.input)) if self.input is not None else None
            out["result"] = copy.deepcopy(dict(self.result)) if self.result is not None else None
            out["message"] = self.message if self.message is not None else ""
        return out

    @property
    def done(self) -> bool:
        """True once the task is ``success`` or ``failure``."""
        return self.status.terminal

    @property
    def image_id(self) -> str | None:
        """The exported image (``input.image_uuid``), or the imported one (``result.image_id``)."""
        return fields.image_id(self.input, self.result)

    @property
    def container(self) -> str | None:
        """The receiving container of an export, or the source container of an import."""
        return fields.container(self.input)

    @property
    def export_location(self) -> str | None:
        """``<container>/<uuid>.vhd`` once an export succeeded."""
        return fields.export_location(self.result)

    @property
    def duration(self) -> timedelta | None:
        """Time from creation to the last update, for finished tasks (seconds resolution)."""
        if not self.done:
            return None
        return self.updated_at - self.created_at


def _fmt(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Image:
    """An image as ``GET /v2/images/{id}`` describes it; Rackspace extras are in ``properties``."""

    id: str
    name: str | None
    status: str
    visibility: str
    owner: str | None
    size: int | None
    checksum: str | None
    created_at: datetime | None
    updated_at: datetime | None
    properties: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_json(cls, data: Any) -> Image:
        if not isinstance(data, Mapping):
            raise ResponseError(f"an image must be a JSON object, got {type(data).__name__}")
        for name in ("id", "status"):
            if name not in data:
                raise ResponseError(f"image is missing field: {name}")
        size = data.get("size")
        if size is not None and not isinstance(size, int):
            raise ResponseError(f"image size must be an integer, got {size!r}")
        return cls(
            id=str(data["id"]),
            name=data.get("name"),
            status=str(data["status"]),
            visibility=str(data.get("visibility", "private")),
            owner=None if data.get("owner") is None else str(data["owner"]),
            size=size,
            checksum=data.get("checksum"),
            created_at=parse_time(data.get("created_at")),
            updated_at=parse_time(data.get("updated_at")),
            properties=_FrozenDict(copy.deepcopy(dict(data))),
        )

    @property
    def options(self) -> str | None:
        """``com.rackspace__1__options``: only ``"0"`` may be exported."""
        value = self.properties.get("com.rackspace__1__options")
        return None if value is None else str(value)

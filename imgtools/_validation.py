"""Local checks of arguments, made before any request is sent.

Each check returns the normalised value or raises ``ValidationError`` whose ``problems`` names
every rule the value breaks (not just the first), and whose ``field`` names the argument.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable
from typing import Any

from imgtools._config import MAX_CONTAINER_NAME_BYTES, MAX_PAGE_SIZE
from imgtools._exceptions import ValidationError
from imgtools._models import TaskStatus

__all__ = [
    "SORT_DIRS",
    "TASK_SORT_KEYS",
    "TASK_TYPES",
    "check_all",
    "validate_container",
    "validate_export_args",
    "validate_image_id",
    "validate_page_size",
    "validate_sort_dir",
    "validate_task_id",
    "validate_task_sort_key",
    "validate_task_status",
    "validate_task_type",
    "validate_timeout",
]

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

#: What Glance accepts for ``GET /v2/tasks?sort_key=`` (real-server-behaviour.md).
TASK_SORT_KEYS = ("id", "type", "status", "owner", "created_at", "updated_at", "expires_at")
SORT_DIRS = ("asc", "desc")
TASK_TYPES = ("import", "export")

# Characters the export task refuses in a container name (cloud-images-api.md 1.2), with the
# name each gets in an error.
_FORBIDDEN = {"/": "a slash '/'", "?": "a question mark '?'", ".": "a dot '.'"}


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _fail(field: str, value: Any, problems: list[str]) -> ValidationError:
    return ValidationError(
        f"invalid {field} {_show(value)}: {'; '.join(problems)}",
        field=field,
        problems=tuple(problems),
    )


def _uuid(field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _fail(field, value, [f"must be a string, not {type(value).__name__}"])
    if value == "":
        raise _fail(field, value, ["is empty"])
    if value != value.strip():
        raise _fail(field, value, ["has leading or trailing whitespace"])
    if not _UUID.fullmatch(value):
        raise _fail(field, value, ["is not a UUID (8-4-4-4-12 hexadecimal digits)"])
    # Glance ids are lower case; comparing them later must not depend on how they were typed.
    return value.lower()


def validate_image_id(value: Any, *, field: str = "image_id") -> str:
    """An image id: a UUID in the canonical 8-4-4-4-12 form; returns it in lower case."""
    return _uuid(field, value)


def validate_task_id(value: Any, *, field: str = "task_id") -> str:
    """A task id: a UUID; returns it in lower case."""
    return _uuid(field, value)


def validate_container(value: Any, *, field: str = "container") -> str:
    """A receiving Cloud Files container name, by the rules the export task and Cloud Files set.

    Non-empty; at most 256 bytes of UTF-8; no ``/``, ``?`` or ``.`` (the export task fails on
    them); no control characters; encodable as UTF-8; not only whitespace, and no leading or
    trailing whitespace (invisible in listings, and almost always a paste accident).
    """
    if not isinstance(value, str):
        raise _fail(field, value, [f"must be a string, not {type(value).__name__}"])
    if value == "":
        raise _fail(field, value, ["is empty"])
    problems: list[str] = []
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        problems.append("is not valid Unicode text (it holds a lone surrogate)")
        size = len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_CONTAINER_NAME_BYTES:
        problems.append(f"is {size} bytes of UTF-8, over the limit of {MAX_CONTAINER_NAME_BYTES}")
    for char, name in _FORBIDDEN.items():
        if char in value:
            problems.append(f"contains {name}, which makes the export task fail")
    controls = sorted({c for c in value if unicodedata.category(c) == "Cc"})
    if controls:
        shown = ", ".join(f"U+{ord(c):04X}" for c in controls[:5])
        problems.append(f"contains control character(s) {shown}")
    if value.strip() == "":
        problems.append("is only whitespace")
    elif value != value.strip():
        problems.append("has leading or trailing whitespace")
    if problems:
        raise _fail(field, value, problems)
    return value


def validate_page_size(value: Any, *, field: str = "page_size") -> int:
    """A page size: an integer from 1 to 1000 (Glance's maximum ``limit``)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(field, value, [f"must be an integer, not {type(value).__name__}"])
    if not 1 <= value <= MAX_PAGE_SIZE:
        raise _fail(field, value, [f"must be between 1 and {MAX_PAGE_SIZE}"])
    return value


def validate_task_status(value: Any, *, field: str = "status") -> TaskStatus:
    """A task status: a ``TaskStatus`` or one of its values."""
    try:
        return TaskStatus(value)
    except ValueError:
        names = ", ".join(s.value for s in TaskStatus)
        raise _fail(field, value, [f"must be one of {names}"]) from None


def validate_task_type(value: Any, *, field: str = "type") -> str:
    """A task type: ``import`` or ``export``."""
    if value not in TASK_TYPES:
        raise _fail(field, value, [f"must be one of {', '.join(TASK_TYPES)}"])
    return str(value)


def validate_task_sort_key(value: Any, *, field: str = "sort_key") -> str:
    """A task list sort key Glance accepts."""
    if value not in TASK_SORT_KEYS:
        raise _fail(field, value, [f"must be one of {', '.join(TASK_SORT_KEYS)}"])
    return str(value)


def validate_sort_dir(value: Any, *, field: str = "sort_dir") -> str:
    """``asc`` or ``desc``."""
    if value not in SORT_DIRS:
        raise _fail(field, value, ["must be 'asc' or 'desc'"])
    return str(value)


def validate_timeout(value: Any, *, field: str = "timeout") -> float | None:
    """A duration in seconds: a finite number >= 0, or ``None`` for "no limit"."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        kind = type(value).__name__
        raise _fail(field, value, [f"must be a number of seconds or None, not {kind}"])
    if math.isnan(value) or value < 0 or math.isinf(value):
        raise _fail(field, value, ["must be a finite number of seconds >= 0 (None waits forever)"])
    return float(value)


def validate_export_args(image_id: Any, container: Any) -> tuple[str, str]:
    """Both arguments of an export; one error naming every problem of either."""
    errors: list[ValidationError] = []
    clean_id = clean_container = ""
    try:
        clean_id = validate_image_id(image_id)
    except ValidationError as exc:
        errors.append(exc)
    try:
        clean_container = validate_container(container)
    except ValidationError as exc:
        errors.append(exc)
    check_all(errors)
    return clean_id, clean_container


def check_all(errors: Iterable[ValidationError]) -> None:
    """Raise one ``ValidationError`` for several bad arguments, naming each (no-op if none)."""
    found = list(errors)
    if not found:
        return
    if len(found) == 1:
        raise found[0]
    fields = [e.field or "?" for e in found]
    problems = tuple(f"{e.field}: {p}" for e in found for p in e.problems)
    raise ValidationError("; ".join(str(e) for e in found), field=", ".join(fields),
                          problems=problems)

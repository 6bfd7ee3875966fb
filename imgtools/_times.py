"""Every time imgtools reads or stores, parsed and converted in one place (no pandas).

Stored times are integer epoch **microseconds** UTC: they sort, compare and turn into
``datetime64[us, UTC]`` without parsing. The service writes ISO 8601 (``...Z``).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from imgtools._exceptions import ResponseError, ValidationError

__all__ = ["EPOCH", "ONE_US", "aware", "from_us", "iso_us", "now_us", "parse_since",
           "parse_time", "time_us", "to_us"]

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
ONE_US: Final = timedelta(microseconds=1)


def aware(value: datetime) -> datetime:
    """``value`` in UTC; a naive datetime is taken as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def to_us(value: datetime) -> int:
    return (aware(value) - EPOCH) // ONE_US


def from_us(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


def now_us() -> int:
    return to_us(datetime.now(UTC))


def iso_us(value: int | None) -> str | None:
    """Epoch microseconds as ISO 8601 UTC text with microseconds (``None`` stays ``None``)."""
    if value is None:
        return None
    return from_us(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: Any) -> datetime | None:
    """The service's timestamps (``2014-02-26T02:01:13Z``, with or without zone or
    microseconds) as an aware UTC datetime; ``None`` and ``""`` give ``None``; anything
    else unreadable raises ``ResponseError``."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ResponseError(f"expected a timestamp string, got {type(value).__name__}")
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ResponseError(f"unreadable timestamp: {value!r}") from None
    return aware(parsed)


def time_us(value: Any) -> int | None:
    """``parse_time`` as epoch microseconds, with a fast path for the common form (Python
    3.11's ``fromisoformat`` reads ``Z`` itself; the detour handles the rest)."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            return (parsed - EPOCH) // ONE_US
    parsed_or_none = parse_time(value)
    return None if parsed_or_none is None else to_us(parsed_or_none)


_SINCE_RE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_SINCE_UNITS: Final = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_since(value: str | datetime | timedelta | None, *,
                now: datetime | None = None) -> datetime | None:
    """A point in time (aware UTC) from ``"7d"``, ``"12h"``, ``"30m"``, ``"90s"``, ``"2w"``
    (that long before ``now``), an ISO date/datetime, a ``timedelta`` or a ``datetime``
    (naive means UTC). ``None`` stays ``None``."""
    if value is None:
        return None
    now = aware(now) if now is not None else datetime.now(UTC)
    if isinstance(value, datetime):
        return aware(value)
    if isinstance(value, timedelta):
        return now - value
    if not isinstance(value, str):
        raise ValidationError(f"since: expected text like '7d', got {type(value).__name__}",
                              field="since")
    match = _SINCE_RE.match(value)
    if match:
        return now - timedelta(seconds=float(match[1]) * _SINCE_UNITS[match[2].lower()])
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        return aware(datetime.fromisoformat(text))
    except ValueError:
        raise ValidationError(
            f"since: {value!r} is neither a span like '7d', '12h', '30m' nor an ISO date",
            field="since", problems=("use <number><s|m|h|d|w> or YYYY-MM-DD[THH:MM[:SS]]",),
        ) from None

"""The emulator's clock: wall time plus an offset tests can advance (token and task expiry)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

__all__ = ["Clock", "http_date", "iso_ms", "iso_z", "swift_time"]


class Clock:
    """``time.time()`` shifted by an adjustable offset, shared by routes and worker."""

    def __init__(self, offset: float = 0.0) -> None:
        self._offset = offset
        self._lock = threading.Lock()

    def now(self) -> float:
        return time.time() + self._offset

    @property
    def offset(self) -> float:
        return self._offset

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._offset += seconds


def iso_z(ts: float | None) -> str | None:
    """Glance's timestamp form: ``2014-02-26T02:01:13Z`` (seconds)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_ms(ts: float) -> str:
    """Identity's ``expires``: ``2014-11-24T22:05:39.115Z``."""
    d = datetime.fromtimestamp(ts, UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


def swift_time(ts: float) -> str:
    """Swift listings' ``last_modified``: no zone, microseconds."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


def http_date(ts: float) -> str:
    """``Last-Modified``; Swift rounds the timestamp up to the next second."""
    whole = int(ts) if ts == int(ts) else int(ts) + 1
    return datetime.fromtimestamp(whole, UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")

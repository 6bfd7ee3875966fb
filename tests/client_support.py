"""Helpers for the client tests: the fast emulator settings, seeded ids, recording transports.

Used across the kinds (``from tests.client_support import ...``); the fixtures built on them are
``emulator_in_subprocess`` (tests/conftest.py) and ``client`` (tests/integration/conftest.py).
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import threading
from typing import Any

import httpx
import pytest

import imgtools
from imgtools.emulator import (
    EmulatorConfig,
    EmulatorHandle,
    FaultSettings,
    image_id_for,
)

#: Small images and quick tasks: an export takes a few tens of milliseconds after 0.1 s pending.
FAST = EmulatorConfig(pending_delay=0.1, export_speed=64 * 1024 * 1024, image_size=64 * 1024,
                      segment_size=16 * 1024, tick=0.01)

DEMO = "100001"
OTHER = "100002"
WEB = image_id_for(DEMO, "web")
DB = image_id_for(DEMO, "db")
SMALL = image_id_for(DEMO, "small")
WINDOWS = image_id_for(DEMO, "windows")
RHEL = image_id_for(DEMO, "rhel")
OLD = image_id_for(DEMO, "old")
OTHERS_WEB = image_id_for(OTHER, "web")
MISSING = "00000000-0000-4000-8000-000000000000"

_names = itertools.count()


def fresh_container(prefix: str = "c") -> str:
    """A container name no other test uses."""
    return f"{prefix}-{next(_names)}"


def live_threads(prefix: str) -> list[str]:
    """The names of the threads alive now whose name starts with ``prefix`` (the copy's
    ``THREAD_PREFIX``, ``verify_export``'s ``VERIFY_THREADS``)."""
    return [t.name for t in threading.enumerate() if t.name.startswith(prefix)]


class Recorder(httpx.BaseTransport):
    """A real transport that also notes every request it sends (method, URL, headers)."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.requests: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


class AsyncRecorder(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def make_client(emu: EmulatorHandle, **options: Any) -> imgtools.Client:
    """A client logged in as the demo user, polling fast, with no audit log unless asked."""
    defaults: dict[str, Any] = {"username": "demo", "api_key": "demo-key",
                                "identity_url": emu.identity_url, "log": False,
                                "poll": imgtools.PollPolicy.fast(), "wait_timeout": 60.0}
    defaults.update(options)
    return imgtools.connect(**defaults)


def clear_faults(emu: EmulatorHandle) -> None:
    """Every fault setting back to its default (spelled out: works on any emulator version)."""
    emu.set_faults(**dataclasses.asdict(FaultSettings()))


def tasks_created(emu: EmulatorHandle) -> int:
    return int(emu.stats()["tasks_created"])


def route_count(emu: EmulatorHandle, route: str, method: str) -> int:
    return sum(r["count"] for r in emu.stats()["requests"]
               if r["route"] == route and r["method"] == method)


def run_cli(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``imgtools ARGV`` in this process: exit code, what it printed, what went to stderr."""
    from imgtools.cli import main

    out = io.StringIO()
    code = main(list(argv), out=out)
    captured = capsys.readouterr()
    return code, out.getvalue() + captured.out, captured.err

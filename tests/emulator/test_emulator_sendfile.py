"""The emulator's sendfile extension: uvicorn with ``SendfileProtocol`` over a real socket, and
the streaming fallback under a server without it, give the same bytes; a file shorter than
its listing gives a short body, never a hang or wrong bytes."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from imgtools.emulator.sendfile import (
    EXTENSION,
    FileSliceResponse,
    SendfileProtocol,
    file_slices,
    read_slices,
)
from imgtools.emulator.server import _uvicorn_server

PARTS = [b"a" * 100_000, b"b" * 7, bytes(range(256)) * 1000]


@pytest.mark.parametrize(("start", "length", "expected"), [
    (0, 10, [(0, 0, 10)]),
    (0, 300, [(0, 0, 100), (1, 0, 100), (2, 0, 100)]),
    (150, 100, [(1, 50, 50), (2, 0, 50)]),
    (250, 100, [(2, 50, 50)]),
    (300, 10, []),
    (0, 0, []),
])
def test_file_slices(start: int, length: int, expected: list[tuple[int, int, int]]) -> None:
    paths = [Path(f"/p{i}") for i in range(3)]
    got = file_slices([(p, 100) for p in paths], start, length)
    assert got == [(paths[i], offset, count) for i, offset, count in expected]


def test_read_slices_stops_at_a_short_file(tmp_path: Path) -> None:
    short, after = tmp_path / "short", tmp_path / "after"
    short.write_bytes(b"12345")
    after.write_bytes(b"xyz")
    # The first file holds 5 of the 10 bytes listed: nothing after it may be sent.
    assert b"".join(read_slices([(short, 0, 10), (after, 0, 3)])) == b"12345"


@pytest.fixture
def parts(tmp_path: Path) -> list[tuple[Path, int]]:
    out = []
    for i, data in enumerate(PARTS):
        path = tmp_path / f"part{i}"
        path.write_bytes(data)
        out.append((path, len(data)))
    return out


def _app(parts: list[tuple[Path, int]], seen: list[bool]) -> Starlette:
    async def get(request: Request) -> Response:
        seen.append(EXTENSION in request.scope.get("extensions", {}))
        start = int(request.query_params.get("start", 0))
        total = sum(size for _, size in parts)
        length = int(request.query_params.get("length", total - start))
        listed = int(request.query_params.get("listed", length))
        return FileSliceResponse(file_slices(parts, start, length), status_code=200,
                                 headers={"content-length": str(listed)})
    return Starlette(routes=[Route("/", get)])


@pytest.fixture
def served(parts: list[tuple[Path, int]]) -> Iterator[tuple[str, list[bool]]]:
    seen: list[bool] = []
    sock = socket.create_server(("127.0.0.1", 0))
    config = uvicorn.Config(_app(parts, seen), log_level="critical", http=SendfileProtocol,
                            lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", seen
    server.should_exit = True
    thread.join(10)


WHOLE = b"".join(PARTS)
CASES = [({}, WHOLE), ({"start": 99_990, "length": 30}, WHOLE[99_990:100_020]),
         ({"start": 100_003, "length": 4}, WHOLE[100_003:100_007])]


@pytest.mark.parametrize(("params", "body"), CASES)
def test_sendfile_over_a_real_socket(served: tuple[str, list[bool]], params: dict[str, int],
                                     body: bytes) -> None:
    url, seen = served
    with httpx.Client(base_url=url) as client:
        for _ in range(2):  # and the kept-alive connection still works after a sendfile
            response = client.get("/", params=params)
            assert response.content == body
    assert seen == [True, True]


@pytest.mark.parametrize(("params", "body"), CASES)
def test_a_server_without_the_extension_streams_the_same_bytes(
        parts: list[tuple[Path, int]], params: dict[str, int], body: bytes) -> None:
    seen: list[bool] = []

    async def fetch() -> httpx.Response:
        transport = httpx.ASGITransport(app=_app(parts, seen))
        async with httpx.AsyncClient(transport=transport, base_url="http://emulator") as client:
            return await client.get("/", params=params)

    response = asyncio.run(fetch())
    assert response.content == body
    assert seen == [False]


def test_a_file_shorter_than_listed_is_a_short_body(served: tuple[str, list[bool]],
                                                     parts: list[tuple[Path, int]]) -> None:
    url, _ = served
    path, size = parts[2]
    path.write_bytes(PARTS[2][: size // 2])  # shrunk on disk after it was listed
    with httpx.Client(base_url=url) as client, pytest.raises(httpx.RemoteProtocolError):
        client.get("/")


def test_the_emulator_serves_with_the_sendfile_protocol() -> None:
    app: Any = _app([], [])
    config = _uvicorn_server(app).config
    assert config.http is SendfileProtocol
    assert config.loop == "asyncio"  # loop.sendfile is asyncio's (uvloop has none)


def test_a_uvicorn_without_the_fields_it_needs_gets_streamed_bodies(
        served: tuple[str, list[bool]], monkeypatch: pytest.MonkeyPatch) -> None:
    url, seen = served
    monkeypatch.setattr("imgtools.emulator.sendfile._CYCLE_FIELDS", ("renamed_in_a_new_uvicorn",))
    with httpx.Client(base_url=url) as client:
        assert client.get("/").content == WHOLE
    assert seen == [False]

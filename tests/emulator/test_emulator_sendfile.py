"""The emulator's sendfile extension: uvicorn with ``SendfileProtocol`` over a real socket, and
the streaming fallback under a server without it, give the same bytes; a file shorter than
its listing gives a short body, never a hang or wrong bytes."""

from __future__ import annotations

import asyncio
import hashlib
import re
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
    BODY_HIGH_WATER,
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

    async def put(request: Request) -> Response:
        digest, size = hashlib.md5(), 0
        async for piece in request.stream():
            digest.update(piece)
            size += len(piece)
        return Response(f"{size} {digest.hexdigest()}".encode())
    return Starlette(routes=[Route("/", get), Route("/body", put, methods=["PUT"])])


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


BIG = bytes(range(251)) * (3 * BODY_HIGH_WATER // 251)  # several marks' worth: reading stops


def _echo(data: bytes) -> str:
    return f"{len(data)} {hashlib.md5(data).hexdigest()}"


def _pieces(data: bytes, size: int) -> Iterator[bytes]:
    for at in range(0, len(data), size):
        yield data[at:at + size]


@pytest.mark.parametrize("fields", ["ours", "uvicorn's"])
def test_request_bodies_arrive_whole_sized_or_chunked(
        served: tuple[str, list[bool]], monkeypatch: pytest.MonkeyPatch, fields: str) -> None:
    """Bodies taken in as the parser's pieces (past ``BODY_HIGH_WATER`` the socket is paused
    and resumed) give the bytes sent; so does uvicorn's own intake, where it is left alone."""
    url, _ = served
    if fields != "ours":
        monkeypatch.setattr("imgtools.emulator.sendfile._CYCLE_FIELDS", ("renamed",))
    with httpx.Client(base_url=url) as client:
        for body in (BIG, b"", b"x"):
            assert client.put("/body", content=body).text == _echo(body)
        assert client.put("/body", content=_pieces(BIG, 99_999)).text == _echo(BIG)


def _raw(url: str, payload: bytes, answers: int, *, pause_after: bytes = b"") -> bytes:
    """Send ``payload`` on one connection (``pause_after``: its head alone first, then the
    rest once the server answered it) and read until ``answers`` echoes came back."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        got = b""
        if pause_after:
            sock.sendall(pause_after)
            while b"\r\n\r\n" not in got:
                got += sock.recv(65536)
            payload = payload[len(pause_after):]
        sock.sendall(payload)
        # Each echo ("<size> <md5>") ends its response: count the complete ones.
        while len(re.findall(rb"\r\n\r\n\d+ [0-9a-f]{32}", got)) < answers:
            more = sock.recv(1 << 20)
            assert more, f"the server closed the connection: {got[-200:]!r}"
            got += more
        return got


def _request(body: bytes, extra: str = "") -> bytes:
    return (f"PUT /body HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
            .encode() + body)


def test_pipelined_requests_each_get_their_own_body(served: tuple[str, list[bool]]) -> None:
    """The second request's body can arrive before its cycle is started: none of it is lost
    or given to the first."""
    url, _ = served
    first, second = BIG[:300_000], BIG[1000:2_500_000]
    got = _raw(url, _request(first) + _request(second), answers=2)
    assert _echo(first).encode() in got and _echo(second).encode() in got
    assert got.index(_echo(first).encode()) < got.index(_echo(second).encode())


def test_expect_100_continue_is_answered_before_the_body(served: tuple[str, list[bool]]) -> None:
    url, _ = served
    head = _request(b"", "Expect: 100-continue\r\n").replace(b"Content-Length: 0",
                                                           f"Content-Length: {len(BIG)}".encode())
    got = _raw(url, head + BIG, answers=1, pause_after=head)
    assert got.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert got.endswith(_echo(BIG).encode())

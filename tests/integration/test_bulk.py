"""BulkTransport: the http.client transport under Cloud Files, against real sockets: bodies,
keep-alive reuse, a server that closed an idle connection, and failures as httpx errors."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import httpx
import pytest

from imgtools._bulk import BulkTransport, body_readinto


class _Server:
    """A raw HTTP/1.1 server on loopback: each accepted connection is handed to ``serve``."""

    def __init__(self, serve: Callable[[socket.socket, int], None]) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.serve = serve
        self.connections = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self.serve, args=(conn, self.connections),
                             daemon=True).start()

    def close(self) -> None:
        self.sock.close()


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return b""
        data += chunk
    return data


def _client(server: _Server) -> httpx.Client:
    return httpx.Client(transport=BulkTransport(), base_url=f"http://127.0.0.1:{server.port}")


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[_Server]:
    srv = _Server(request.param)
    yield srv
    srv.close()


def _keep_alive(conn: socket.socket, _n: int) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB
    with conn:
        while _read_request(conn):
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Seen: yes\r\n\r\n"
                         % len(body) + body)


def _one_then_close(conn: socket.socket, _n: int) -> None:
    # Answers one request with keep-alive, then closes the idle connection.
    with conn:
        if _read_request(conn):
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


def _short_body(conn: socket.socket, _n: int) -> None:
    with conn:
        if _read_request(conn):
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-some")


def _hang_up(conn: socket.socket, _n: int) -> None:
    with conn:
        _read_request(conn)


@pytest.mark.parametrize("server", [_keep_alive], indirect=True)
def test_bodies_headers_and_reuse(server: _Server) -> None:
    with httpx.Client(transport=BulkTransport(),
                      base_url=f"http://127.0.0.1:{server.port}") as client:
        for _ in range(3):
            response = client.get("/x", headers={"X-Auth-Token": "t"})
            assert response.status_code == 200
            assert response.headers["x-seen"] == "yes"
            assert response.content == bytes(range(256)) * 4096
        assert server.connections == 1  # one keep-alive connection served all three


@pytest.mark.parametrize("server", [_one_then_close], indirect=True)
def test_a_connection_closed_while_idle_is_replaced(server: _Server) -> None:
    with httpx.Client(transport=BulkTransport(),
                      base_url=f"http://127.0.0.1:{server.port}") as client:
        assert client.get("/a").text == "ok"
        assert client.post("/b", content=b"x").text == "ok"  # even a POST: it never arrived
        assert server.connections == 2


@pytest.mark.parametrize("server", [_short_body], indirect=True)
def test_a_short_body_is_a_protocol_error(server: _Server) -> None:
    with _client(server) as client, pytest.raises(httpx.RemoteProtocolError, match="short"):
        client.get("/x")


@pytest.mark.parametrize("server", [_hang_up], indirect=True)
def test_no_answer_is_a_protocol_error(server: _Server) -> None:
    with _client(server) as client, \
            pytest.raises(httpx.RemoteProtocolError, match="without sending"):
        client.get("/x")


def test_nothing_listening_is_a_connect_error() -> None:
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    with httpx.Client(transport=BulkTransport()) as client, pytest.raises(httpx.ConnectError):
        client.get(f"http://127.0.0.1:{port}/")


def test_other_schemes_are_refused() -> None:
    with pytest.raises(httpx.UnsupportedProtocol):
        BulkTransport().handle_request(httpx.Request("GET", "ftp://127.0.0.1/x"))


@pytest.mark.parametrize("server", [_keep_alive], indirect=True)
def test_readinto_fills_caller_buffers_and_keeps_the_connection(server: _Server) -> None:
    buffer = bytearray(100_000)  # smaller than the body: several reads
    with _client(server) as client:
        for _ in range(2):
            with client.stream("GET", "/x") as response:
                readinto = body_readinto(response)
                assert readinto is not None
                got = bytearray()
                while n := readinto(buffer):
                    got += buffer[:n]
            assert bytes(got) == bytes(range(256)) * 4096
    assert server.connections == 1  # a body read to its end leaves the connection reusable


@pytest.mark.parametrize("server", [_short_body], indirect=True)
def test_readinto_of_a_short_body_is_a_protocol_error(server: _Server) -> None:
    with _client(server) as client, client.stream("GET", "/x") as response:
        readinto = body_readinto(response)
        assert readinto is not None
        buffer = bytearray(1000)
        with pytest.raises(httpx.RemoteProtocolError, match="short"):
            while readinto(buffer):
                pass


def test_other_transports_have_no_readinto() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=b"x"))
    with httpx.Client(transport=transport) as client, \
            client.stream("GET", "http://h/") as response:
        assert body_readinto(response) is None

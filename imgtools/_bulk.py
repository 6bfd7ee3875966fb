"""``BulkTransport``: an httpx transport on ``http.client``, for Cloud Files bodies.

Export segments are large (Rackspace makes them 1000 MiB). httpcore reads a body 64 KiB at a
time through h11's Python state machine; ``http.client`` reads it with C code straight off a
buffered socket. On loopback here the difference is about 2.5x (``benchmarks/download.py``),
which is what lets a verified download keep up with curl. Requests still go through httpx: its
auth flow adds the token, ``RetryTransport`` wraps this transport, errors come out as httpx's.

A request body given as bytes is sent whole; one given as a stream (a segment copied from one
region to another, ``imgtools._copy``) is sent as it is produced, so memory stays bounded. A
streamed body is iterated once per attempt: the stale-connection retry here, and the retries of
``RetryTransport`` and the auth flow, iterate it again, and it must start over when they do.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
from collections.abc import Callable, Iterator

import httpx

__all__ = ["BULK_READ_SIZE", "BulkTransport", "body_readinto"]

#: Bytes asked of the socket per body read.
BULK_READ_SIZE = 1024 * 1024
#: Idle keep-alive connections kept per host.
MAX_IDLE_PER_HOST = 8

_Key = tuple[str, str, int]


def _timeouts(request: httpx.Request) -> tuple[float | None, float | None]:
    timeout = request.extensions.get("timeout") or {}
    return timeout.get("connect"), timeout.get("read")


@contextlib.contextmanager
def _body_errors() -> Iterator[None]:
    """http.client's errors while reading a body, as httpx's."""
    try:
        yield
    except TimeoutError as exc:
        raise httpx.ReadTimeout(str(exc) or "timed out reading the body") from exc
    except http.client.IncompleteRead as exc:
        raise httpx.RemoteProtocolError(
            f"the server closed the connection {exc.expected} bytes short") from exc
    except http.client.HTTPException as exc:
        raise httpx.RemoteProtocolError(str(exc) or type(exc).__name__) from exc
    except OSError as exc:
        raise httpx.ReadError(str(exc) or type(exc).__name__) from exc


class _Body(httpx.SyncByteStream):
    def __init__(self, transport: BulkTransport, key: _Key,
                 conn: http.client.HTTPConnection, response: http.client.HTTPResponse) -> None:
        self._transport, self._key, self._conn, self._response = transport, key, conn, response
        self._done = False

    def __iter__(self) -> Iterator[bytes]:
        response = self._response
        with _body_errors():
            while chunk := response.read(BULK_READ_SIZE):
                yield chunk
        self._end()

    def readinto(self, buffer: bytearray | memoryview) -> int:
        """Read up to ``len(buffer)`` body bytes straight into ``buffer``; 0 at the end.

        No new ``bytes`` per chunk: a download reusing a few buffers spares the allocator
        (and the kernel's page zeroing) a gigabyte of churn per gigabyte read."""
        with _body_errors():
            n = self._response.readinto(buffer)
        if n == 0 and len(buffer):
            self._end()
        return n

    def _end(self) -> None:
        # http.client ends a sized read quietly when the peer closes early; httpcore does not.
        if self._response.length:
            raise httpx.RemoteProtocolError(
                f"the server closed the connection {self._response.length} bytes short")
        self._done = True

    def close(self) -> None:
        response, conn = self._response, self._conn
        # Only a fully read body leaves the connection reusable.
        if self._done and response.isclosed() and not response.will_close:
            self._transport._release(self._key, conn)
        else:
            response.close()
            conn.close()


class BulkTransport(httpx.BaseTransport):
    """An ``httpx.BaseTransport`` on ``http.client`` with a small keep-alive pool."""

    def __init__(self, *, verify: ssl.SSLContext | bool = True) -> None:
        if verify is True:
            self._ssl: ssl.SSLContext | None = ssl.create_default_context()
        elif verify is False:
            self._ssl = ssl._create_unverified_context()  # the caller allowed it: loopback only
        else:
            self._ssl = verify
        self._idle: dict[_Key, list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()

    def _connection(self, key: _Key, connect_timeout: float | None
                    ) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            idle = self._idle.get(key)
            if idle:
                return idle.pop(), True
        scheme, host, port = key
        if scheme == "https":
            return http.client.HTTPSConnection(host, port, timeout=connect_timeout,
                                               context=self._ssl), False
        return http.client.HTTPConnection(host, port, timeout=connect_timeout), False

    def _release(self, key: _Key, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < MAX_IDLE_PER_HOST:
                idle.append(conn)
                return
        conn.close()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r}")
        port = url.port or (443 if url.scheme == "https" else 80)
        key: _Key = (url.scheme, url.host, port)
        connect_timeout, read_timeout = _timeouts(request)
        body: bytes | httpx.SyncByteStream
        if isinstance(request.stream, httpx.ByteStream):
            body = request.read()
        elif isinstance(request.stream, httpx.SyncByteStream):
            body = request.stream  # streamed: never held whole (a segment can be 5 GB)
        else:
            raise TypeError("BulkTransport sends sync request bodies only")
        chunked = "chunked" in request.headers.get("transfer-encoding", "").lower()
        for attempt in (1, 2):
            conn, reused = self._connection(key, connect_timeout)
            try:
                response = self._exchange(conn, request, body, read_timeout, chunked)
            except (http.client.RemoteDisconnected, ConnectionResetError,
                    BrokenPipeError) as exc:
                conn.close()
                # A pooled connection the server had closed meanwhile: the request never
                # reached it, so one more try on a new connection is safe for any method.
                if reused and attempt == 1:
                    continue
                if isinstance(exc, BrokenPipeError):
                    raise httpx.WriteError(str(exc) or "broken pipe") from exc
                if isinstance(exc, http.client.RemoteDisconnected):
                    raise httpx.RemoteProtocolError(
                        "Server disconnected without sending a response.") from exc
                raise httpx.ReadError(str(exc) or "connection reset") from exc
            except BaseException:
                conn.close()
                raise
            return httpx.Response(
                response.status,
                headers=response.getheaders(),
                stream=_Body(self, key, conn, response),
                extensions={"http_version": b"HTTP/1.1",
                            "reason_phrase": response.reason.encode("latin-1", "replace")},
                request=request,
            )
        raise AssertionError("unreachable")  # pragma: no cover

    def _exchange(self, conn: http.client.HTTPConnection, request: httpx.Request,
                  body: bytes | httpx.SyncByteStream, read_timeout: float | None,
                  chunked: bool = False) -> http.client.HTTPResponse:
        try:
            if conn.sock is None:
                conn.connect()
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(str(exc) or "timed out connecting") from exc
        except OSError as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        assert conn.sock is not None
        conn.sock.settimeout(read_timeout)
        if isinstance(conn.sock, socket.socket) and conn.sock.family != socket.AF_UNIX:
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        target = request.url.raw_path.decode("ascii")
        try:
            conn.putrequest(request.method, target, skip_host=True, skip_accept_encoding=True)
            for name, value in request.headers.raw:
                conn.putheader(name.decode("latin-1"), value.decode("latin-1"))
            if isinstance(body, bytes):
                conn.endheaders(body or None)
            else:
                conn.endheaders(iter(body), encode_chunked=chunked)
        except TimeoutError as exc:
            raise httpx.WriteTimeout(str(exc) or "timed out sending") from exc
        except (BrokenPipeError, ConnectionResetError):
            raise
        except OSError as exc:
            raise httpx.WriteError(str(exc) or type(exc).__name__) from exc
        try:
            return conn.getresponse()
        except TimeoutError as exc:
            raise httpx.ReadTimeout(str(exc) or "timed out waiting for the answer") from exc
        except (http.client.RemoteDisconnected, ConnectionResetError):
            raise
        except http.client.HTTPException as exc:
            raise httpx.RemoteProtocolError(str(exc) or type(exc).__name__) from exc
        except OSError as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__) from exc

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()


def body_readinto(response: httpx.Response) -> Callable[[bytearray | memoryview], int] | None:
    """The ``readinto`` of a streamed response's body when a ``BulkTransport`` answered it,
    else ``None`` (another transport: iterate the body instead).

    httpx's client wraps every transport stream in its own (``BoundSyncStream``, whose
    ``_stream`` is the transport's); this is the one place that knows it."""
    stream = getattr(response.stream, "_stream", response.stream)
    return stream.readinto if isinstance(stream, _Body) else None

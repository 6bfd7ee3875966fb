"""Object bodies through ``sendfile(2)``: an ASGI extension the emulator's uvicorn speaks.

Streaming a 1 GiB export through ASGI costs the server two copies per byte (file to Python,
Python to socket) and a thread hop per chunk; on a 2-core machine that is a core the client
being measured no longer has. With ``sendfile`` the kernel moves page-cache pages to the socket.

The app sends ``{"type": "imgtools.sendfile", "file": <binary file>, "offset": int,
"count": int}`` after ``http.response.start`` (with a ``content-length``), one message per
piece, then ends with an empty ``http.response.body``. A server without the extension (httpx's
``ASGITransport`` in tests, another ASGI server) never sees these messages:
``FileSliceResponse`` streams the same bytes instead.

The same protocol takes request bodies in with less work than uvicorn's own: the pieces the
parser cuts are handed to the app as they are (joined once when several arrived meanwhile),
not appended to a buffer and copied out of it, and the socket is paused only past
``BODY_HIGH_WATER`` bytes not yet taken. An object PUT costs the server about 7% less CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from starlette.responses import Response, StreamingResponse
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from imgtools.emulator.ranges import CHUNK

__all__ = ["EXTENSION", "FileSliceResponse", "SendfileProtocol", "Slice", "file_slices",
           "read_slices"]

EXTENSION = "imgtools.sendfile"
Slice = tuple[Path, int, int]  # (file, offset, count)
#: Request body bytes buffered before the socket is no longer read (uvicorn's own: 64 KiB,
#: which stops and restarts reading, two system calls, every 256 KiB of an object PUT).
BODY_HIGH_WATER = 1024 * 1024


_CYCLE_FIELDS = ("disconnected", "response_started", "response_complete", "chunked_encoding",
                 "expected_content_length", "flow", "transport", "body", "more_body",
                 "message_event", "waiting_for_100_continue")


class _SendfileCycle(RequestResponseCycle):
    pieces: list[bytes]  # the body as the parser cut it, since the last receive
    buffered: int

    async def receive(self) -> Any:
        # uvicorn's receive, except that the body comes as the pieces the parser cut, joined
        # once here, not appended to a bytearray and then copied out of it again.
        if self.waiting_for_100_continue and not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.waiting_for_100_continue = False
        if not self.disconnected and not self.response_complete:
            self.flow.resume_reading()
            await self.message_event.wait()
            self.message_event.clear()
        if self.disconnected or self.response_complete:
            return {"type": "http.disconnect"}
        pieces, self.pieces, self.buffered = self.pieces, [], 0
        if self.body:  # arrived before this cycle became ours (a pipelined request)
            pieces.insert(0, bytes(self.body))
            self.body = bytearray()
        body = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        return {"type": "http.request", "body": body, "more_body": self.more_body}

    async def send(self, message: Any) -> None:
        if message["type"] != EXTENSION:
            return await super().send(message)
        if self.disconnected:
            return
        count = message["count"]
        if not self.response_started or self.response_complete or self.chunked_encoding \
                or count > self.expected_content_length:
            raise RuntimeError("imgtools.sendfile needs a started, sized response")
        if self.flow.write_paused:
            await self.flow.drain()
        loop = asyncio.get_running_loop()
        try:
            sent = await loop.sendfile(self.transport, message["file"], message["offset"], count)
        except (ConnectionError, OSError, RuntimeError):
            sent = -1  # the client went away, or the transport closed under us
        if sent != count:
            # A failed write, or a file shorter than its listing: the client sees a short
            # body (the connection closes), as with a truncated stream.
            self.disconnected = True
            self.transport.close()
            return
        self.expected_content_length -= count


class SendfileProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, plus the ``imgtools.sendfile`` extension, and request
    bodies taken in with less copying and less stopping (``BODY_HIGH_WATER``)."""

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        # Offered only while uvicorn's cycle has the fields the send above relies on: after an
        # upgrade that renames them (or drops this hook) bodies are streamed, never broken.
        if all(hasattr(cycle, name) for name in _CYCLE_FIELDS):
            cycle.__class__ = _SendfileCycle
            assert isinstance(cycle, _SendfileCycle)
            cycle.pieces, cycle.buffered = [], 0
            cycle.scope.setdefault("extensions", {})[EXTENSION] = {}  # type: ignore[typeddict-item]
        super()._start_asgi_task(cycle, app)

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if not isinstance(cycle, _SendfileCycle):
            super().on_body(body)
            return
        # As uvicorn's on_body, with the body kept in pieces and a higher mark.
        if (self.parser.should_upgrade() and self._should_upgrade()) or cycle.response_complete:
            return
        cycle.pieces.append(body)
        cycle.buffered += len(body)
        if cycle.buffered > BODY_HIGH_WATER:
            self.flow.pause_reading()
        cycle.message_event.set()


def file_slices(parts: list[tuple[Path, int]], start: int, length: int) -> list[Slice]:
    """The slices of files laid end to end (``(path, size)``) that hold ``length`` bytes
    from ``start``."""
    slices: list[Slice] = []
    offset = 0
    for path, size in parts:
        if length <= 0:
            break
        if offset + size > start:
            skip = max(0, start - offset)
            count = min(size - skip, length)
            slices.append((path, skip, count))
            length -= count
        offset += size
    return slices


def read_slices(slices: list[Slice]) -> Iterator[bytes]:
    """The bytes of ``slices``, read in chunks; ends early where a file is short or gone."""
    for path, offset, count in slices:
        try:
            with open(path, "rb") as handle:
                handle.seek(offset)
                while count > 0:
                    chunk = handle.read(min(CHUNK, count))
                    if not chunk:
                        break
                    count -= len(chunk)
                    yield chunk
        except FileNotFoundError:
            pass  # a segment vanished under us: a short body, as a real DLO gives
        if count:
            return


class FileSliceResponse(Response):
    """A body made of file slices laid end to end, sent with ``sendfile`` where possible.

    ``headers`` must carry the ``content-length`` (the sum of the counts)."""

    def __init__(self, slices: list[Slice], *, status_code: int,
                 headers: dict[str, str]) -> None:
        super().__init__(None, status_code=status_code, headers=headers)
        self.slices = slices

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        with contextlib.ExitStack() as stack:
            try:
                files = [stack.enter_context(open(path, "rb")) for path, _, _ in self.slices]
            except FileNotFoundError:
                files = []  # a segment vanished since the listing: stream what is left (short)
            if not files or EXTENSION not in scope.get("extensions", {}):
                fallback = StreamingResponse(read_slices(self.slices),
                                             status_code=self.status_code)
                fallback.raw_headers = self.raw_headers
                await fallback(scope, receive, send)
                return
            await send({"type": "http.response.start", "status": self.status_code,
                        "headers": self.raw_headers})
            for handle, (_, offset, count) in zip(files, self.slices, strict=True):
                if count:
                    await send({"type": EXTENSION, "file": handle, "offset": offset,
                                "count": count})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

"""Fault injection (an ASGI middleware): 503s, rate limiting, latency, dropped connections,
bodies cut halfway.

Settings live in ``EmulatorState.faults`` and can change while running
(``POST /_emulator/faults``). ``/_emulator/*`` is never faulted.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from typing import Any

from imgtools.emulator.config import FaultSettings
from imgtools.emulator.errors import glance_body, swift_body
from imgtools.emulator.sendfile import EXTENSION
from imgtools.emulator.state import EmulatorState

__all__ = ["RAW_SEND", "FaultMiddleware", "drop_connection"]

Scope = dict[str, Any]
#: Where the stats middleware keeps the server's own ``send`` (needed to drop a connection).
RAW_SEND = "imgtools.raw_send"
UNAVAILABLE = "The server is currently unavailable. Please try again at a later time."


async def _abort(scope: Scope, send: Any) -> bool:
    """Close the client's connection at once, if uvicorn's transport is in reach."""
    raw = scope.get(RAW_SEND, send)
    transport = getattr(getattr(raw, "__self__", None), "transport", None)
    if transport is None:
        return False
    transport.abort()
    # Let uvicorn notice the disconnect before the app returns, so it neither logs
    # "returned without starting response" nor tries to send a 500.
    for _ in range(3):
        await asyncio.sleep(0)
    return True


async def drop_connection(scope: Scope, send: Any) -> None:
    """Close the client's connection without an answer (uvicorn's transport, when we can
    reach it; otherwise a truncated response, which clients see the same way)."""
    if await _abort(scope, send):
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"100")]})
    await send({"type": "http.response.body", "body": b"x", "more_body": True})
    raise ConnectionAbortedError("dropped by fault injection")


class _BodyCutter:
    """A ``send`` that lets half of the body through (by its ``content-length``), then closes
    the connection and swallows the rest: what a client sees when a download breaks."""

    def __init__(self, scope: Scope, send: Any, stats: Any) -> None:
        self.scope, self._send, self.stats = scope, send, stats
        self.left: int | None = None  # bytes still let through; None: not cutting
        self.cut = False

    async def send(self, message: Any) -> None:
        if self.cut:
            return
        kind = message["type"]
        if kind == "http.response.start":
            length = dict(message.get("headers", [])).get(b"content-length")
            if length is not None and int(length) > 1 and self.scope["method"] != "HEAD":
                self.left = int(length) // 2
        elif self.left is not None and kind == "http.response.body":
            body = message.get("body", b"")
            if len(body) > self.left:
                message = {**message, "body": body[:self.left], "more_body": True}
                await self._send(message)
                await self._close()
                return
            self.left -= len(body)
        elif self.left is not None and kind == EXTENSION:
            if message["count"] > self.left:
                if self.left:
                    await self._send({**message, "count": self.left})
                await self._close()
                return
            self.left -= message["count"]
        await self._send(message)

    async def _close(self) -> None:
        self.cut = True
        self.stats.fault("cut_body")
        await _abort(self.scope, self._send)


class _Bucket:
    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp


class FaultMiddleware:
    """Applies ``state.faults`` to every API request."""

    def __init__(self, app: Any, state: EmulatorState) -> None:
        self.app = app
        self.state = state
        self.random = random.Random()
        self._seeded_by: FaultSettings | None = None
        self._buckets: dict[str, _Bucket] = {}

    def _applies(self, scope: Scope) -> bool:
        faults = self.state.faults
        path, method = scope["path"], scope["method"]
        if faults.paths and not any(path.startswith(p.strip())
                                    for p in faults.paths.split(",") if p.strip()):
            return False
        return not (faults.methods and method.upper() not in
                    [m.strip().upper() for m in faults.methods.split(",")])

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_emulator"):
            await self.app(scope, receive, send)
            return
        faults = self.state.faults
        if not faults.active() or not self._applies(scope):
            await self.app(scope, receive, send)
            return
        stats, rnd = self.state.stats, self.random
        if faults.seed and faults is not self._seeded_by:
            # Every change of settings is a new object: a seed set again starts over.
            rnd.seed(faults.seed)
            self._seeded_by = faults
        if faults.latency_max > 0:
            stats.fault("latency")
            await asyncio.sleep(rnd.uniform(faults.latency_min, faults.latency_max))
        if faults.drop_before and rnd.random() < faults.drop_before:
            stats.fault("drop_before")
            await drop_connection(scope, send)
            return
        if faults.error_503 and rnd.random() < faults.error_503:
            stats.fault("error_503")
            await self._answer(scope, send, 503, UNAVAILABLE, {})
            return
        if faults.rate_limit > 0:
            wait = self._over_limit(scope, faults.rate_limit)
            if wait is not None:
                status = faults.rate_limit_status
                stats.fault(f"rate_limit_{status}")
                await self._answer(scope, send, status, "Rate limit exceeded; retry after "
                                   f"{wait} seconds", {"retry-after": str(wait)})
                return
        if faults.drop_after and rnd.random() < faults.drop_after:
            stats.fault("drop_after")

            async def swallow(message: Any) -> None:
                return None

            await self.app(scope, receive, swallow)
            await drop_connection(scope, send)
            return
        if faults.cut_body and rnd.random() < faults.cut_body:
            await self.app(scope, receive, _BodyCutter(scope, send, stats).send)
            return
        await self.app(scope, receive, send)

    def _over_limit(self, scope: Scope, rate: float) -> int | None:
        """Token bucket per token (or client address): ``None`` if allowed, else seconds to wait."""
        headers = dict(scope.get("headers") or [])
        key = headers.get(b"x-auth-token", b"").decode("latin-1") or str(scope.get("client"))
        now = time.monotonic()
        capacity = max(1.0, rate)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(capacity, now)
        bucket.tokens = min(capacity, bucket.tokens + (now - bucket.stamp) * rate)
        bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        return max(1, math.ceil((1.0 - bucket.tokens) / rate))

    async def _answer(self, scope: Scope, send: Any, status: int, message: str,
                      extra: dict[str, str]) -> None:
        headers = dict(scope.get("headers") or [])
        if scope["path"].startswith("/v1/"):
            body, media = swift_body(status, message), "text/html; charset=UTF-8"
        else:
            accept = headers.get(b"accept", b"").decode("latin-1")
            body, media = glance_body(status, message, "application/json" in accept)
        if scope["method"] == "HEAD":
            body = b""
        raw = [(b"content-type", media.encode()), (b"content-length", str(len(body)).encode())]
        raw += [(k.encode(), v.encode()) for k, v in extra.items()]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})

"""Per-request retries at the transport: the single I/O seam of imgtools.

``RetryTransport`` wraps an httpx transport and repeats *one HTTP request* when repeating it is
safe and likely to help. It knows nothing about tasks: waiting for a task is a different loop
(``_polling.py``), and mixing the two is what made other SDKs' timeouts confusing.

What is retried, with jittered exponential backoff and at most ``retries`` times:

- connection failures before anything was sent (connect error/timeout, pool timeout), for every
  method, POST included, since the server never saw the request;
- read/write errors, timeouts and dropped connections, for idempotent methods only
  (GET, HEAD, PUT, DELETE, OPTIONS): a POST whose answer was lost may have taken effect;
- 502, 503 and 504 answers, idempotent methods only;
- 429, and 413 carrying ``Retry-After`` (Rackspace's "Over Limit"), idempotent methods only,
  after ``Retry-After`` seconds (capped), or the backoff when the header is missing.

A request marked ``extensions={RETRY_EXTENSION: True}`` is treated as idempotent (the identity
``POST /tokens`` is: it only mints a token).

Two things make the retries work with the layers around them:

- the body of an answer the client reads whole anyway (JSON and text: task, image and list
  answers, Swift listings) is read *inside* the loop, so a body cut short is asked again like a
  dropped connection; large binary bodies (export segments, image files) are left to the caller,
  which resumes them with ``Range``. ``READ_BODY_EXTENSION`` overrides the choice per request;
- with a ``TokenRenewer`` (the auth that logs in), every repeated attempt carries the *current*
  token, renewed when it is about to expire, and a 401 logs in again (at most
  ``REAUTH_RETRIES`` times per request, the later ones after a backoff): a token that expires
  while a request is being retried never ends it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from imgtools._config import (
    DEFAULT_RETRIES,
    DEFAULT_RETRY_AFTER_CAP,
    DEFAULT_RETRY_BACKOFF_INITIAL,
    DEFAULT_RETRY_BACKOFF_MAXIMUM,
)
from imgtools._http import retry_after_seconds
from imgtools._ops import Op, Send, Sleep, arun, run

__all__ = [
    "IDEMPOTENT_METHODS",
    "PRELOAD_LIMIT",
    "READ_BODY_EXTENSION",
    "REAUTH_RETRIES",
    "RETRY_EXTENSION",
    "AsyncRetryTransport",
    "RetryTransport",
    "Stats",
    "TokenRenewer",
]

logger = logging.getLogger("imgtools")

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
RETRY_EXTENSION = "imgtools.retry"
#: Request extension: ``True`` reads the answer's body inside the retry loop, ``False`` never;
#: unset, JSON and text answers of idempotent requests are read there (see the module doc).
READ_BODY_EXTENSION = "imgtools.read_body"
#: Answers read inside the retry loop are at most this long (by ``Content-Length``), bytes.
PRELOAD_LIMIT = 16 * 1024 * 1024
#: Logins again after a 401 within one request, before the 401 is its answer.
REAUTH_RETRIES = 3
_RETRY_STATUSES = frozenset({502, 503, 504})
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_MAYBE_SENT = (httpx.ReadError, httpx.ReadTimeout, httpx.WriteError, httpx.WriteTimeout,
               httpx.RemoteProtocolError)


class TokenRenewer(Protocol):
    """Puts the current token on a request that carries one, logging in first when it is about
    to expire or, with ``refused``, when the service refused the token the request carries.
    Raises the ``AuthError`` of an identity service that refuses the credentials."""

    def renew(self, request: httpx.Request, *, refused: bool) -> None: ...

    async def arenew(self, request: httpx.Request, *, refused: bool) -> None: ...


@dataclass
class Stats:
    """Counters of what a client did, shared by its transports and its auth; thread-safe.

    ``requests`` counts HTTP attempts (each retry is one more), ``retries`` the repeated ones,
    ``reauths`` the logins after the first, ``rate_limited`` the 413/429 answers seen,
    ``reconciled`` the tasks found after their ``POST /v2/tasks`` answer was lost.
    """

    requests: int = 0
    retries: int = 0
    reauths: int = 0
    rate_limited: int = 0
    reconciled: int = 0
    retry_reasons: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + amount)

    def retried(self, reason: str) -> None:
        with self._lock:
            self.retries += 1
            self.retry_reasons[reason] = self.retry_reasons.get(reason, 0) + 1

    def snapshot(self) -> dict[str, object]:
        """The counters as a plain dict (a copy)."""
        with self._lock:
            return {"requests": self.requests, "retries": self.retries, "reauths": self.reauths,
                    "rate_limited": self.rate_limited, "reconciled": self.reconciled,
                    "retry_reasons": dict(self.retry_reasons)}


class _RetryRules:
    """What both transports share: may this be retried, after how long, and the loop itself
    (``attempts``)."""

    def __init__(self, *, retries: int, backoff_initial: float, backoff_maximum: float,
                 retry_after_cap: float, stats: Stats | None,
                 random_: Callable[[], float], renews: bool = False) -> None:
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.retries = retries
        self.backoff_initial = backoff_initial
        self.backoff_maximum = backoff_maximum
        self.retry_after_cap = retry_after_cap
        self.stats = stats if stats is not None else Stats()
        self._random = random_
        self.renews = renews

    @staticmethod
    def idempotent(request: httpx.Request) -> bool:
        return (request.method in IDEMPOTENT_METHODS
                or request.extensions.get(RETRY_EXTENSION) is True)

    @staticmethod
    def preload(request: httpx.Request, response: httpx.Response) -> bool:
        """Read this answer's body inside the loop? (See the module doc.)"""
        wanted = request.extensions.get(READ_BODY_EXTENSION)
        if wanted is not None:
            return bool(wanted)
        if request.method == "HEAD" or not _RetryRules.idempotent(request):
            return False
        media = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if not (media == "application/json" or media.endswith("+json")
                or media.startswith("text/")):
            return False
        length = response.headers.get("content-length", "")
        return not length.isdigit() or int(length) <= PRELOAD_LIMIT

    def backoff(self, attempt: int) -> float:
        # "Full jitter": uniform over [0, min(max, initial * 2**attempt)], so clients that failed
        # together do not come back together.
        ceiling = min(self.backoff_maximum, self.backoff_initial * (2.0 ** attempt))
        return ceiling * self._random()

    def delay_for_response(self, request: httpx.Request, response: httpx.Response,
                           attempt: int) -> float | None:
        status = response.status_code
        if status in (413, 429):
            self.stats.add("rate_limited")
        if attempt >= self.retries or not self.idempotent(request):
            return None
        if status in _RETRY_STATUSES:
            after = retry_after_seconds(response.headers.get("Retry-After"))
            base = self.backoff(attempt)
            return base if after is None else max(base, min(after, self.retry_after_cap))
        if status in (413, 429):
            after = retry_after_seconds(response.headers.get("Retry-After"))
            if after is None:
                # 413 without Retry-After is "Request Entity Too Large": repeating cannot help.
                return None if status == 413 else self.backoff(attempt)
            return min(after, self.retry_after_cap)
        return None

    def delay_for_error(self, request: httpx.Request, exc: Exception, attempt: int) -> float | None:
        if attempt >= self.retries:
            return None
        if isinstance(exc, _NOT_SENT):
            return self.backoff(attempt)
        if isinstance(exc, _MAYBE_SENT) and self.idempotent(request):
            return self.backoff(attempt)
        return None

    def note(self, request: httpx.Request, reason: str, delay: float, attempt: int) -> None:
        self.stats.retried(reason)
        # The path only: no query, no headers, nothing secret.
        logger.debug("retrying %s %s after %s in %.2f s (retry %d of %d)", request.method,
                     request.url.path, reason, delay, attempt + 1, self.retries)

    def attempts(self, request: httpx.Request) -> Op[httpx.Response]:
        """The retry loop of one request, an ``_ops`` operation run by both transports.

        ``Send(request)`` is answered with the response (its body read when ``preload`` says
        so), or the ``httpx.TransportError`` is thrown in (raised again from here when it is
        final). ``Sleep`` is the wait before the next attempt: the transport closes the answer
        refused meanwhile, so its connection goes back to the pool, and puts the current token
        on the request before that attempt (see ``_Exchange``). Returns the final response.
        A 401 answered by logging in again uses up no retry.
        """
        attempt = 0
        refused = 0
        while True:
            self.stats.add("requests")
            try:
                outcome: httpx.Response = yield Send(request)
            except httpx.TransportError as exc:
                delay = self.delay_for_error(request, exc, attempt)
                if delay is None:
                    raise
                self.note(request, type(exc).__name__, delay, attempt)
                yield Sleep(delay)
            else:
                if (outcome.status_code == 401 and self.renews and refused < REAUTH_RETRIES
                        and "x-auth-token" in request.headers):
                    # The first new login at once; the next ones after a backoff.
                    delay = self.backoff(refused - 1) if refused else 0.0
                    refused += 1
                    self.note(request, "401", delay, attempt)
                    yield Sleep(delay)
                    continue
                delay = self.delay_for_response(request, outcome, attempt)
                if delay is None:
                    return outcome
                self.note(request, str(outcome.status_code), delay, attempt)
                yield Sleep(delay)
            attempt += 1


class _Exchange:
    """The I/O of one request's attempts, for the blocking transport: send (renewing the token
    before a repeated attempt, reading the body when the rules say so), and sleep (closing the
    refused answer first). ``_AsyncExchange`` is its awaitable twin; the loop is ``attempts``."""

    def __init__(self, transport: httpx.BaseTransport, rules: _RetryRules,
                 renewer: TokenRenewer | None, sleep: Callable[[float], None]) -> None:
        self.transport, self.rules, self.renewer, self._sleep = transport, rules, renewer, sleep
        self.sent = False
        self.last: httpx.Response | None = None  # the latest answer, until it is closed

    def send(self, step: Send) -> httpx.Response:
        request = step.request
        if self.sent and self.renewer is not None:
            refused = self.last is not None and self.last.status_code == 401
            self.renewer.renew(request, refused=refused)
        self.sent, self.last = True, None
        response = self.transport.handle_request(request)
        if self.rules.preload(request, response):
            _read(response)
        self.last = response
        return response

    def sleep(self, seconds: float) -> None:
        if self.last is not None:
            _discard(self.last)
        self._sleep(seconds)


class _AsyncExchange:
    """``_Exchange`` for the async transport."""

    def __init__(self, transport: httpx.AsyncBaseTransport, rules: _RetryRules,
                 renewer: TokenRenewer | None, sleep: Callable[[float], Awaitable[None]]
                 ) -> None:
        self.transport, self.rules, self.renewer, self._sleep = transport, rules, renewer, sleep
        self.sent = False
        self.last: httpx.Response | None = None

    async def send(self, step: Send) -> httpx.Response:
        request = step.request
        if self.sent and self.renewer is not None:
            refused = self.last is not None and self.last.status_code == 401
            await self.renewer.arenew(request, refused=refused)
        self.sent, self.last = True, None
        response = await self.transport.handle_async_request(request)
        if self.rules.preload(request, response):
            await _aread(response)
        self.last = response
        return response

    async def sleep(self, seconds: float) -> None:
        if self.last is not None:
            await _adiscard(self.last)
        await self._sleep(seconds)


class RetryTransport(httpx.BaseTransport):
    """Wrap ``transport`` (default: ``httpx.HTTPTransport()``) with bounded, jittered retries.

    ``retries`` is the number of repeats after the first attempt; backoff starts at
    ``backoff_initial`` seconds and doubles up to ``backoff_maximum``; ``Retry-After`` is obeyed
    up to ``retry_after_cap`` seconds. ``stats`` receives the counters.
    """

    def __init__(self, transport: httpx.BaseTransport | None = None, *,
                 retries: int = DEFAULT_RETRIES,
                 backoff_initial: float = DEFAULT_RETRY_BACKOFF_INITIAL,
                 backoff_maximum: float = DEFAULT_RETRY_BACKOFF_MAXIMUM,
                 retry_after_cap: float = DEFAULT_RETRY_AFTER_CAP,
                 stats: Stats | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 random_: Callable[[], float] = random.random,
                 renewer: TokenRenewer | None = None) -> None:
        self._transport = transport if transport is not None else httpx.HTTPTransport()
        self._rules = _RetryRules(retries=retries, backoff_initial=backoff_initial,
                                  backoff_maximum=backoff_maximum,
                                  retry_after_cap=retry_after_cap, stats=stats, random_=random_,
                                  renews=renewer is not None)
        self._sleep = sleep
        self._renewer = renewer

    @property
    def stats(self) -> Stats:
        return self._rules.stats

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        exchange = _Exchange(self._transport, self._rules, self._renewer, self._sleep)
        return run(self._rules.attempts(request), exchange.send, sleep=exchange.sleep,
                   errors=(httpx.TransportError,))

    def close(self) -> None:
        self._transport.close()


def _read(response: httpx.Response) -> None:
    try:
        response.read()
    except BaseException:
        response.close()
        raise


async def _aread(response: httpx.Response) -> None:
    try:
        await response.aread()
    except BaseException:
        await response.aclose()
        raise


def _discard(response: httpx.Response) -> None:
    # Reading the (small) error body lets the connection go back to the pool.
    try:
        response.read()
    except httpx.HTTPError:
        pass
    finally:
        response.close()


async def _adiscard(response: httpx.Response) -> None:
    try:
        await response.aread()
    except httpx.HTTPError:
        pass
    finally:
        await response.aclose()


class AsyncRetryTransport(httpx.AsyncBaseTransport):
    """The async twin of ``RetryTransport``: same rules, sleeps with ``asyncio.sleep``."""

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None, *,
                 retries: int = DEFAULT_RETRIES,
                 backoff_initial: float = DEFAULT_RETRY_BACKOFF_INITIAL,
                 backoff_maximum: float = DEFAULT_RETRY_BACKOFF_MAXIMUM,
                 retry_after_cap: float = DEFAULT_RETRY_AFTER_CAP,
                 stats: Stats | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 random_: Callable[[], float] = random.random,
                 renewer: TokenRenewer | None = None) -> None:
        self._transport = transport if transport is not None else httpx.AsyncHTTPTransport()
        self._rules = _RetryRules(retries=retries, backoff_initial=backoff_initial,
                                  backoff_maximum=backoff_maximum,
                                  retry_after_cap=retry_after_cap, stats=stats, random_=random_,
                                  renews=renewer is not None)
        self._sleep = sleep
        self._renewer = renewer

    @property
    def stats(self) -> Stats:
        return self._rules.stats

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        exchange = _AsyncExchange(self._transport, self._rules, self._renewer, self._sleep)
        return await arun(self._rules.attempts(request), exchange.send, sleep=exchange.sleep,
                          errors=(httpx.TransportError,))

    async def aclose(self) -> None:
        await self._transport.aclose()

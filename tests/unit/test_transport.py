"""RetryTransport: what is retried and after how long.

The decisions are checked directly on real ``httpx.Request``/``Response`` objects; the end-to-end
behaviour (503 bursts, 413 + Retry-After, dropped connections) runs against the emulator's fault
flags in test_client.py.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from imgtools._ops import Send, Sleep
from imgtools._transport import (
    READ_BODY_EXTENSION,
    REAUTH_RETRIES,
    RETRY_EXTENSION,
    AsyncRetryTransport,
    RetryTransport,
    Stats,
    _RetryRules,
)


def rules(retries: int = 3, cap: float = 60.0) -> _RetryRules:
    # random() == 1.0 makes the jittered backoff equal to its ceiling, so it can be checked.
    return _RetryRules(retries=retries, backoff_initial=0.5, backoff_maximum=4.0,
                       retry_after_cap=cap, stats=Stats(), random_=lambda: 1.0)


def req(method: str, **extensions: object) -> httpx.Request:
    return httpx.Request(method, "http://127.0.0.1/v2/tasks?status=pending",
                         extensions=dict(extensions))


def resp(status: int, request: httpx.Request, retry_after: str | None = None) -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return httpx.Response(status, headers=headers, request=request)


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE", "OPTIONS"])
@pytest.mark.parametrize("status", [502, 503, 504])
def test_idempotent_methods_retry_gateway_errors(method: str, status: int) -> None:
    r = rules()
    request = req(method)
    assert r.delay_for_response(request, resp(status, request), 0) == 0.5
    assert r.delay_for_response(request, resp(status, request), 1) == 1.0
    assert r.delay_for_response(request, resp(status, request), 2) == 2.0
    assert r.delay_for_response(request, resp(status, request), 3) is None  # bounded


@pytest.mark.parametrize("status", [413, 429, 500, 502, 503, 504])
def test_post_is_never_retried_on_an_answer(status: int) -> None:
    r = rules()
    request = req("POST")
    assert r.delay_for_response(request, resp(status, request, "1"), 0) is None


@pytest.mark.parametrize("exc", [httpx.ReadError("x"), httpx.ReadTimeout("x"),
                                 httpx.RemoteProtocolError("x"), httpx.WriteError("x")])
def test_post_is_not_retried_when_the_answer_may_be_lost(exc: Exception) -> None:
    assert rules().delay_for_error(req("POST"), exc, 0) is None
    assert rules().delay_for_error(req("GET"), exc, 0) == 0.5


@pytest.mark.parametrize("exc", [httpx.ConnectError("x"), httpx.ConnectTimeout("x"),
                                 httpx.PoolTimeout("x")])
def test_nothing_sent_is_retried_for_every_method(exc: Exception) -> None:
    assert rules().delay_for_error(req("POST"), exc, 0) == 0.5
    assert rules().delay_for_error(req("POST"), exc, 3) is None


def test_other_errors_are_not_retried() -> None:
    assert rules().delay_for_error(req("GET"), httpx.UnsupportedProtocol("x"), 0) is None
    request = req("GET")
    for status in (400, 401, 403, 404, 409, 500):
        assert rules().delay_for_response(request, resp(status, request), 0) is None


def test_rate_limits_honour_retry_after_up_to_the_cap() -> None:
    r = rules(cap=10.0)
    request = req("GET")
    assert r.delay_for_response(request, resp(429, request, "3"), 0) == 3.0
    assert r.delay_for_response(request, resp(413, request, "7.5"), 0) == 7.5
    assert r.delay_for_response(request, resp(413, request, "3600"), 0) == 10.0
    # An HTTP date in the past means "now".
    past = "Wed, 21 Oct 2015 07:28:00 GMT"
    assert r.delay_for_response(request, resp(429, request, past), 0) == 0.0
    # 429 without the header falls back to backoff; 413 without it is "too large": final.
    assert r.delay_for_response(request, resp(429, request), 1) == 1.0
    assert r.delay_for_response(request, resp(413, request), 0) is None
    assert r.stats.rate_limited == 6


def test_retry_after_on_503_lengthens_the_backoff() -> None:
    request = req("GET")
    assert rules().delay_for_response(request, resp(503, request, "3"), 0) == 3.0
    assert rules().delay_for_response(request, resp(503, request, "0"), 0) == 0.5


def test_marked_requests_count_as_idempotent() -> None:
    request = req("POST", **{RETRY_EXTENSION: True})
    assert rules().delay_for_response(request, resp(503, request), 0) == 0.5
    assert rules().delay_for_error(request, httpx.ReadError("x"), 0) == 0.5


def test_backoff_is_jittered_and_capped() -> None:
    draws = iter([0.0, 0.5, 0.25])
    r = _RetryRules(retries=9, backoff_initial=1.0, backoff_maximum=4.0, retry_after_cap=60.0,
                    stats=None, random_=lambda: next(draws))
    assert r.backoff(0) == 0.0
    assert r.backoff(5) == 2.0  # ceiling min(4, 32) = 4, times 0.5
    assert r.backoff(1) == 0.5


def test_stats_snapshot_counts_reasons() -> None:
    stats = Stats()
    stats.add("requests", 3)
    stats.retried("503")
    stats.retried("503")
    stats.retried("ReadError")
    snap = stats.snapshot()
    assert snap["requests"] == 3
    assert snap["retries"] == 3
    assert snap["retry_reasons"] == {"503": 2, "ReadError": 1}


# -- the retry loop both transports drive ------------------------------------------------------

Outcome = int | httpx.TransportError | tuple[int, str]


def drive_by_hand(r: _RetryRules, request: httpx.Request, outcomes: list[Outcome]
                  ) -> tuple[list[object], object]:
    """Run ``attempts`` with the scripted ``outcomes``: its steps ("send", or (delay, status of
    the answer refused before it, which the transport closes)), and what it ended with (a
    status, or the error it raised)."""
    steps = r.attempts(request)
    script = iter(outcomes)
    trace: list[object] = []
    value: httpx.Response | None = None
    error: httpx.TransportError | None = None
    last: int | None = None
    try:
        while True:
            step = steps.throw(error) if error is not None else steps.send(value)
            value, error = None, None
            if isinstance(step, Send):
                trace.append("send")
                out = next(script)
                if isinstance(out, httpx.TransportError):
                    error, last = out, None
                else:
                    value = resp(out[0], request, out[1]) if isinstance(out, tuple) \
                        else resp(out, request)
                    last = value.status_code
            else:
                assert isinstance(step, Sleep)
                trace.append((step.seconds, last))
                last = None
    except StopIteration as done:
        return trace, done.value.status_code
    except httpx.TransportError as exc:
        return trace, exc


READ, CONNECT = httpx.ReadError("lost"), httpx.ConnectError("refused")


@pytest.mark.parametrize(("method", "outcomes", "trace", "ending"), [
    ("GET", [200], ["send"], 200),
    ("GET", [503, 200], ["send", (0.5, 503), "send"], 200),
    ("GET", [READ, 502, 200], ["send", (0.5, None), "send", (1.0, 502), "send"], 200),
    # bounded: the fourth 504 is the answer, not discarded
    ("GET", [504] * 4, ["send", (0.5, 504), "send", (1.0, 504), "send", (2.0, 504), "send"], 504),
    ("GET", [CONNECT] * 4,
     ["send", (0.5, None), "send", (1.0, None), "send", (2.0, None), "send"], CONNECT),
    ("GET", [(429, "3"), 200], ["send", (3.0, 429), "send"], 200),
    ("GET", [(413, "90"), 200], ["send", (60.0, 413), "send"], 200),  # capped Retry-After
    ("GET", [413], ["send"], 413),  # too large: repeating cannot help
    ("GET", [404], ["send"], 404),
    ("POST", [CONNECT, 201], ["send", (0.5, None), "send"], 201),  # never reached the server
    ("POST", [READ], ["send"], READ),  # may have taken effect
    ("POST", [503], ["send"], 503),
])
def test_the_loop_decides_per_outcome(method: str, outcomes: list[Outcome], trace: list[object],
                                      ending: object) -> None:
    r = rules()
    got_trace, got_ending = drive_by_hand(r, req(method), outcomes)
    assert got_trace == trace
    assert got_ending is ending if isinstance(ending, Exception) else got_ending == ending
    assert r.stats.requests == trace.count("send")
    assert r.stats.retries == len(trace) - trace.count("send")


def scripted(outcomes: list[Outcome]) -> tuple[httpx.MockTransport, list[httpx.Response]]:
    script = iter(outcomes)
    answers: list[httpx.Response] = []

    def handler(request: httpx.Request) -> httpx.Response:
        out = next(script)
        if isinstance(out, httpx.TransportError):
            raise out
        status, after = out if isinstance(out, tuple) else (out, None)
        answers.append(httpx.Response(status, headers={"Retry-After": after} if after else {},
                                      stream=httpx.ByteStream(b"body"), request=request))
        return answers[-1]

    return httpx.MockTransport(handler), answers


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_both_drivers_sleep_discard_and_return_alike(kind: str) -> None:
    inner, answers = scripted([503, CONNECT, (429, "2"), 200])
    sleeps: list[float] = []
    stats = Stats()
    options = {"retries": 3, "backoff_initial": 0.5, "backoff_maximum": 4.0, "stats": stats,
               "random_": lambda: 1.0}
    if kind == "sync":
        response = RetryTransport(inner, sleep=sleeps.append, **options).handle_request(req("GET"))
    else:
        async def nap(seconds: float) -> None:
            sleeps.append(seconds)

        transport = AsyncRetryTransport(inner, sleep=nap, **options)
        response = asyncio.run(transport.handle_async_request(req("GET")))
    assert response is answers[-1] and response.status_code == 200
    assert sleeps == [0.5, 1.0, 2.0]
    # The refused answers were read and closed (their connections reused); the answer was not.
    assert [a.is_closed for a in answers] == [True, True, False]
    assert stats.snapshot()["retry_reasons"] == {"503": 1, "ConnectError": 1, "429": 1}
    assert stats.requests == 4


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_both_drivers_raise_the_final_error_itself(kind: str) -> None:
    inner, _ = scripted([READ])
    with pytest.raises(httpx.ReadError) as caught:
        if kind == "sync":
            RetryTransport(inner, sleep=lambda s: None).handle_request(req("POST"))
        else:
            asyncio.run(AsyncRetryTransport(inner).handle_async_request(req("POST")))
    assert caught.value is READ


# -- bodies read inside the loop, tokens renewed per attempt -----------------------------------


class CutThenWhole(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body whose connection drops after half of it (the first time only)."""

    def __init__(self, body: bytes, cut: bool) -> None:
        self.body, self.cut = body, cut

    def __iter__(self):  # type: ignore[no-untyped-def]
        yield self.body[: len(self.body) // 2] if self.cut else self.body
        if self.cut:
            raise httpx.RemoteProtocolError("peer closed connection")

    async def __aiter__(self):  # type: ignore[no-untyped-def]
        for chunk in self:
            yield chunk


def cut_once(content_type: str) -> tuple[httpx.MockTransport, list[int]]:
    sent: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(1)
        return httpx.Response(200, headers={"Content-Type": content_type},
                              stream=CutThenWhole(b'{"id": "x", "pad": "' + b"y" * 64 + b'"}',
                                                  cut=len(sent) == 1))

    return httpx.MockTransport(handler), sent


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_json_body_cut_short_is_asked_again(kind: str) -> None:
    inner, sent = cut_once("application/json")
    stats = Stats()
    if kind == "sync":
        response = RetryTransport(inner, stats=stats, sleep=lambda s: None).handle_request(
            req("GET"))
    else:
        async def nap(seconds: float) -> None:
            return None

        response = asyncio.run(AsyncRetryTransport(inner, stats=stats, sleep=nap)
                               .handle_async_request(req("GET")))
    assert response.json()["id"] == "x" and len(sent) == 2
    assert stats.retry_reasons == {"RemoteProtocolError": 1}


def test_binary_bodies_and_posts_are_left_to_the_caller() -> None:
    r = rules()
    get, post = req("GET"), req("POST")
    segment = httpx.Response(200, headers={"Content-Type": "application/octet-stream"})
    listing = httpx.Response(200, headers={"Content-Type": "text/plain; charset=utf-8"})
    huge = httpx.Response(200, headers={"Content-Type": "application/json",
                                        "Content-Length": str(2**40)})
    assert not r.preload(get, segment) and r.preload(get, listing)
    assert not r.preload(post, listing) and not r.preload(req("HEAD"), listing)
    assert not r.preload(get, huge)
    assert r.preload(req("GET", **{READ_BODY_EXTENSION: True}), segment)
    assert not r.preload(req("GET", **{READ_BODY_EXTENSION: False}), listing)
    # A segment cut short is raised to the caller, which resumes it with Range.
    inner, sent = cut_once("application/octet-stream")
    response = RetryTransport(inner, sleep=lambda s: None).handle_request(req("GET"))
    with pytest.raises(httpx.RemoteProtocolError):
        response.read()
    assert len(sent) == 1


class Renewer:
    """A ``TokenRenewer`` that hands out token-1, token-2, ... and notes why."""

    def __init__(self) -> None:
        self.calls: list[bool] = []

    def renew(self, request: httpx.Request, *, refused: bool) -> None:
        self.calls.append(refused)
        request.headers["X-Auth-Token"] = f"token-{len(self.calls) + 1}"

    async def arenew(self, request: httpx.Request, *, refused: bool) -> None:
        self.renew(request, refused=refused)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_every_retry_carries_the_current_token_and_a_401_logs_in_again(kind: str) -> None:
    seen: list[str] = []
    script = iter([503, 401, 503, 200])

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["X-Auth-Token"])
        return httpx.Response(next(script))

    renewer = Renewer()
    stats = Stats()
    request = httpx.Request("GET", "http://127.0.0.1/v2/tasks/x",
                            headers={"X-Auth-Token": "token-1"})
    options: dict[str, object] = {"retries": 2, "stats": stats, "renewer": renewer}
    if kind == "sync":
        response = RetryTransport(httpx.MockTransport(handler), sleep=lambda s: None,
                                  **options).handle_request(request)  # type: ignore[arg-type]
    else:
        async def nap(seconds: float) -> None:
            return None

        transport = AsyncRetryTransport(httpx.MockTransport(handler), sleep=nap,
                                        **options)  # type: ignore[arg-type]
        response = asyncio.run(transport.handle_async_request(request))
    assert response.status_code == 200
    assert seen == ["token-1", "token-2", "token-3", "token-4"]
    assert renewer.calls == [False, True, False]  # the 401 said the token was refused
    # The 401 used up no retry: two 503s with retries=2 still ended well.
    assert stats.retry_reasons == {"503": 2, "401": 1}


def test_401s_log_in_again_a_bounded_number_of_times() -> None:
    r = _RetryRules(retries=5, backoff_initial=0.5, backoff_maximum=4.0, retry_after_cap=60.0,
                    stats=Stats(), random_=lambda: 1.0, renews=True)
    request = httpx.Request("GET", "http://127.0.0.1/v2/tasks/x", headers={"X-Auth-Token": "t"})
    trace, ending = drive_by_hand(r, request, [401] * (REAUTH_RETRIES + 1))
    assert ending == 401
    assert trace == ["send", (0.0, 401), "send", (0.5, 401), "send", (1.0, 401), "send"]
    # Without a token on the request (a login) or without a renewer, a 401 is the answer.
    bare = httpx.Request("GET", "http://127.0.0.1/v2/tasks/x")
    assert drive_by_hand(r, bare, [401]) == (["send"], 401)
    assert drive_by_hand(rules(), request, [401]) == (["send"], 401)

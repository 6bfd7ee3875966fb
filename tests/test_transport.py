"""RetryTransport: what is retried and after how long.

The decisions are checked directly on real ``httpx.Request``/``Response`` objects; the end-to-end
behaviour (503 bursts, 413 + Retry-After, dropped connections) runs against the emulator's fault
flags in test_client.py.
"""

from __future__ import annotations

import httpx
import pytest

from imgtools._transport import RETRY_EXTENSION, Stats, _RetryRules


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

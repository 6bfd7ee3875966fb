"""The step drivers of ``imgtools._ops``: ``Call`` steps and ``via`` addressing, each checked with
both drivers on canned answers (no sockets)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx
import pytest

from imgtools._exceptions import ImgToolsError, NotFound
from imgtools._ops import Call, Gather, Op, Send, Sleep, arun, run, via

URL = "http://127.0.0.1/v2/tasks"


class Stop(BaseException):
    """Stands for Ctrl-C (not an ``Exception``)."""


class Ends:
    """A ``Sender`` for several clients: answers each request with the name of the end it
    was addressed to, and keeps what it sent."""

    def __init__(self, fail: object = None) -> None:
        self.sent: list[tuple[object, str]] = []
        self.fail = fail

    def answer(self, step: Send) -> httpx.Response:
        self.sent.append((step.via, step.request.url.path))
        if step.via is self.fail:
            raise NotFound(f"{step.request.url.path} is gone", status_code=404)
        return httpx.Response(200, text=str(step.via), request=step.request)

    def send(self, step: Send) -> httpx.Response:
        return self.answer(step)

    async def asend(self, step: Send) -> httpx.Response:
        return self.answer(step)


def drive(kind: str, op: Op[Any], ends: Ends, **options: Any) -> Any:
    if kind == "sync":
        return run(op, ends.send, sleep=lambda s: None, **options)

    async def nap(seconds: float) -> None:
        return None

    return asyncio.run(arun(op, ends.asend, sleep=nap, **options))


def get(path: str) -> Op[str]:
    response = yield Send(httpx.Request("GET", URL + path))
    assert isinstance(response, httpx.Response)
    return response.text


KINDS = pytest.mark.parametrize("kind", ["sync", "async"])


@KINDS
def test_a_call_step_answers_with_the_callables_result(kind: str) -> None:
    threads: list[threading.Thread] = []

    def blocking() -> int:
        threads.append(threading.current_thread())
        return 42

    def op() -> Op[int]:
        result = yield Call(blocking)
        return int(result) + 1

    assert drive(kind, op(), Ends()) == 43
    # The async driver keeps the event loop free: the call ran on a worker thread.
    assert (threads[0] is threading.main_thread()) == (kind == "sync")


@KINDS
def test_a_call_steps_error_is_thrown_into_the_operation(kind: str) -> None:
    def failing() -> None:
        raise NotFound("no such object", status_code=404)

    def op() -> Op[str]:
        try:
            yield Call(failing)
        except NotFound as exc:
            return f"handled: {exc}"
        return "not raised"

    assert drive(kind, op(), Ends()) == "handled: 404: no such object"


@KINDS
def test_errors_outside_the_drivers_set_pass_through(kind: str) -> None:
    def stopping() -> None:
        raise Stop

    seen: list[str] = []

    def op() -> Op[None]:
        try:
            yield Call(stopping)
        except Stop:
            seen.append("inside")
            raise

    with pytest.raises(Stop):
        drive(kind, op(), Ends())
    assert seen == []  # only ImgToolsError is thrown in by default
    with pytest.raises(Stop):
        drive(kind, op(), Ends(), errors=(BaseException,))
    assert seen == ["inside"]  # the op saw it, could record it, and re-raised


def test_a_cancelled_call_with_a_stop_event_ends_its_thread_before_the_task_does() -> None:
    """Cancelling ``arun``'s task sets the call's ``stop`` and waits for the thread; the
    operation sees the ``CancelledError`` only once the call has returned, so nothing of the
    call outlives the task."""
    stop = threading.Event()
    started, events = threading.Event(), []

    def blocking() -> str:
        started.set()
        assert stop.wait(60), "never stopped"
        events.append("call ended")
        return "stopped early"

    def op() -> Op[None]:
        try:
            yield Call(blocking, stop=stop)
        except asyncio.CancelledError:
            events.append("op saw the cancellation")
            raise

    async def scenario() -> None:
        task = asyncio.create_task(arun(op(), Ends().asend, errors=(BaseException,)))
        await asyncio.to_thread(started.wait, 60)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert stop.is_set()
    assert events == ["call ended", "op saw the cancellation"]


def test_a_cancelled_call_without_a_stop_event_is_left_to_finish() -> None:
    release, ended = threading.Event(), threading.Event()

    def blocking() -> None:
        release.wait(60)
        ended.set()

    def op() -> Op[None]:
        yield Call(blocking)

    async def scenario() -> None:
        task = asyncio.create_task(arun(op(), Ends().asend))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not ended.is_set()  # the task ended first: nothing could stop the call
        release.set()

    asyncio.run(scenario())
    assert ended.wait(60)


@KINDS
def test_a_sleep_interrupted_is_thrown_into_the_operation_when_asked(kind: str) -> None:
    def op() -> Op[str]:
        try:
            yield Sleep(5.0)
        except Stop:
            return "recorded"
        return "slept"

    def stop(seconds: float) -> None:
        raise Stop

    async def astop(seconds: float) -> None:
        raise Stop

    if kind == "sync":
        assert run(op(), Ends().send, sleep=stop, errors=(BaseException,)) == "recorded"
    else:
        assert asyncio.run(arun(op(), Ends().asend, sleep=astop,
                                errors=(BaseException,))) == "recorded"


@KINDS
def test_via_addresses_each_request_to_its_end(kind: str) -> None:
    source, target = object(), object()

    def both() -> Op[list[str]]:
        a = yield from via(source, get("/a"))
        b = yield from via(target, get("/b"))
        return [a, b]

    ends = Ends()
    assert drive(kind, both(), ends) == [str(source), str(target)]
    assert ends.sent == [(source, "/v2/tasks/a"), (target, "/v2/tasks/b")]


@KINDS
def test_via_reaches_into_gathers_and_keeps_inner_addresses(kind: str) -> None:
    outer, inner = object(), object()

    def fan() -> Op[list[Any]]:
        results: list[Any] = yield Gather((get("/1"), via(inner, get("/2"))))
        return results

    ends = Ends()
    assert drive(kind, via(outer, fan()), ends) == [str(outer), str(inner)]
    assert sorted(ends.sent, key=lambda s: s[1]) == [(outer, "/v2/tasks/1"),
                                                     (inner, "/v2/tasks/2")]


@KINDS
def test_via_passes_errors_into_the_inner_operation(kind: str) -> None:
    gone = object()

    def tolerant() -> Op[str]:
        try:
            return (yield from get("/x"))
        except NotFound:
            return "not found, handled inside"

    def outer() -> Op[str]:
        return (yield from via(gone, tolerant()))

    assert drive(kind, outer(), Ends(fail=gone)) == "not found, handled inside"

    def careless() -> Op[str]:
        return (yield from via(gone, get("/x")))

    with pytest.raises(ImgToolsError, match="is gone"):
        drive(kind, careless(), Ends(fail=gone))

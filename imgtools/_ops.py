"""The one step vocabulary of imgtools' operations, and its one sync and one async driver.

An operation is a generator that yields steps and gets their answers back:

- ``Send(request, storage=False, via=None)``: send this HTTP request (through the client's API
  or Cloud Files connection; ``via``: which client's, for a ``Sender`` that serves several); the
  answer is the ``httpx.Response``, or the ``ImgToolsError`` it became is thrown into the
  operation;
- ``Sleep(seconds)``: pause; the answer is ``None``;
- ``Gather(ops)``: run these operations side by side; the answer is a list, in order, of each
  one's result or the ``ImgToolsError`` it raised (returned, not thrown: the others still
  count);
- ``Call(fn, stop=None)``: a blocking call for bulk I/O that has its own threads (a streaming
  copy); ``run`` calls it, ``arun`` runs it on a worker thread (``acall``); the answer is its
  result. ``stop``: an event ``fn`` watches; when ``arun``'s task is cancelled it is set and
  the thread waited for, so no call outlives its cancelled operation (``run`` needs none:
  Ctrl-C reaches ``fn`` on the caller's own thread).

``run`` drives an operation with blocking I/O (``Gather`` on worker threads), ``arun`` with
awaits (``Gather`` as tasks). Both get the I/O from a ``Sender`` and the time from the clock of
``imgtools.testing``, so the logic of every operation (requests, polling, reconciliation) is
written once and tested without sockets. What a step raises of the driver's ``errors`` is
thrown into the operation at that step.

``via(end, op)`` is ``op`` with its requests (its ``Gather``'s too) addressed to ``end``: an
operation that works on two clients (a transfer: a source and a target) yields from
``via(source, ...)`` and ``via(target, ...)`` of the clients' own operations, and its driver's
``Sender`` sends each request through ``step.via``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import httpx

from imgtools import testing
from imgtools._exceptions import ImgToolsError

__all__ = ["GATHER_WORKERS", "Call", "Gather", "Op", "Send", "Sleep", "Step", "acall", "arun",
           "run", "via"]

#: Operations a ``Gather`` runs at once.
GATHER_WORKERS = 16


@dataclass(frozen=True, slots=True)
class Send:
    request: httpx.Request
    storage: bool = False
    via: object = None  # the client whose connections send it (``None``: the driver's)


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


@dataclass(frozen=True, slots=True)
class Gather:
    ops: tuple[Generator[Any, Any, Any], ...]


@dataclass(frozen=True, slots=True)
class Call:
    fn: Callable[[], Any]
    stop: threading.Event | None = None  # set to end ``fn`` early (its task was cancelled)


Step = Send | Sleep | Gather | Call
T = TypeVar("T")
Op = Generator[Step, Any, T]
#: Sends one request for ``run``: the response, or raises an ``ImgToolsError``.
Sender = Callable[[Send], httpx.Response]
#: The same for ``arun``.
AsyncSender = Callable[[Send], Awaitable[httpx.Response]]


def _step(op: Op[Any], value: Any, error: BaseException | None) -> tuple[bool, Any]:
    """Advance ``op`` once: ``(True, result)`` when it finished, else ``(False, step)``."""
    try:
        step = op.throw(error) if error is not None else op.send(value)
    except StopIteration as stop:
        return True, stop.value
    return False, step


def run(op: Op[T], send: Sender, *, sleep: Callable[[float], None] | None = None,
        errors: tuple[type[BaseException], ...] = (ImgToolsError,)) -> T:
    """Drive ``op`` with blocking I/O: ``send`` does its requests, ``sleep`` its pauses
    (default: the clock of ``imgtools.testing``); what a step raises of ``errors`` is thrown
    into ``op`` (a caller that records every end, even Ctrl-C, passes ``(BaseException,)``)."""
    value: Any = None
    error: BaseException | None = None
    while True:
        done, step = _step(op, value, error)
        if done:
            return step  # type: ignore[no-any-return]
        value, error = None, None
        try:
            if isinstance(step, Sleep):
                (sleep or testing.clock().sleep)(step.seconds)
            elif isinstance(step, Gather):
                value = _gather(step.ops, send)
            elif isinstance(step, Call):
                value = step.fn()
            else:
                value = send(step)
        except errors as exc:
            error = exc


def _outcome(op: Op[Any], send: Sender) -> Any:
    try:
        return run(op, send)
    except ImgToolsError as exc:
        return exc


def _gather(ops: Sequence[Op[Any]], send: Sender) -> list[Any]:
    if len(ops) <= 1:
        return [_outcome(op, send) for op in ops]
    with ThreadPoolExecutor(min(GATHER_WORKERS, len(ops))) as pool:
        return list(pool.map(lambda op: _outcome(op, send), ops))


async def arun(op: Op[T], send: AsyncSender, *,
               sleep: Callable[[float], Awaitable[None]] | None = None,
               errors: tuple[type[BaseException], ...] = (ImgToolsError,)) -> T:
    """Drive ``op`` with awaits (as ``run``); it never blocks the event loop."""
    value: Any = None
    error: BaseException | None = None
    while True:
        done, step = _step(op, value, error)
        if done:
            return step  # type: ignore[no-any-return]
        value, error = None, None
        try:
            if isinstance(step, Sleep):
                await _asleep(step.seconds, sleep)
            elif isinstance(step, Gather):
                value = await _agather(step.ops, send)
            elif isinstance(step, Call):
                value = await acall(step)
            else:
                value = await send(step)
        except errors as exc:
            error = exc


async def acall(step: Call) -> Any:
    """``step.fn()`` on a worker thread, awaited. Cancelled, a call with a ``stop`` event
    sets it and waits (the loop free) for the thread to end before the ``CancelledError``
    goes on: what it was doing is over when the cancelled task is. A call without one is
    left to finish on its own."""
    if step.stop is None:
        return await asyncio.to_thread(step.fn)
    work = asyncio.ensure_future(asyncio.to_thread(step.fn))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        step.stop.set()
        while not work.done():
            try:
                await asyncio.wait([work])
            except asyncio.CancelledError:
                continue  # cancelled again: the thread still has to end first
        if not work.cancelled():
            work.exception()  # its own end (the stop's error) is the cancellation's: retrieved
        raise


async def _asleep(seconds: float, sleep: Callable[[float], Awaitable[None]] | None) -> None:
    clock = testing.clock()
    if sleep is not None:
        await sleep(seconds)
    elif clock is testing.REAL_CLOCK:
        await asyncio.sleep(seconds)
    else:  # virtual time: let the loop run, then move the clock on
        clock.sleep(seconds)
        await asyncio.sleep(0)


async def _agather(ops: Sequence[Op[Any]], send: AsyncSender) -> list[Any]:
    gate = asyncio.Semaphore(GATHER_WORKERS)

    async def one(op: Op[Any]) -> Any:
        async with gate:
            try:
                return await arun(op, send)
            except ImgToolsError as exc:
                return exc

    return list(await asyncio.gather(*(one(op) for op in ops)))


def via(end: object, op: Op[T]) -> Op[T]:
    """``op`` with every ``Send`` it yields (or its ``Gather``'s operations yield) addressed to
    ``end``, unless already addressed; answers and thrown errors pass through unchanged."""
    value: Any = None
    error: BaseException | None = None
    while True:
        done, step = _step(op, value, error)
        if done:
            return step  # type: ignore[no-any-return]
        if isinstance(step, Send) and step.via is None:
            step = replace(step, via=end)
        elif isinstance(step, Gather):
            step = Gather(tuple(via(end, inner) for inner in step.ops))
        try:
            value, error = (yield step), None
        except GeneratorExit:
            op.close()
            raise
        except BaseException as exc:  # the driver's answer was an error: the op's to handle
            value, error = None, exc

"""Switches for testing code that uses imgtools, in the manner of ``stamina.set_testing``.

They change process-wide behaviour, so tests need not poke private attributes:

``set_testing(True)`` (also a context manager) drops the pauses a client takes for the
service's sake, not for correctness: the settle before it looks for the task of a lost
``POST /v2/tasks``, and the backoff between its looks and between resent POSTs. Retries of one
HTTP request keep their backoff (a token may be meant to expire meanwhile).

``use_clock(clock)`` makes the waiting loops (``wait``, ``wait_all``) read and sleep on
``clock``; with a ``FakeClock`` a wait runs in virtual time: it never sleeps, and a test moves
the time on by hand (``clock.now += 5``) or lets the loops' sleeps move it::

    with imgtools.testing.use_clock(imgtools.testing.FakeClock()) as clock:
        ...

Nothing here is meant for production code.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol, TypeVar

__all__ = ["Clock", "FakeClock", "is_testing", "set_testing", "use_clock"]


class Clock(Protocol):
    """What the waiting loops need of a clock: seconds that only go forward, and a sleep."""

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class _RealClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


REAL_CLOCK: Clock = _RealClock()


class FakeClock:
    """A clock that moves only when told: ``now += seconds``, ``advance(seconds)``, or a
    loop's ``sleep`` (which returns at once)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.slept: list[float] = []
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.slept.append(seconds)
            self.now += max(0.0, seconds)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


class _State:
    testing = False
    clock: Clock = REAL_CLOCK


_state = _State()


class _Setting:
    """What ``set_testing`` returns: nothing to do, or a context manager that puts the previous
    setting back on exit."""

    def __init__(self, previous: bool) -> None:
        self._previous = previous

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        _state.testing = self._previous


def set_testing(testing: bool) -> _Setting:
    """Turn testing mode on or off for the whole process (see the module doc); usable as
    ``with set_testing(True): ...``, which restores the previous mode on exit."""
    previous = _state.testing
    _state.testing = bool(testing)
    return _Setting(previous)


def is_testing() -> bool:
    """Whether testing mode is on."""
    return _state.testing


_C = TypeVar("_C", bound=Clock)


@contextmanager
def use_clock(clock: _C) -> Iterator[_C]:
    """The waiting loops read and sleep on ``clock`` inside the block; the real clock again
    after it."""
    previous = _state.clock
    _state.clock = clock
    try:
        yield clock
    finally:
        _state.clock = previous


def clock() -> Clock:
    """The clock the waiting loops use now (the real one unless ``use_clock`` says otherwise)."""
    return _state.clock

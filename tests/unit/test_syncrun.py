"""Running a coroutine to its end from sync code, inside a running loop too (``_syncrun``)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from imgtools._syncrun import loop_running, run_to_end


async def _where() -> str:
    await asyncio.sleep(0)
    return threading.current_thread().name


async def _fail() -> None:
    await asyncio.sleep(0)
    raise LookupError("from the coroutine")


def test_without_a_loop_it_runs_here() -> None:
    assert not loop_running()
    assert run_to_end(_where(), thread_name="worker") == threading.current_thread().name
    with pytest.raises(LookupError, match="from the coroutine"):
        run_to_end(_fail(), thread_name="worker")


def test_inside_a_loop_it_runs_on_a_named_worker_thread_and_raises_here() -> None:
    async def inside() -> tuple[bool, str]:
        ran_on = run_to_end(_where(), thread_name="imgtools-test-worker")
        with pytest.raises(LookupError, match="from the coroutine"):
            run_to_end(_fail(), thread_name="imgtools-test-worker")
        return loop_running(), ran_on

    assert asyncio.run(inside()) == (True, "imgtools-test-worker")

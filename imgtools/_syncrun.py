"""Running a coroutine to its end from sync code, also where an event loop already runs
(a notebook cell): the sync faces of the pandas side (``history``, ``details``) use it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["loop_running", "run_to_end"]

_T = TypeVar("_T")


def loop_running() -> bool:
    """Whether this thread runs an event loop (``asyncio.run`` would refuse)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def run_to_end(coroutine: Coroutine[Any, Any, _T], *, thread_name: str) -> _T:
    """``asyncio.run(coroutine)``; inside a running loop (Jupyter), on a private loop in a
    worker thread named ``thread_name``, this thread waiting for it. Its exception is
    raised here."""
    if not loop_running():
        return asyncio.run(coroutine)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coroutine)
        except BaseException as error:  # re-raised in the caller's thread
            box["error"] = error

    worker = threading.Thread(target=target, name=thread_name)
    worker.start()
    worker.join()
    if "error" in box:
        raise box["error"]
    value: _T = box["value"]
    return value

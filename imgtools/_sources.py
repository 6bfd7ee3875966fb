"""What the history functions read tasks from, as protocols: a ``Client`` or an
``AsyncClient`` is one, and so is any object with the same two methods (a test double, a
wrapper). Kept apart from the client so that history depends on the shape, not the class."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Protocol

from imgtools._models import Task

__all__ = ["AsyncTaskSource", "TaskSource"]


class TaskSource(Protocol):
    """Lists tasks and fetches one: a ``Client``. A ``log`` attribute holding a ``TaskLog``,
    if it has one, is where history records what it lists and finds full tasks."""

    def tasks(self) -> Iterator[Task]: ...

    def get_task(self, task_id: str) -> Task: ...


class AsyncTaskSource(Protocol):
    """As ``TaskSource``, awaited: an ``AsyncClient``."""

    def tasks(self) -> AsyncIterator[Task]: ...

    async def get_task(self, task_id: str) -> Task: ...

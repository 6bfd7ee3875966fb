"""The ``import`` task type: a VHD object in the tenant's Cloud Files becomes a new image.

Input as Rackspace documents it: ``import_from: "<container>/<object>"`` and
``image_properties: {"name": ...}`` (name is the only property allowed); the result is
``{"image_id": "<uuid>"}``. The object may be a DLO manifest.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any, BinaryIO

from imgtools.emulator.engine import TaskFailure
from imgtools.emulator.objects import resolve_dlo
from imgtools.emulator.state import EmulatorState
from imgtools.emulator.store import ImageRow, Store, TaskRow
from imgtools.emulator.vhd import FOOTER_SIZE, VhdProblem, check_footer

__all__ = ["ImportHandler"]

NOT_FOUND = "Image not found for import. Possible invalid location"
NO_PROPERTIES = "Input does not contain 'image_properties' field"
BAD_PROPERTIES = "Unsupported element in image_properties, please consult the documentation."
UNKNOWN = "Unknown error occurred during image import"


class ImportJob:
    """Concatenates the source segments into a new image file."""

    def __init__(self, handler: ImportHandler, task: TaskRow, name: str,
                 sources: list[tuple[Path, int]]) -> None:
        self.state = handler.state
        self.store = handler.store
        self.task = task
        self.name = name
        self.sources = sources
        self.total = sum(size for _, size in sources)
        self.done = 0
        self.image_id = str(uuid.uuid4())
        self.path = self.store.image_path(self.image_id)
        self._out: BinaryIO | None = None
        self._index = 0
        self._offset = 0
        self._md5 = hashlib.md5()

    def step(self, budget: int) -> None:
        if self._out is None:
            self._out = open(self.path, "wb")  # noqa: SIM115 - closed in finish/abort
        while budget > 0 and self._index < len(self.sources):
            path, size = self.sources[self._index]
            try:
                with open(path, "rb") as handle:
                    handle.seek(self._offset)
                    data = handle.read(min(budget, size - self._offset))
            except FileNotFoundError:
                raise TaskFailure(NOT_FOUND) from None
            self._out.write(data)
            self._md5.update(data)
            budget -= len(data)
            self.done += len(data)
            self._offset += len(data)
            if self._offset >= size or not data:
                if self._offset < size:  # segment shorter than listed: count it as copied
                    self.done += size - self._offset
                self._index += 1
                self._offset = 0

    def finish(self) -> dict[str, Any]:
        if self._out is None:
            self._out = open(self.path, "wb")  # noqa: SIM115
        self._out.close()
        size = self.path.stat().st_size
        with open(self.path, "rb") as handle:
            handle.seek(max(0, size - FOOTER_SIZE))
            footer = handle.read(FOOTER_SIZE)
        try:
            check_footer(footer, size)
        except VhdProblem as exc:
            self.path.unlink(missing_ok=True)
            raise TaskFailure(str(exc)) from None
        now = self.state.clock.now()
        props = {"disk_format": "vhd", "container_format": "bare", "image_type": "import",
                 "com.rackspace__1__options": "0", "os_type": "linux"}
        self.store.put_image(ImageRow(
            self.image_id, self.task.owner, self.name, "active", "private", size,
            self._md5.hexdigest(), now, now, props, [], self.image_id))
        return {"image_id": self.image_id}

    def abort(self) -> None:
        if self._out is not None:
            self._out.close()
        self.path.unlink(missing_ok=True)


class ImportHandler:
    """Checks and starts import tasks."""

    type = "import"
    unknown_error = UNKNOWN

    def __init__(self, state: EmulatorState, store: Store | None = None) -> None:
        self.state = state
        self.store = store if store is not None else state.store

    def check_input(self, task_input: Any) -> str | None:
        source = task_input.get("import_from") if isinstance(task_input, dict) else None
        if isinstance(source, str) and source.startswith("file:"):
            return ("File based imports are not allowed. Please use a non-local source of "
                    "image data.")
        if not isinstance(source, str) or "://" in source:
            return f"Invalid location: {source}"
        container, _, name = source.partition("/")
        if not container or not name:
            return f"Invalid location: {source}"
        return None

    def start(self, task: TaskRow, resume: bool) -> ImportJob:
        props = task.input.get("image_properties")
        if props is None:
            raise TaskFailure(NO_PROPERTIES)
        if (not isinstance(props, dict) or set(props) != {"name"}
                or not isinstance(props["name"], str)):
            raise TaskFailure(BAD_PROPERTIES)
        store, now = self.store, self.state.clock.now()
        account = self.state.account_for(task.owner)
        container, _, name = task.input["import_from"].partition("/")
        obj = store.get_object(account, container, name, now)
        if obj is None:
            raise TaskFailure(NOT_FOUND)
        if obj.manifest is not None:
            sources = resolve_dlo(store, account, obj.manifest, now).paths(store)
        else:
            sources = [(store.object_path(obj), obj.size)]
        return ImportJob(self, task, props["name"], sources)

"""The ``export`` task type: copy an image into the tenant's container as a DLO.

Layout as Rackspace's export code writes it: segments ``<uuid>.vhd-00001``, ``-00002``, ...
in the receiving container, then the zero-byte manifest ``<uuid>.vhd`` with
``X-Object-Manifest: <container>/<uuid>.vhd-``.
"""

from __future__ import annotations

from typing import Any, BinaryIO

from imgtools.emulator.engine import TaskFailure
from imgtools.emulator.images import visible
from imgtools.emulator.objects import ObjectWriter
from imgtools.emulator.state import EmulatorState
from imgtools.emulator.store import Store, TaskRow

__all__ = ["ExportHandler", "ExportJob"]

INPUT_FIELDS = ("image_uuid", "receiving_swift_container")
# The messages Rackspace's export has been seen to use (cloudcafe 2015 generation).
NOT_FOUND = "Requested image for export was not found: {image}"
NOT_OWNER = "An image may only be exported by the image owner."
DEACTIVATED = "Image {image} is deactivated and cannot be exported"
NOT_ACTIVE = "Image {image} is not active and cannot be exported (status: {status})"
LICENSING = ("Image cannot be exported due to licensing or billing restrictions "
             "(com.rackspace__1__options: '{value}')")
BAD_CONTAINER = "Invalid container name: {container}. The name must not contain '/', '?' or '.'"
NO_CONTAINER = "Container not found. Container: {container}"
EXISTS = "Object already exists in user's container. Container/Object: {container}/{name}"
UNKNOWN = "Unknown error occurred during image export"


class ExportJob:
    """Copies the image file into segment objects, ``segment_size`` bytes each."""

    def __init__(self, handler: ExportHandler, task: TaskRow, account: str, container: str,
                 name: str, source: Any, total: int) -> None:
        self.handler = handler
        self.state = handler.state
        self.store = handler.store
        self.task = task
        self.account, self.container, self.name = account, container, name
        self.source_path = source
        self.total = total
        self.done = 0
        self._source: BinaryIO | None = None
        self._writer: ObjectWriter | None = None
        self._segment = 0

    def step(self, budget: int) -> None:
        if self._source is None:
            self._source = open(self.source_path, "rb")  # noqa: SIM115 - closed in finish/abort
        segment_size = self.state.config.segment_size
        while budget > 0 and self.done < self.total:
            if self._writer is None:
                self._writer = ObjectWriter(self.store)
                self._segment += 1
            room = segment_size - self._writer.size
            data = self._source.read(min(budget, room, self.total - self.done))
            if not data:
                raise TaskFailure(UNKNOWN)  # the image file is shorter than its size
            self._writer.write(data)
            budget -= len(data)
            self.done += len(data)
            if self._writer.size >= segment_size or self.done >= self.total:
                self._commit_segment()

    def _commit_segment(self) -> None:
        assert self._writer is not None
        store, now = self.store, self.state.clock.now()
        if store.get_container(self.account, self.container) is None:
            raise TaskFailure(NO_CONTAINER.format(container=self.container))
        writer, self._writer = self._writer, None
        row = writer.commit(self.account, self.container, f"{self.name}-{self._segment:05d}", now)
        if self._segment == 1 and self.state.faults.corrupt_segment:
            # The listing keeps the true MD5, so a verifying download can catch this.
            path = store.object_path(row)
            with open(path, "r+b") as handle:
                first = handle.read(1)
                handle.seek(0)
                handle.write(bytes([(first[0] if first else 0) ^ 0xFF]))
            self.state.stats.fault("corrupt_segment")

    def finish(self) -> dict[str, Any]:
        self._close()
        store, now = self.store, self.state.clock.now()
        if store.get_container(self.account, self.container) is None:
            raise TaskFailure(NO_CONTAINER.format(container=self.container))
        manifest = ObjectWriter(store)
        manifest.commit(self.account, self.container, self.name, now,
                        manifest=f"{self.container}/{self.name}-")
        if self.state.faults.missing_segment:
            victim = 2 if self._segment >= 2 else 1
            store.delete_object(self.account, self.container, f"{self.name}-{victim:05d}")
            self.state.stats.fault("missing_segment")
        self.handler.release(self)
        return {"export_location": f"{self.container}/{self.name}"}

    def abort(self) -> None:
        self._close()
        if self._writer is not None:
            self._writer.abort()
            self._writer = None
        self.handler.release(self)

    def _close(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None


class ExportHandler:
    """Checks and starts export tasks."""

    type = "export"
    unknown_error = UNKNOWN

    def __init__(self, state: EmulatorState, store: Store | None = None) -> None:
        self.state = state
        self.store = store if store is not None else state.store
        # Locations being written, so a duplicate export fails as Rackspace's does.
        self._inflight: set[tuple[str, str, str]] = set()

    def check_input(self, task_input: Any) -> str | None:
        if not isinstance(task_input, dict):
            return ("Input for an export task must be an object with 'image_uuid' and "
                    "'receiving_swift_container'")
        for name in INPUT_FIELDS:
            if name not in task_input:
                return f"Input does not contain '{name}' field"
            if not isinstance(task_input[name], str) or not task_input[name]:
                return f"Input field '{name}' must be a non-empty string"
        extra = sorted(set(task_input) - set(INPUT_FIELDS))
        if extra:
            return f"Unsupported element in input: {', '.join(repr(e) for e in extra)}"
        return None

    def start(self, task: TaskRow, resume: bool) -> ExportJob:
        state, store = self.state, self.store
        image_id = task.input["image_uuid"]
        container = task.input["receiving_swift_container"]
        account = state.account_for(task.owner)
        image = store.get_image(image_id)
        if image is None or not visible(image, task.owner):
            raise TaskFailure(NOT_FOUND.format(image=image_id))
        if image.owner != task.owner:
            raise TaskFailure(NOT_OWNER)
        if image.status == "deactivated":
            raise TaskFailure(DEACTIVATED.format(image=image_id))
        if image.status != "active":
            raise TaskFailure(NOT_ACTIVE.format(image=image_id, status=image.status))
        options = image.props.get("com.rackspace__1__options")
        if options != "0":
            raise TaskFailure(LICENSING.format(value=options))
        if any(ch in container for ch in "/?."):
            raise TaskFailure(BAD_CONTAINER.format(container=container))
        if store.get_container(account, container) is None:
            raise TaskFailure(NO_CONTAINER.format(container=container))
        name = f"{image_id}.vhd"
        location = (account, container, name)
        if resume:
            # Whatever is there was written by this very task before the crash.
            store.delete_object(account, container, name)
        elif location in self._inflight or store.get_object(account, container, name,
                                                            state.clock.now()):
            raise TaskFailure(EXISTS.format(container=container, name=name))
        path = store.image_path(image_id)
        if not path.exists():
            raise TaskFailure(UNKNOWN)
        self._inflight.add(location)
        return ExportJob(self, task, account, container, name, path, path.stat().st_size)

    def release(self, job: ExportJob) -> None:
        self._inflight.discard((job.account, job.container, job.name))

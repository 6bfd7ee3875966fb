"""Helpers for the emulator tests (tests/emulator/): their emulator settings and ``Api``, an
httpx client for one user. The fixtures built on them are in tests/emulator/conftest.py.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx

from imgtools.emulator import DEFAULT_USERS, EmulatorConfig, EmulatorHandle, User

KiB = 1024
VIEWER = User("viewer", "viewer-key", "100003", roles=("observer",))

#: Small images and a fast worker: an export takes well under a second.
FAST = EmulatorConfig(
    users=(*DEFAULT_USERS, VIEWER),
    image_size=256 * KiB,
    segment_size=64 * KiB,
    export_speed=8 * 1024 * KiB,
    pending_delay=0.1,
    tick=0.02,
)


def fast(**changes: Any) -> EmulatorConfig:
    return FAST.replace(**changes)


class Api:
    """A token-carrying httpx client for one user, plus task helpers."""

    def __init__(self, emu: EmulatorHandle, username: str = "demo") -> None:
        self.emu = emu
        self.username = username
        self.tenant = emu.tenant_of(username)
        self.token = emu.token(username)
        self.http = httpx.Client(base_url=emu.url, headers={"X-Auth-Token": self.token},
                                 timeout=30.0)
        self.account = f"/v1/MossoCloudFS_{self.tenant}"

    def close(self) -> None:
        self.http.close()

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.get(path, **kw)

    def post_task(self, task_type: str = "export", **task_input: Any) -> httpx.Response:
        return self.http.post("/v2/tasks", json={"type": task_type, "input": task_input})

    def export(self, image_id: str, container: str) -> dict[str, Any]:
        response = self.post_task(image_uuid=image_id, receiving_swift_container=container)
        assert response.status_code == 201, response.text
        task: dict[str, Any] = response.json()
        return task

    def wait(self, task_id: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            task: dict[str, Any] = self.get(f"/v2/tasks/{task_id}").json()
            if task["status"] in ("success", "failure"):
                return task
            if time.monotonic() > deadline:
                raise AssertionError(f"task {task_id} still {task['status']} after {timeout} s")
            time.sleep(0.05)

    def container(self, name: str | None = None) -> str:
        name = name or f"c-{uuid.uuid4().hex[:12]}"
        response = self.http.put(f"{self.account}/{name}")
        assert response.status_code in (201, 202), response.text
        return name

    def image_bytes(self, image_id: str) -> bytes:
        response = self.get(f"/v2/images/{image_id}/file")
        assert response.status_code == 200, response.text
        return response.content

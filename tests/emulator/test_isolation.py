"""Tenant isolation, as a matrix: tenant A's token against every operation of the emulator's
OpenAPI document, aimed at each of tenant B's resources (task, private image, account,
container, plain object, export manifest and segment). Each answer is 401 or 404 (405 where the
method is never allowed), never B's data; A's own listings never show B's things; A's writes
never reach B. The same requests with B's token succeed, so the matrix can fail.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from imgtools import TaskStatus
from imgtools.emulator import EmulatorHandle, image_id_for, start_emulator
from imgtools.emulator.seed import IMAGE_SPECS
from tests.client_support import DEMO, OTHER, make_client
from tests.emulator.helpers import FAST, Api

SECRET = b"B-SECRET-DATA-7c1d9e"
B_CONTAINER = "b-private-4f2a"


@dataclass(frozen=True)
class World:
    emu: EmulatorHandle
    a: Api
    b: Api
    b_task: str
    b_images: tuple[str, ...]
    b_segment: str
    b_manifest: str

    @property
    def markers(self) -> list[str]:
        """Strings that only B's data contains: none may reach A."""
        return [SECRET.decode(), self.b_task, B_CONTAINER, *self.b_images, f"_{OTHER}"]


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with start_emulator(config=FAST) as emu:
        a, b = Api(emu, "demo"), Api(emu, "other")
        b.container(B_CONTAINER)
        put = b.http.put(f"{b.account}/{B_CONTAINER}/secret.txt", content=SECRET)
        assert put.status_code == 201, put.text
        image = image_id_for(OTHER, "web")
        task = b.wait(b.export(image, B_CONTAINER)["id"])
        assert task["status"] == "success", task
        a.container("a-own")
        yield World(emu, a, b, task["id"],
                    tuple(image_id_for(OTHER, s.slug) for s in IMAGE_SPECS),
                    f"{image}.vhd-00001", f"{image}.vhd")
        a.close()
        b.close()


def _operations(emu: EmulatorHandle) -> list[tuple[str, str, dict[str, Any]]]:
    status, _, body = emu.request("GET", "/_emulator/openapi.json")
    assert status == 200
    doc = json.loads(body)
    out = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in ("get", "head", "put", "post", "delete", "patch"):
                out.append((path, method.upper(), op))
    return out


def _b_targets(world: World, path: str) -> list[dict[str, str]]:
    """Every way of filling ``path``'s parameters with B's resources."""
    names = set(re.findall(r"{(\w+)}", path))
    choices: dict[str, list[str]] = {
        "account": [f"MossoCloudFS_{OTHER}"],
        "container": [B_CONTAINER],
        "object": ["secret.txt", world.b_manifest, world.b_segment],
        "image_id": list(world.b_images),
        "task_id": [world.b_task],
        "name": ["task"],
        "tag": ["web"],
    }
    keys = sorted(names)
    return [dict(zip(keys, combo, strict=True))
            for combo in itertools.product(*(choices[k] for k in keys))]


def _leaks(world: World, url: str, text: str) -> list[str]:
    """B's markers in an answer, not counting the ids A itself put in the URL (Glance's
    "No image found with ID <id>" echoes them, as it does for ids that never existed)."""
    for part in url.split("?")[0].split("/"):
        if part:
            text = text.replace(part, "")
    return [m for m in world.markers if m in text]


def _stranger(params: dict[str, str]) -> dict[str, str]:
    """The same parameters naming things that exist nowhere."""
    fake = {"account": "MossoCloudFS_999999", "container": "no-such-container",
            "object": "no-such-object", "image_id": "00000000-0000-4000-8000-00000000000a",
            "tag": "no-such-tag",
            "task_id": "00000000-0000-4000-8000-00000000000b"}
    return {k: fake.get(k, v) for k, v in params.items()}


def _tenant_scoped(path: str) -> bool:
    return any(p in path for p in ("{account}", "{image_id}", "{task_id}"))


# What A sends: bytes for PUT/POST, a well-formed JSON patch for an image PATCH (a malformed
# one is refused before the image is looked up, as Glance does, so it would prove nothing).
_BODIES = {"PUT": b"from A", "POST": b"from A",
           "PATCH": b'[{"op": "replace", "path": "/name", "value": "from A"}]'}
_BODY_TYPE = {"PATCH": {"Content-Type": "application/openstack-images-v2.1-json-patch"}}


def test_matrix_a_against_b(world: World) -> None:
    """A's token, every tenant-scoped operation, every B resource: 401/404, no B data."""
    checked = 0
    for path, method, op in _operations(world.emu):
        if not _tenant_scoped(path):
            continue
        always_405 = set(op["responses"]) <= {"405", "401", "403"}
        for params in _b_targets(world, path):
            url = path.format(**params)
            for token_header in ("X-Auth-Token", "X-Storage-Token"):
                if token_header == "X-Storage-Token" and not path.startswith("/v1/"):
                    continue
                # A bare client: only the header under test carries A's token.
                response = httpx.request(
                    method, world.emu.url + url,
                    headers={"Accept": "application/json", token_header: world.a.token,
                             **_BODY_TYPE.get(method, {})},
                    content=_BODIES.get(method), timeout=30)
                allowed = {401, 404} | ({405} if always_405 else set())
                assert response.status_code in allowed, (method, url, response.status_code)
                assert _leaks(world, url, response.text) == [], (method, url)
                assert SECRET not in response.content
                # Indistinguishable from asking about something that never existed.
                fake_url = path.format(**_stranger(params))
                stranger = httpx.request(
                    method, world.emu.url + fake_url,
                    headers={"Accept": "application/json", token_header: world.a.token,
                             **_BODY_TYPE.get(method, {})},
                    content=_BODIES.get(method), timeout=30)
                assert stranger.status_code == response.status_code, (method, url)
                checked += 1
    assert checked >= 30  # every operation of the document took part


def test_the_same_requests_work_for_b(world: World) -> None:
    """The control: B's own token reaches every one of those resources."""
    for path, method, _ in _operations(world.emu):
        if not _tenant_scoped(path) or method not in ("GET", "HEAD"):
            continue
        for params in _b_targets(world, path):
            if "image_id" in params and params["image_id"] == image_id_for(OTHER, "old"):
                continue  # deactivated: its file is 403 even for the owner
            url = path.format(**params)
            response = world.b.http.request(method, url)
            assert response.status_code < 300, (method, url, response.status_code)


def test_writes_from_a_never_reach_b(world: World) -> None:
    a, b = world.a, world.b
    account = f"/v1/MossoCloudFS_{OTHER}"
    attempts = [
        ("PUT", f"{account}/{B_CONTAINER}/planted.txt", b"planted"),
        ("PUT", f"{account}/{B_CONTAINER}/secret.txt", b"overwritten"),
        ("DELETE", f"{account}/{B_CONTAINER}/secret.txt", None),
        ("DELETE", f"{account}/{B_CONTAINER}/{world.b_segment}", None),
        ("PUT", f"{account}/a-new-container", None),
        ("DELETE", f"{account}/{B_CONTAINER}", None),
        ("POST", f"{account}/{B_CONTAINER}", None),
    ]
    for method, url, body in attempts:
        response = a.http.request(method, url, content=body)
        assert response.status_code in (401, 404, 405), (method, url, response.status_code)
    for image_id in world.b_images:
        response = a.http.patch(f"/v2/images/{image_id}", content=_BODIES["PATCH"],
                                headers=_BODY_TYPE["PATCH"])
        assert response.status_code == 404, (image_id, response.status_code)
        assert b.get(f"/v2/images/{image_id}").json()["name"] != "from A"
    assert b.get(f"{b.account}/{B_CONTAINER}/secret.txt").content == SECRET
    assert b.get(f"{b.account}/{B_CONTAINER}/planted.txt").status_code == 404
    assert b.get(f"{b.account}/a-new-container").status_code == 404
    assert b.get(f"{b.account}/{B_CONTAINER}/{world.b_segment}").status_code == 200
    # Nothing landed in A's account under B's names either (the paths named B's account).
    assert a.get(f"{a.account}/{B_CONTAINER}").status_code == 404


def test_a_lists_never_show_b(world: World) -> None:
    a = world.a
    lists = [
        "/v2/tasks?limit=1000", "/v2/tasks?status=success&limit=1000",
        "/v2/tasks?type=export&sort_dir=asc", "/v2/images?limit=1000",
        f"/v2/images?owner={OTHER}", "/v2/images?visibility=private",
        "/v2/images?visibility=all", f"{a.account}?format=json", f"{a.account}",
        f"{a.account}/a-own?format=json",
    ]
    for url in lists:
        response = a.get(url)
        assert response.status_code in (200, 204), (url, response.status_code)
        for marker in world.markers:
            assert marker not in response.text, (url, marker)
    # Paging from one of B's ids must not reveal where it sits in B's list.
    for url in (f"/v2/tasks?marker={world.b_task}", f"/v2/images?marker={world.b_images[0]}"):
        response = a.get(url, headers={"Accept": "application/json"})
        assert response.status_code in (400, 404), (url, response.status_code)
        marker = url.split("marker=")[1]
        assert _leaks(world, "", response.text.replace(marker, "")) == []
        fake = a.get(url.replace(marker, "00000000-0000-4000-8000-00000000000c"),
                     headers={"Accept": "application/json"})
        assert fake.status_code == response.status_code


def test_a_cannot_export_b_image(world: World) -> None:
    """Through the client: preflight refuses it; without preflight the task fails, and no byte
    of B's image lands anywhere A can read."""
    import imgtools

    with make_client(world.emu) as client:
        b_image = image_id_for(OTHER, "web")
        with pytest.raises(imgtools.NotExportable):
            client.begin_export(b_image, "a-own")
        task = client.begin_export(b_image, "a-own", preflight=False)
        with pytest.raises(imgtools.TaskFailed) as info:
            task.wait()
        assert info.value.task.status is TaskStatus.FAILURE
        for marker in world.markers[:3]:
            assert marker not in (info.value.message or "")
        assert [o.name for o in client.files.objects("a-own")] == []
        assert client.tenant_id == DEMO

"""Regions in the emulator: each region has its own images, tasks and Cloud Files accounts,
its own catalog endpoints, and sees nothing of any other region."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from imgtools.emulator import EmulatorHandle
from tests.emulator.helpers import FAST, Api


@pytest.fixture(scope="module")
def emu(emulator_in_process: EmulatorHandle) -> EmulatorHandle:
    """This module's emulator: the emulator tests' one, in this process (tests/conftest.py)."""
    return emulator_in_process


HOME, AWAY = FAST.regions[0], FAST.regions[1]
MISSING_TASK = "00000000-0000-4000-8000-000000000000"


class RegionApi(Api):
    """``Api`` speaking to one region's endpoints (the root ones for the default region)."""

    def __init__(self, emu: EmulatorHandle, region: str, username: str = "demo",
                 token: str | None = None) -> None:
        super().__init__(emu, username)
        self.region = region
        if token is not None:
            self.token = token
        self.http.close()
        self.http = httpx.Client(base_url=emu.region_url(region),
                                 headers={"X-Auth-Token": self.token}, timeout=30.0)


@pytest.fixture(scope="module")
def home(emu: EmulatorHandle) -> Iterator[RegionApi]:
    client = RegionApi(emu, HOME)
    yield client
    client.close()


@pytest.fixture(scope="module")
def away(emu: EmulatorHandle, home: RegionApi) -> Iterator[RegionApi]:
    # The same login: one token serves every region, as Rackspace identity's does.
    client = RegionApi(emu, AWAY, token=home.token)
    yield client
    client.close()


def _catalog(emu: EmulatorHandle, username: str = "demo") -> dict[str, Any]:
    user = next(u for u in emu.config.users if u.username == username)
    status, _, body = emu.request("POST", "/v2.0/tokens", {"auth": {
        "RAX-KSKEY:apiKeyCredentials": {"username": user.username, "apiKey": user.api_key}}})
    assert status == 200
    import json

    access: dict[str, Any] = json.loads(body)["access"]
    return access


# -- catalog and URLs -------------------------------------------------------------------------
def test_every_region_has_its_own_endpoints_and_the_default_keeps_the_root(
        emu: EmulatorHandle) -> None:
    access = _catalog(emu, "other")
    services = {s["type"]: s["endpoints"] for s in access["serviceCatalog"]}
    assert [e["region"] for e in services["image"]] == list(emu.regions)
    assert services["image"][0]["publicURL"] == f"{emu.url}/v2"
    assert services["object-store"][0]["publicURL"] == f"{emu.url}/v1/MossoCloudFS_100002"
    for entry in services["object-store"]:
        assert entry["internalURL"] != entry["publicURL"]
        assert entry["internalURL"] == emu.storage_url("100002", entry["region"],
                                                       servicenet=True)
    assert services["image"][1]["publicURL"] == f"{emu.region_url(AWAY)}/v2" \
        == emu.image_endpoint_for(AWAY) == emu.image_endpoint_for(AWAY.lower())
    ports = {httpx.URL(emu.region_url(r)).port for r in emu.regions}
    assert len(ports) == len(emu.regions) and emu.port in ports
    assert emu.image_endpoint_for() == emu.image_endpoint
    assert emu.storage_url("100002") == emu.storage_url("100002", HOME)
    with pytest.raises(KeyError, match="LON"):
        emu.image_endpoint_for("LON")


def test_the_default_region_is_the_emulators_own_port(emu: EmulatorHandle, api: Api,
                                                      home: RegionApi) -> None:
    web = emu.image_id("web")
    assert emu.region_url() == emu.url
    info = emu.info()
    assert info["default_region"] == HOME and list(info["regions"]) == list(emu.regions)
    assert info["regions"][AWAY]["url"] == emu.region_url(AWAY)
    assert info["regions"][AWAY]["images"]["100001"]["web"] == emu.image_id("web", region=AWAY)
    assert info["images"] == info["regions"][HOME]["images"]
    root = api.get(f"/v2/images/{web}")
    assert root.status_code == home.get(f"/v2/images/{web}").status_code == 200
    assert root.json() == home.get(f"/v2/images/{web}").json()


def test_servicenet_reaches_cloud_files_only(away: RegionApi) -> None:
    assert away.get("/snet/v2/images").status_code == 404
    assert away.get("/v2/images").status_code == 200
    assert away.get(f"/snet{away.account}").status_code in (200, 204)


def test_seeded_images_differ_between_regions(emu: EmulatorHandle) -> None:
    seen: dict[str, list[dict[str, Any]]] = {}
    for region in emu.regions:
        client = RegionApi(emu, region)
        seen[region] = client.get("/v2/images", params={"limit": 100}).json()["images"]
        client.close()
        assert {i["id"] for i in seen[region] if i["owner"] == "100001"} == {
            emu.image_id(slug, region=region)
            for slug in ("web", "db", "small", "windows", "rhel", "old")}
    ids = [{i["id"] for i in images} for images in seen.values()]
    checksums = [{i["checksum"] for i in images} for images in seen.values()]
    names = [{i["name"] for i in images} for images in seen.values()]
    for a in range(len(ids)):
        for b in range(a + 1, len(ids)):
            assert not ids[a] & ids[b] and not checksums[a] & checksums[b]
            assert not names[a] & names[b]


def test_an_export_in_another_region_lands_in_that_regions_cloud_files(
        emu: EmulatorHandle, away: RegionApi) -> None:
    image_id = emu.image_id("small", region=AWAY)
    container = away.container()
    response = away.post_task(image_uuid=image_id, receiving_swift_container=container)
    assert response.status_code == 201
    assert response.headers["location"] == \
        f"{emu.image_endpoint_for(AWAY)}/tasks/{response.json()['id']}"
    done = away.wait(response.json()["id"])
    assert done["status"] == "success", done["message"]
    body = away.get(f"{away.account}/{container}/{image_id}.vhd").content
    assert body == away.image_bytes(image_id)
    # ServiceNet reaches the same account: the internalURL works and serves the same bytes.
    before = emu.stats()["events"].get("servicenet_requests", 0)
    internal = emu.storage_url(away.tenant, AWAY, servicenet=True)
    over_snet = away.http.get(f"{internal}/{container}/{image_id}.vhd")
    assert over_snet.status_code == 200 and over_snet.content == body
    put = away.http.put(f"{internal}/{container}/via-snet", content=b"hello")
    assert put.status_code == 201
    assert away.get(f"{away.account}/{container}/via-snet").content == b"hello"
    assert emu.stats()["events"]["servicenet_requests"] == before + 2


# -- isolation matrix --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def planted(emu: EmulatorHandle, home: RegionApi) -> dict[str, str]:
    """Resources in the default region: an export task, its container and objects."""
    image_id = emu.image_id("db")
    container = home.container()
    task = home.wait(home.export(image_id, container)["id"])
    assert task["status"] == "success"
    put = home.http.put(f"{home.account}/{container}/note.txt", content=b"home only")
    assert put.status_code == 201
    shown = home.get(f"/v2/images/{image_id}").json()
    return {"image": image_id, "task": task["id"], "container": container,
            "object": f"{image_id}.vhd", "plain": "note.txt", "checksum": shown["checksum"],
            "name": shown["name"]}


def _no_trace(response: httpx.Response, planted: dict[str, str]) -> None:
    """An answer that gives away nothing of the other region's data (ids the caller sent may
    be echoed in the message, as for any id that never existed)."""
    text = response.text
    for secret in (planted["checksum"], planted["name"], planted["container"], "home only",
                   "export_location", "x-object-manifest"):
        assert secret not in text
    assert not any(k.startswith("x-object-meta") for k in response.headers)


@pytest.mark.parametrize("operation", [
    "show task", "task marker", "list tasks", "show image", "image file", "image marker",
    "patch image", "list images",
    "head object", "get object", "get manifest", "delete object", "post object",
    "head container", "list container", "delete container", "list account", "export",
    "import"])
def test_another_regions_resources_never_existed(emu: EmulatorHandle, home: RegionApi,
                                                 away: RegionApi, planted: dict[str, str],
                                                 operation: str) -> None:
    task, image = planted["task"], planted["image"]
    obj = f"{away.account}/{planted['container']}/{planted['object']}"
    plain = f"{away.account}/{planted['container']}/{planted['plain']}"
    # Each operation, on this region's own missing id, is the reference answer: "never existed".
    checks: dict[str, tuple[httpx.Response, int, str]] = {
        "show task": (away.get(f"/v2/tasks/{task}"), 404, f"Could not find task {task}"),
        "task marker": (away.get("/v2/tasks", params={"marker": task}), 400,
                        f"Task with the given id {task} was not found"),
        "show image": (away.get(f"/v2/images/{image}"), 404, f"No image found with ID {image}"),
        "image file": (away.get(f"/v2/images/{image}/file"), 404,
                       f"No image found with ID {image}"),
        "image marker": (away.get("/v2/images", params={"marker": image}), 400,
                         f"Marker {image} could not be found."),
        "patch image": (away.http.patch(
            f"/v2/images/{image}", content=b'[{"op": "replace", "path": "/name", "value": "x"}]',
            headers={"Content-Type": "application/openstack-images-v2.1-json-patch"}), 404,
            f"No image found with ID {image}"),
        "head object": (away.http.head(obj), 404, ""),
        "get object": (away.get(obj), 404, ""),
        "get manifest": (away.get(obj, params={"multipart-manifest": "get"}), 404, ""),
        "delete object": (away.http.delete(plain), 404, ""),
        "post object": (away.http.post(plain, headers={"X-Object-Meta-A": "b"}), 404, ""),
        "head container": (away.http.head(f"{away.account}/{planted['container']}"), 404, ""),
        "list container": (away.get(f"{away.account}/{planted['container']}"), 404, ""),
        "delete container": (away.http.delete(f"{away.account}/{planted['container']}"), 404,
                             ""),
    }
    if operation in checks:
        response, status, message = checks[operation]
        assert response.status_code == status, (operation, response.text)
        assert message in response.text
        _no_trace(response, planted)
    elif operation == "list tasks":
        listed = away.get("/v2/tasks", params={"limit": 1000})
        assert listed.status_code == 200 and task not in listed.text
        assert task in home.get("/v2/tasks", params={"limit": 1000}).text
    elif operation == "list images":
        listed = away.get("/v2/images", params={"limit": 1000})
        assert listed.status_code == 200 and image not in listed.text
    elif operation == "list account":
        listed = away.get(away.account, params={"format": "json"})
        assert listed.status_code in (200, 204)
        assert planted["container"] not in listed.text
        assert planted["container"] in home.get(home.account).text
    elif operation == "export":
        # The home region's image cannot be exported from here, even into a container here.
        container = away.container()
        failed = away.wait(away.export(image, container)["id"])
        assert failed["status"] == "failure"
        assert failed["message"] == f"Requested image for export was not found: {image}"
    elif operation == "import":
        response = away.post_task("import", import_from=f"{planted['container']}/"
                                  f"{planted['object']}", import_from_format="vhd",
                                  image_properties={"name": "from-elsewhere"})
        assert response.status_code == 201
        failed = away.wait(response.json()["id"])
        assert failed["status"] == "failure"
        assert failed["message"] == "Image not found for import. Possible invalid location"
    else:  # pragma: no cover - every parameter is handled above
        raise AssertionError(operation)
    # Whatever was tried, the home region's resources are all still there, unchanged.
    assert home.get(f"/v2/tasks/{task}").json()["status"] == "success"
    assert home.get(f"{home.account}/{planted['container']}/{planted['plain']}").content == \
        b"home only"
    manifest = home.get(f"{home.account}/{planted['container']}/{planted['object']}")
    assert hashlib.md5(manifest.content).hexdigest() == \
        home.get(f"/v2/images/{image}").json()["checksum"]


def test_isolation_holds_from_the_default_region_too(emu: EmulatorHandle, home: RegionApi,
                                                     away: RegionApi) -> None:
    image_id = emu.image_id("web", region=AWAY)
    container = away.container()
    task = away.wait(away.export(image_id, container)["id"])
    assert task["status"] == "success"
    for path in (f"/v2/tasks/{task['id']}", f"/v2/images/{image_id}",
                 f"{home.account}/{container}", f"{home.account}/{container}/{image_id}.vhd"):
        for client in (home, RegionApi(emu, HOME, token=home.token)):
            response = client.get(path)
            assert response.status_code == 404, path
            assert container not in response.text or "tasks" in path


def test_an_image_moves_between_regions_and_tenants(emu: EmulatorHandle, home: RegionApi
                                                    ) -> None:
    """Export at home as demo, copy the bytes to another region's account of another tenant,
    import there: the new image has the same bytes and belongs to that tenant only."""
    image_id = emu.image_id("small")
    source = home.container()
    assert home.wait(home.export(image_id, source)["id"])["status"] == "success"
    target = RegionApi(emu, AWAY, "other")
    try:
        container = target.container()
        data = home.get(f"{home.account}/{source}/{image_id}.vhd").content
        md5 = hashlib.md5(data).hexdigest()
        put = target.http.put(f"{target.account}/{container}/copy.vhd", content=data,
                              headers={"ETag": md5})
        assert put.status_code == 201 and put.headers["etag"] == md5
        response = target.post_task("import", import_from=f"{container}/copy.vhd",
                                    import_from_format="vhd",
                                    image_properties={"name": "moved"})
        assert response.status_code == 201, response.text
        done = target.wait(response.json()["id"])
        assert done["status"] == "success", done["message"]
        new_id = done["result"]["image_id"]
        new = target.get(f"/v2/images/{new_id}").json()
        assert new["owner"] == "100002" and new["checksum"] == md5 and new["name"] == "moved"
        assert home.get(f"/v2/images/{new_id}").status_code == 404
        demo_away = RegionApi(emu, AWAY, token=home.token)
        assert demo_away.get(f"/v2/images/{new_id}").status_code == 404
        demo_away.close()
    finally:
        target.close()


# -- real clients, unchanged, against a second region's endpoints ----------------------------
def test_glanceclient_against_a_second_region(emu: EmulatorHandle, home: RegionApi,
                                              away: RegionApi) -> None:
    from glanceclient import Client
    from glanceclient import exc as glance_exc

    glance = Client(endpoint=emu.image_endpoint_for(AWAY), token=away.token)
    listed = {i["id"] for i in glance.images.list(page_size=2)}
    assert emu.image_id("web", region=AWAY) in listed
    assert emu.image_id("web") not in listed
    image_id = emu.image_id("small", region=AWAY)
    container = away.container()
    task = glance.tasks.create(type="export", input={
        "image_uuid": image_id, "receiving_swift_container": container})
    done = away.wait(task.id)
    assert done["status"] == "success"
    assert glance.tasks.get(task.id).result == {"export_location": f"{container}/{image_id}.vhd"}
    ids = {t.id for t in glance.tasks.list(page_size=1)}  # follows "next" under the prefix
    assert task.id in ids
    assert not ids & {t["id"] for t in home.get("/v2/tasks", params={"limit": 1000}).json()[
        "tasks"]}
    assert b"".join(glance.images.data(image_id)) == away.image_bytes(image_id)
    with pytest.raises(glance_exc.HTTPNotFound):
        glance.images.get(emu.image_id("small"))


def test_openstacksdk_against_a_second_region(emu: EmulatorHandle, away: RegionApi) -> None:
    import openstack

    conn = openstack.connect(auth_type="admin_token",
                             auth={"token": away.token, "endpoint": emu.url},
                             image_endpoint_override=emu.image_endpoint_for(AWAY),
                             image_api_version="2")
    try:
        image_id = emu.image_id("db", region=AWAY)
        container = away.container()
        task = conn.image.create_task(type="export", input={
            "image_uuid": image_id, "receiving_swift_container": container})
        done = conn.image.wait_for_task(task, status="success", failures=["failure"],
                                        interval=0.1, wait=30)
        assert done.result == {"export_location": f"{container}/{image_id}.vhd"}
        assert task.id in {t.id for t in conn.image.tasks(limit=1000)}
        assert conn.image.get_image(image_id).checksum == \
            away.get(f"/v2/images/{image_id}").json()["checksum"]
    finally:
        conn.close()


@pytest.mark.parametrize("servicenet", [False, True], ids=["publicURL", "internalURL"])
def test_swiftclient_against_a_second_region(emu: EmulatorHandle, away: RegionApi,
                                             servicenet: bool) -> None:
    from swiftclient import client as swift
    from swiftclient.exceptions import ClientException

    image_id = emu.image_id("web", region=AWAY)
    container = away.container()
    assert away.wait(away.export(image_id, container)["id"])["status"] == "success"
    conn = swift.Connection(preauthurl=emu.storage_url(away.tenant, AWAY, servicenet=servicenet),
                            preauthtoken=away.token, retries=0)
    try:
        _, objects = conn.get_container(container, full_listing=True)
        assert objects[0]["name"] == f"{image_id}.vhd" and len(objects) > 2
        _, body = conn.get_object(container, f"{image_id}.vhd")
        assert body == away.image_bytes(image_id)
        conn.put_object(container, "hello.txt", b"hello", etag=hashlib.md5(b"hello").hexdigest())
        assert conn.get_object(container, "hello.txt")[1] == b"hello"
        with pytest.raises(ClientException) as caught:
            conn.put_object(container, "bad.txt", b"hello", etag="0" * 32)
        assert caught.value.http_status == 422
        assert container not in {c["name"] for c in swift.Connection(
            preauthurl=emu.storage_url(away.tenant), preauthtoken=away.token,
            retries=0).get_account(full_listing=True)[1]}
    finally:
        conn.close()


# -- life cycle --------------------------------------------------------------------------------
def test_a_killed_subprocess_comes_back_with_every_region_on_its_ports(tmp_path: Any) -> None:
    from imgtools.emulator import start_emulator
    from tests.emulator.helpers import fast

    with start_emulator(config=fast(), data_dir=tmp_path, subprocess=True) as emu:
        ports = {r: emu.region_url(r) for r in emu.regions}
        away = RegionApi(emu, AWAY)
        container = away.container()
        put = away.http.put(f"{away.account}/{container}/kept", content=b"kept")
        assert put.status_code == 201
        away.close()
        emu.kill()
        emu.restart()
        assert {r: emu.region_url(r) for r in emu.regions} == ports
        again = RegionApi(emu, AWAY)
        assert again.get(f"{again.account}/{container}/kept").content == b"kept"
        home = RegionApi(emu, HOME, token=again.token)
        assert home.get(f"{home.account}/{container}/kept").status_code == 404
        again.close()
        home.close()
    assert (tmp_path / "regions" / AWAY / "state.sqlite").exists()  # its own store


def test_the_public_main_serves_every_region_and_says_where(tmp_path: Any) -> None:
    import re
    import socket
    import subprocess
    import sys

    from imgtools.emulator import DEFAULT_USERS, DEMO_USER, main

    assert DEFAULT_USERS[0] is DEMO_USER and DEMO_USER.username == "demo"
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:  # a port in use: a clear exit status, no traceback
        assert main(["--port", str(busy.getsockname()[1]), "--quiet",
                     "--data-dir", str(tmp_path / "busy")]) == 2
    finally:
        busy.close()
    script = ("import sys\nfrom imgtools.emulator import main\n"
              "sys.exit(main(sys.argv[1:]))\n")
    proc = subprocess.Popen([sys.executable, "-c", script, "--port", "0", "--data-dir",
                             str(tmp_path / "run"), "--image-size", "8192",
                             "--region", "ORD", "--region", "LON"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(12)]
        urls = dict(re.findall(r"^\s+(ORD|LON): images (http://\S+)/v2,", "".join(lines),
                               re.M))
        assert set(urls) == {"ORD", "LON"} and urls["ORD"] != urls["LON"]
        token_body = {"auth": {"RAX-KSKEY:apiKeyCredentials": {
            "username": DEMO_USER.username, "apiKey": DEMO_USER.api_key}}}
        access = httpx.post(f"{urls['LON']}/v2.0/tokens", json=token_body).json()["access"]
        images = {e["region"]: e["publicURL"] for s in access["serviceCatalog"]
                  for e in s["endpoints"] if s["type"] == "image"}
        assert images == {r: f"{u}/v2" for r, u in urls.items()}
        token = access["token"]["id"]
        for region, url in urls.items():
            listed = httpx.get(f"{url}/v2/images", headers={"X-Auth-Token": token}).json()
            assert {i["id"] for i in listed["images"] if i["owner"] == DEMO_USER.tenant_id} \
                == {_seeded(DEMO_USER.tenant_id, slug, "" if region == "ORD" else region)
                    for slug in ("web", "db", "small", "windows", "rhel", "old")}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _seeded(tenant: str, slug: str, region: str) -> str:
    from imgtools.emulator import image_id_for

    return image_id_for(tenant, slug, 0, region)


@pytest.mark.parametrize("regions, problem", [
    ((), "at least one region"),
    (("ORD", "ord"), "must differ"),
    (("ORD", "../x"), "letters, digits"),
])
def test_region_names_are_checked(regions: tuple[str, ...], problem: str) -> None:
    from imgtools.emulator import EmulatorConfig

    with pytest.raises(ValueError, match=problem):
        EmulatorConfig(regions=regions)


def test_other_regions_can_start_empty_for_big_image_runs(tmp_path: Any) -> None:
    from imgtools.emulator import start_emulator
    from tests.emulator.helpers import fast

    with start_emulator(config=fast(seed_all_regions=False), data_dir=tmp_path,
                        subprocess=False) as emu:
        home, away = RegionApi(emu, HOME), RegionApi(emu, AWAY)
        try:
            assert away.get("/v2/images").json()["images"] == []
            assert emu.image_id("web") in {i["id"] for i in home.get("/v2/images").json()[
                "images"]}
            assert away.container()  # Cloud Files works there all the same
        finally:
            home.close()
            away.close()

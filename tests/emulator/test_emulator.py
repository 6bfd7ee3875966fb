"""The emulator's identity, images and tasks APIs, over a real socket."""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from typing import Any

import httpx
import jsonschema_rs  # schemathesis' validator: `import jsonschema` costs seconds here
import pytest

from imgtools import Task
from imgtools.emulator import EmulatorHandle, image_id_for
from tests.emulator.helpers import FAST, Api


@pytest.fixture(scope="module")
def emu(emulator_in_process: EmulatorHandle) -> EmulatorHandle:
    """This module's emulator: the emulator tests' one, in this process (tests/conftest.py)."""
    return emulator_in_process


def _validate(instance: Any, schema: Any) -> None:
    jsonschema_rs.validator_for(schema).validate(instance)


UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def _auth(anon: httpx.Client, body: Any) -> httpx.Response:
    return anon.post("/v2.0/tokens", json=body)


# -- identity ---------------------------------------------------------------------------------
def test_identity_api_key_gives_token_and_catalog(emu: EmulatorHandle,
                                                  anon: httpx.Client) -> None:
    r = _auth(anon, {"auth": {"RAX-KSKEY:apiKeyCredentials": {"username": "demo",
                                                             "apiKey": "demo-key"}}})
    assert r.status_code == 200
    access = r.json()["access"]
    assert re.fullmatch(r"[0-9a-f]{32}", access["token"]["id"])
    assert access["token"]["tenant"] == {"id": "100001", "name": "100001"}
    assert access["token"]["expires"].endswith("Z")
    services = {s["name"]: s for s in access["serviceCatalog"]}
    images, files = services["cloudImages"], services["cloudFiles"]
    assert images["type"] == "image" and files["type"] == "object-store"
    assert len(images["endpoints"]) >= 2
    # One endpoint per region, the default region first and at the root URLs.
    assert [e["region"] for e in images["endpoints"]] == list(FAST.regions)
    assert [e["region"] for e in files["endpoints"]] == list(FAST.regions)
    assert images["endpoints"][0]["publicURL"] == f"{emu.url}/v2" == emu.image_endpoint
    assert files["endpoints"][0]["publicURL"] == emu.storage_url("100001")
    assert [e["publicURL"] for e in images["endpoints"]] == \
        [emu.image_endpoint_for(r) for r in FAST.regions]
    assert [e["publicURL"] for e in files["endpoints"]] == \
        [emu.storage_url("100001", r) for r in FAST.regions]
    assert [e["internalURL"] for e in files["endpoints"]] == \
        [emu.storage_url("100001", r, servicenet=True) for r in FAST.regions]
    urls = [e[k] for e in files["endpoints"] for k in ("publicURL", "internalURL")]
    urls += [e["publicURL"] for e in images["endpoints"]]
    assert len(set(urls)) == len(urls)  # every region and network has its own endpoints
    assert {e["tenantId"] for e in files["endpoints"]} == {"MossoCloudFS_100001"}
    assert access["user"]["RAX-AUTH:defaultRegion"] == FAST.regions[0]


def test_identity_password_credentials(anon: httpx.Client) -> None:
    r = _auth(anon, {"auth": {"passwordCredentials": {"username": "other",
                                                     "password": "other-key"}}})
    assert r.status_code == 200
    assert r.json()["access"]["token"]["tenant"]["id"] == "100002"


@pytest.mark.parametrize("body, status", [
    ({"auth": {"RAX-KSKEY:apiKeyCredentials": {"username": "demo", "apiKey": "nope"}}}, 401),
    ({"auth": {"RAX-KSKEY:apiKeyCredentials": {"username": "ghost", "apiKey": "demo-key"}}},
     401),
    ({"auth": {"passwordCredentials": {"username": "demo", "password": "x"}}}, 401),
    ({"auth": {}}, 400),
    ({"nothing": 1}, 400),
    ([1, 2], 400),
])
def test_identity_rejects_bad_credentials(anon: httpx.Client, body: Any, status: int) -> None:
    r = _auth(anon, body)
    assert r.status_code == status
    if status == 401:
        assert r.json() == {"unauthorized": {
            "code": 401, "message": "Unable to authenticate user with credentials provided."}}


def test_identity_malformed_and_oversized(anon: httpx.Client) -> None:
    r = anon.post("/v2.0/tokens", content=b"{not json")
    assert r.status_code == 400 and "badRequest" in r.json()
    r = anon.post("/v2.0/tokens", content=b"x" * (FAST.max_json_body + 1))
    assert r.status_code == 413


# -- auth on the other endpoints ----------------------------------------------------------------
@pytest.mark.parametrize("path", ["/v2/tasks", "/v2/images", "/v2/schemas/task",
                                  f"/v2/tasks/{uuid.uuid4()}", "/v1/MossoCloudFS_100001"])
@pytest.mark.parametrize("token", [None, "not-a-token"])
def test_missing_or_unknown_token_is_401(anon: httpx.Client, path: str,
                                         token: str | None) -> None:
    headers = {"X-Auth-Token": token} if token else {}
    r = anon.get(path, headers=headers)
    assert r.status_code == 401


def test_percent_encoded_token_is_decoded(api: Api, anon: httpx.Client) -> None:
    # python-glanceclient percent-encodes the token: %61 is "a", so this is the same token.
    encoded = "".join(f"%{ord(c):02x}" for c in api.token)
    r = anon.get("/v2/tasks", headers={"X-Auth-Token": encoded})
    assert r.status_code == 200
    r = anon.get("/v2/tasks", headers={"X-Auth-Token": f"%2A{api.token}"})
    assert r.status_code == 401


def test_observer_role_cannot_use_tasks(emu: EmulatorHandle) -> None:
    viewer = Api(emu, "viewer")  # its own client: closed below
    r = viewer.get("/v2/tasks", headers={"Accept": "application/json"})
    assert r.status_code == 403
    assert r.json()["message"].startswith(
        "You are not authorized to complete tasks_api_access action.")
    assert viewer.get("/v2/images").status_code == 200
    viewer.close()


def test_error_bodies_html_by_default_json_when_accepted(api: Api) -> None:
    missing = uuid.uuid4()
    r = api.get(f"/v2/tasks/{missing}")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("text/html")
    assert f"Could not find task {missing}" in r.text and "<h1>404 Not Found</h1>" in r.text
    r = api.get(f"/v2/tasks/{missing}", headers={"Accept": "application/json"})
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"message": f"Could not find task {missing}<br /><br />\n\n\n",
                        "code": "404 Not Found", "title": "Not Found"}


# -- versions and schemas ---------------------------------------------------------------------
def test_versions(emu: EmulatorHandle, anon: httpx.Client) -> None:
    r = anon.get("/")
    assert r.status_code == 300
    versions = r.json()["versions"]
    assert versions[0]["status"] == "CURRENT" and versions[-1]["id"] == "v2.0"
    assert versions[0]["links"][0]["href"] == f"{emu.url}/v2/"
    assert anon.get("/versions").status_code == 200


def test_task_schema_declares_export_and_validates_real_tasks(api: Api, container: str) -> None:
    schema = api.get("/v2/schemas/task").json()
    assert schema["properties"]["type"]["enum"] == ["import", "export"]
    strict = {**schema, "additionalProperties": False}
    task = api.export(api.emu.image_id("small"), container)
    _validate(task, strict)  # pending: result null, no expires_at
    _validate(api.wait(task["id"]), strict)  # finished: expires_at set
    stubs = api.get("/v2/schemas/tasks").json()
    items = {**stubs["properties"]["tasks"]["items"], "additionalProperties": False}
    assert not {"input", "result", "message"} & set(items["properties"])
    for stub in api.get("/v2/tasks").json()["tasks"]:
        _validate(stub, items)
    assert api.get("/v2/schemas/nope").status_code == 404


# -- images -----------------------------------------------------------------------------------
def test_images_list_shows_own_and_public_only(api: Api, other: Api) -> None:
    images = api.get("/v2/images", params={"limit": 100}).json()["images"]
    owners = {i["owner"] for i in images}
    assert owners == {"100001", "657197"}
    assert all(i["visibility"] == "public" for i in images if i["owner"] == "657197")
    required = {"id", "status", "visibility", "protected", "tags", "created_at", "file", "self"}
    assert all(required <= set(i) for i in images)
    by_slug = {i["id"]: i for i in images}
    web = by_slug[api.emu.image_id("web")]
    assert web["com.rackspace__1__options"] == "0" and web["disk_format"] == "vhd"
    windows = by_slug[api.emu.image_id("windows")]
    assert windows["com.rackspace__1__options"] != "0"
    assert by_slug[api.emu.image_id("old")]["status"] == "deactivated"
    assert all(isinstance(v, str) for k, v in web.items() if k.startswith("com.rackspace"))


def test_images_paging_follows_next_to_the_end(api: Api) -> None:
    everything = api.get("/v2/images", params={"limit": 1000}).json()["images"]
    seen: list[str] = []
    url: str | None = "/v2/images?limit=3"
    pages = 0
    while url:
        body = api.get(url).json()
        assert body["first"] == "/v2/images?limit=3"
        seen += [i["id"] for i in body["images"]]
        url = body.get("next")
        pages += 1
    assert seen == [i["id"] for i in everything]
    assert pages == len(everything) // 3 + 1


def test_images_filters_and_sorting(api: Api) -> None:
    def ids(**params: Any) -> list[str]:
        r = api.get("/v2/images", params=params)
        assert r.status_code == 200, r.text
        return [i["id"] for i in r.json()["images"]]

    assert ids(status="deactivated") == [api.emu.image_id("old")]
    assert ids(visibility="public") == [image_id_for("657197", s) for s in
                                        ("base-windows", "base-ubuntu")]
    assert set(ids(visibility="private")) == {api.emu.image_id(s) for s in
                                              ("web", "db", "small", "windows", "rhel", "old")}
    assert ids(tag="prod") == [api.emu.image_id("web")]
    assert ids(name="db01 snapshot (CentOS 7)") == [api.emu.image_id("db")]
    assert ids(owner="100002") == []
    assert ids(**{"com.rackspace__1__options": "4"}) == [api.emu.image_id("rhel")]
    sizes = [i["size"] for i in api.get("/v2/images", params={"sort_key": "size",
                                                              "sort_dir": "asc"}).json()["images"]]
    assert sizes == sorted(sizes)
    big = ids(size_min=FAST.image_size)
    assert big == [api.emu.image_id("web")]


@pytest.mark.parametrize("params, message", [
    ({"limit": "x"}, "limit param must be an integer"),
    ({"limit": "-1"}, "limit param must be positive"),
    ({"sort_dir": "up"}, "Invalid sort direction: up"),
    ({"sort_key": "owner"}, "Invalid sort key: owner."),
    ({"visibility": "secret"}, "Invalid visibility value: secret"),
    ({"marker": str(uuid.UUID(int=5))}, "could not be found"),
    ({"size_min": "big"}, "Invalid value for size_min"),
])
def test_images_bad_parameters(api: Api, params: dict[str, str], message: str) -> None:
    r = api.get("/v2/images", params=params, headers={"Accept": "application/json"})
    assert r.status_code == 400
    assert message in r.json()["message"]


def test_image_show_and_file(api: Api) -> None:
    image_id = api.emu.image_id("db")
    image = api.get(f"/v2/images/{image_id}").json()
    data = api.image_bytes(image_id)
    assert len(data) == image["size"] == FAST.image_size // 2
    assert hashlib.md5(data).hexdigest() == image["checksum"]
    assert data[-512:-504] == b"conectix"  # a VHD footer, so imports accept it
    r = api.get(f"/v2/images/{image_id}/file", headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == data[10:20]
    assert r.headers["content-range"] == f"bytes 10-19/{len(data)}"
    r = api.get(f"/v2/images/{image_id}/file", headers={"Range": f"bytes={len(data)}-"})
    assert r.status_code == 416


def test_image_deactivated_file_is_403(api: Api) -> None:
    r = api.get(f"/v2/images/{api.emu.image_id('old')}/file")
    assert r.status_code == 403
    assert "deactivated" in r.text


def test_image_of_another_tenant_is_404(api: Api, other: Api) -> None:
    theirs = other.emu.image_id("web", "100002")
    for path in (f"/v2/images/{theirs}", f"/v2/images/{theirs}/file"):
        r = api.get(path)
        assert r.status_code == 404
        assert f"No image found with ID {theirs}" in r.text
    assert other.get(f"/v2/images/{theirs}").status_code == 200


def test_images_are_deterministic(api: Api) -> None:
    assert api.emu.image_id("web") == image_id_for("100001", "web")
    first = hashlib.md5(api.image_bytes(api.emu.image_id("small"))).hexdigest()
    other_tenant = image_id_for("100002", "small")
    assert other_tenant != api.emu.image_id("small")
    assert first == api.get(f"/v2/images/{api.emu.image_id('small')}").json()["checksum"]


# -- tasks: create and run --------------------------------------------------------------------
def test_export_success_layout_and_bytes(api: Api, container: str) -> None:
    image_id = api.emu.image_id("web")
    r = api.post_task(image_uuid=image_id, receiving_swift_container=container)
    assert r.status_code == 201
    task = r.json()
    assert r.headers["location"] == f"{api.emu.url}/v2/tasks/{task['id']}"
    assert UUID_RE.match(task["id"]) and TIME_RE.match(task["created_at"])
    assert task["status"] == "pending" and task["type"] == "export"
    assert task["input"] == {"image_uuid": image_id, "receiving_swift_container": container}
    assert task["owner"] == "100001" and task["result"] is None and task["message"] == ""
    assert task["self"] == f"/v2/tasks/{task['id']}" and task["schema"] == "/v2/schemas/task"
    assert "expires_at" not in task
    done = api.wait(task["id"])
    assert done["status"] == "success", done
    assert done["result"] == {"export_location": f"{container}/{image_id}.vhd"}
    finished = Task.from_json(done)
    assert finished.expires_at is not None
    assert (finished.expires_at - finished.updated_at).total_seconds() == FAST.task_ttl
    listing = api.get(f"{api.account}/{container}", params={"format": "json"}).json()
    names = [o["name"] for o in listing]
    segments = FAST.image_size // FAST.segment_size
    assert names == [f"{image_id}.vhd"] + [f"{image_id}.vhd-{n:05d}"
                                            for n in range(1, segments + 1)]
    manifest = api.http.head(f"{api.account}/{container}/{image_id}.vhd")
    assert manifest.headers["x-object-manifest"] == f"{container}/{image_id}.vhd-"
    assert int(manifest.headers["content-length"]) == FAST.image_size
    body = api.get(f"{api.account}/{container}/{image_id}.vhd").content
    assert body == api.image_bytes(image_id)
    raw = api.get(f"{api.account}/{container}/{image_id}.vhd",
                  params={"multipart-manifest": "get"})
    assert raw.content == b"" and raw.headers["etag"] == hashlib.md5(b"").hexdigest()


def test_task_goes_through_processing(emu: EmulatorHandle, api: Api, container: str) -> None:
    # 256 KiB at 8 MiB/s is ~30 ms of processing; poll fast enough to see the states in order.
    task = api.export(api.emu.image_id("web"), container)
    seen = [task["status"]]
    while seen[-1] not in ("success", "failure"):
        status = api.get(f"/v2/tasks/{task['id']}").json()["status"]
        if status != seen[-1]:
            seen.append(status)
    assert seen[0] == "pending" and seen[-1] == "success"
    assert seen == [s for s in ("pending", "processing", "success") if s in seen]


FAILURES = [
    ("windows", None, "Image cannot be exported due to licensing or billing restrictions "
                      "(com.rackspace__1__options: '2')"),
    ("rhel", None, "Image cannot be exported due to licensing or billing restrictions "
                   "(com.rackspace__1__options: '4')"),
    ("old", None, "Image {image} is deactivated and cannot be exported"),
    ("base", None, "An image may only be exported by the image owner."),
    ("missing", None, "Requested image for export was not found: {image}"),
    ("theirs", None, "Requested image for export was not found: {image}"),
    ("web", "no-such-container", "Container not found. Container: no-such-container"),
    ("web", "bad.name", "Invalid container name: bad.name. The name must not contain '/', '?' "
                        "or '.'"),
]


@pytest.mark.parametrize("slug, target, message", FAILURES)
def test_export_failure_messages(api: Api, container: str, slug: str, target: str | None,
                                 message: str) -> None:
    image_id = {"base": image_id_for("657197", "base-ubuntu"),
                "missing": str(uuid.uuid4()),
                "theirs": image_id_for("100002", "web")}.get(slug) or api.emu.image_id(slug)
    task = api.export(image_id, target or container)
    done = api.wait(task["id"])
    assert done["status"] == "failure"
    assert done["message"] == message.format(image=image_id)
    assert done["result"] is None and "expires_at" in done


def test_duplicate_export_fails_and_keeps_one_copy(api: Api, container: str) -> None:
    image_id = api.emu.image_id("small")
    first = api.export(image_id, container)
    second = api.export(image_id, container)  # still 201: the task fails, not the POST
    results = {t["id"]: api.wait(t["id"]) for t in (first, second)}
    statuses = sorted(t["status"] for t in results.values())
    assert statuses == ["failure", "success"]
    failed = next(t for t in results.values() if t["status"] == "failure")
    assert failed["message"] == ("Object already exists in user's container. Container/Object: "
                                 f"{container}/{image_id}.vhd")
    third = api.wait(api.export(image_id, container)["id"])
    assert third["message"] == failed["message"]
    names = [o["name"] for o in api.get(f"{api.account}/{container}?format=json").json()]
    assert names.count(f"{image_id}.vhd") == 1


def test_many_concurrent_exports(api: Api) -> None:
    containers = [api.container() for _ in range(4)]
    slugs = ("web", "db", "small")
    tasks = [api.export(api.emu.image_id(s), c) for c in containers for s in slugs]
    done = [api.wait(t["id"]) for t in tasks]
    assert [t["status"] for t in done] == ["success"] * len(tasks)


def test_import_round_trip(api: Api, container: str) -> None:
    image_id = api.emu.image_id("small")
    api.wait(api.export(image_id, container)["id"])
    r = api.post_task("import", import_from=f"{container}/{image_id}.vhd",
                      import_from_format="vhd", image_properties={"name": "restored"})
    assert r.status_code == 201
    done = api.wait(r.json()["id"])
    assert done["status"] == "success", done
    new_id = done["result"]["image_id"]
    image = api.get(f"/v2/images/{new_id}").json()
    assert image["name"] == "restored" and image["owner"] == "100001"
    assert api.image_bytes(new_id) == api.image_bytes(image_id)


@pytest.mark.parametrize("kind, message", [
    ("missing", "Image not found for import. Possible invalid location"),
    ("junk", "Image cannot be imported. Error code: '396'"),
    ("props", "Unsupported element in image_properties, please consult the documentation."),
    ("noprops", "Input does not contain 'image_properties' field"),
])
def test_import_failure_messages(api: Api, container: str, kind: str, message: str) -> None:
    api.http.put(f"{api.account}/{container}/junk.vhd", content=b"not a vhd" * 100)
    task_input: dict[str, Any] = {"import_from": f"{container}/junk.vhd",
                                  "image_properties": {"name": "x"}}
    if kind == "missing":
        task_input["import_from"] = f"{container}/nothing.vhd"
    elif kind == "props":
        task_input["image_properties"] = {"name": "x", "os_type": "linux"}
    elif kind == "noprops":
        del task_input["image_properties"]
    r = api.post_task("import", **task_input)
    assert r.status_code == 201
    done = api.wait(r.json()["id"])
    assert (done["status"], done["message"]) == ("failure", message)


# -- tasks: bad input --------------------------------------------------------------------------
def _post_raw(api: Api, content: bytes, content_type: str = "application/json"
              ) -> httpx.Response:
    return api.http.post("/v2/tasks", content=content, headers={
        "Content-Type": content_type, "Accept": "application/json"})


GOOD_INPUT = {"image_uuid": str(uuid.UUID(int=1)), "receiving_swift_container": "exports"}


@pytest.mark.parametrize("body, status, message", [
    (b"not json", 400, "Malformed JSON in request body."),
    (b"", 400, "Body expected in request."),
    (json.dumps({"input": GOOD_INPUT}).encode(), 400, "Task 'type' is required"),
    (json.dumps({"type": "export"}).encode(), 400, "Task 'input' is required"),
    (json.dumps({"type": "copy", "input": GOOD_INPUT}).encode(), 400,
     "Provided object does not match schema 'task': 'copy' is not one of ['import', 'export']"),
    (json.dumps({"type": "export", "input": GOOD_INPUT, "foo": 1}).encode(), 400,
     "Provided object does not match schema 'task': Additional properties are not allowed "
     "('foo' was unexpected)"),
    (json.dumps({"type": "export", "input": "str"}).encode(), 400,
     "Provided object does not match schema 'task': 'str' is not of type 'null', 'object'"),
    (json.dumps({"type": 7, "input": GOOD_INPUT}).encode(), 400, "7 is not of type 'string'"),
    (json.dumps([1]).encode(), 400, "is not of type 'object'"),
    (json.dumps({"type": "export", "input": {"image_uuid": "x"}}).encode(), 400,
     "Input does not contain 'receiving_swift_container' field"),
    (json.dumps({"type": "export", "input": {**GOOD_INPUT, "image_uuid": 5}}).encode(), 400,
     "Input field 'image_uuid' must be a non-empty string"),
    (json.dumps({"type": "export", "input": {**GOOD_INPUT, "x": 1}}).encode(), 400,
     "Unsupported element in input: 'x'"),
    (json.dumps({"type": "export", "input": None}).encode(), 400, "Input for an export task"),
    (json.dumps({"type": "import", "input": {}}).encode(), 400, "Invalid location: None"),
    (json.dumps({"type": "import", "input": {"import_from": "file:///etc/passwd"}}).encode(),
     400, "File based imports are not allowed."),
    (json.dumps({"type": "import", "input": {"import_from": "noslash"}}).encode(), 400,
     "Invalid location: noslash"),
    (json.dumps({"type": "export", "input": GOOD_INPUT, "id": "nope"}).encode(), 400,
     "does not match"),
])
def test_create_task_bad_input(api: Api, body: bytes, status: int, message: str) -> None:
    r = _post_raw(api, body)
    assert r.status_code == status, r.text
    assert r.json()["message"].startswith(message) or message in r.json()["message"]


def test_create_task_media_type_and_size(api: Api) -> None:
    body = json.dumps({"type": "export", "input": GOOD_INPUT}).encode()
    assert _post_raw(api, body, "text/plain").status_code == 415
    big = json.dumps({"type": "export", "input": {**GOOD_INPUT, "pad": "x" * 70000}}).encode()
    assert _post_raw(api, big).status_code == 413


def test_create_task_ignores_status_in_body(api: Api, container: str) -> None:
    r = api.http.post("/v2/tasks", json={"type": "export", "status": "success", "input": {
        "image_uuid": api.emu.image_id("small"), "receiving_swift_container": container}})
    assert r.status_code == 201 and r.json()["status"] == "pending"


def test_task_methods_not_allowed(api: Api) -> None:
    task_id = str(uuid.uuid4())
    r = api.http.delete(f"/v2/tasks/{task_id}")
    assert r.status_code == 405 and r.headers["allow"] == "GET"
    assert "auto deleted after reaching the time based on their expires_at" in r.text
    r = api.http.put(f"/v2/tasks/{task_id}", json={})
    assert r.status_code == 405 and r.headers["allow"] == "GET, DELETE"
    r = api.http.delete("/v2/tasks")
    assert r.status_code == 405 and r.headers["allow"] == "GET, POST"


# -- tasks: list ---------------------------------------------------------------------------------
@pytest.mark.parametrize("params, message", [
    ({"limit": "abc"}, "limit param must be an integer"),
    ({"limit": "-1"}, "limit param must be positive"),
    ({"status": "bogus"}, "Invalid status value: bogus"),
    ({"type": "api_image_import"}, "Invalid type value: api_image_import"),
    ({"sort_key": "bogus"}, "Sort key supplied was not valid."),
    ({"sort_dir": "sideways"}, "Invalid sort direction: sideways"),
    ({"marker": "not-a-uuid"}, "Invalid marker format"),
    ({"marker": "00000000-0000-0000-0000-000000000000"},
     "Task with the given id 00000000-0000-0000-0000-000000000000 was not found"),
])
def test_list_tasks_bad_parameters(api: Api, params: dict[str, str], message: str) -> None:
    r = api.get("/v2/tasks", params=params, headers={"Accept": "application/json"})
    assert r.status_code == 400
    assert r.json()["message"] == f"{message}<br /><br />\n\n\n"


def test_list_tasks_ignores_unknown_parameters_and_limit_zero(api: Api) -> None:
    assert api.get("/v2/tasks", params={"foo": "bar"}).status_code == 200
    body = api.get("/v2/tasks", params={"limit": 0}).json()
    assert body["tasks"] == [] and "next" not in body


def test_list_tasks_stubs_and_isolation(api: Api, other: Api, container: str) -> None:
    task = api.wait(api.export(api.emu.image_id("small"), container)["id"])
    body = api.get("/v2/tasks").json()
    assert body["first"] == "/v2/tasks" and body["schema"] == "/v2/schemas/tasks"
    stub = next(t for t in body["tasks"] if t["id"] == task["id"])
    assert set(stub) == {"id", "type", "status", "owner", "created_at", "updated_at", "self",
                         "schema", "expires_at"}
    assert Task.from_json(stub).is_stub
    assert {k: task[k] for k in stub} == stub  # the same fields as the full task
    # The other tenant sees none of it.
    assert all(t["owner"] == "100002" for t in other.get("/v2/tasks").json()["tasks"])
    assert other.get(f"/v2/tasks/{task['id']}").status_code == 404
    r = other.get("/v2/tasks", params={"marker": task["id"]})
    assert r.status_code == 400


def test_list_tasks_paging_to_the_last_page(emu: EmulatorHandle) -> None:
    pager = Api(emu, "other")
    created = {pager.post_task(image_uuid=str(uuid.uuid4()),
                               receiving_swift_container="x").json()["id"] for _ in range(23)}
    # These exports fail (no such image). Page once they have: a task that changes status
    # between two pages moves in a status-sorted list and is rightly seen twice, as in Glance.
    deadline = time.monotonic() + 30
    while any(pager.get(f"/v2/tasks/{i}").json()["status"] in ("pending", "processing")
              for i in created):
        assert time.monotonic() < deadline, "the exports did not finish"
        time.sleep(0.05)
    for params in ({"limit": 5}, {"limit": 5, "sort_key": "id", "sort_dir": "asc"},
                   {"limit": 4, "sort_key": "status", "type": "export"}):
        ids: list[str] = []
        url: str | None = "/v2/tasks"
        first = True
        pages = 0
        while url:
            r = pager.get(url, params=params if first else None)
            first = False
            body = r.json()
            assert len(body["tasks"]) <= params["limit"]
            ids += [t["id"] for t in body["tasks"]]
            url = body.get("next")
            pages += 1
            if url:
                assert "marker=" in url and "marker" not in body["first"]
        assert len(ids) == len(set(ids))
        assert created <= set(ids)
        if params.get("sort_key") == "id":
            assert ids == sorted(ids)
    pager.close()


def test_list_tasks_filters_and_order(api: Api, container: str) -> None:
    ok = api.wait(api.export(api.emu.image_id("small"), container)["id"])
    bad = api.wait(api.export(api.emu.image_id("windows"), container)["id"])
    failures = api.get("/v2/tasks", params={"status": "failure", "limit": 1000}).json()["tasks"]
    assert bad["id"] in {t["id"] for t in failures}
    assert ok["id"] not in {t["id"] for t in failures}
    assert all(t["status"] == "failure" for t in failures)
    imports = api.get("/v2/tasks", params={"type": "import"}).json()["tasks"]
    assert all(t["type"] == "import" for t in imports)
    newest = api.get("/v2/tasks", params={"limit": 1000}).json()["tasks"]
    stamps = [t["created_at"] for t in newest]
    assert stamps == sorted(stamps, reverse=True)
    oldest = api.get("/v2/tasks", params={"limit": 1000, "sort_dir": "asc"}).json()["tasks"]
    assert [t["id"] for t in oldest] == [t["id"] for t in reversed(newest)]


def test_list_limit_is_capped_at_1000(emu: EmulatorHandle, api: Api) -> None:
    r = api.get("/v2/tasks", params={"limit": 5000})
    assert r.status_code == 200
    assert "limit=5000" in r.json()["first"]


# -- emulator extras -----------------------------------------------------------------------------
def test_stats_count_requests_and_tasks(emu: EmulatorHandle, api: Api, container: str) -> None:
    before = emu.stats()
    api.export(emu.image_id("small"), container)
    api.get("/v2/tasks/not-there")
    after = emu.stats()
    assert after["tasks_created"] == before["tasks_created"] + 1

    def count(stats: dict[str, Any], route: str, method: str, status: int) -> int:
        return sum(r["count"] for r in stats["requests"]
                   if (r["route"], r["method"], r["status"]) == (route, method, status))

    assert count(after, "/v2/tasks", "POST", 201) == count(before, "/v2/tasks", "POST", 201) + 1
    assert count(after, "/v2/tasks/{task_id}", "GET", 404) == \
        count(before, "/v2/tasks/{task_id}", "GET", 404) + 1


def test_openapi_document_describes_live_responses(api: Api, anon: httpx.Client,
                                                  container: str) -> None:
    doc = anon.get("/_emulator/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    for path in ("/v2/tasks", "/v2/tasks/{task_id}", "/v2/images", "/v2.0/tokens",
                 "/v1/{account}/{container}/{object}"):
        assert path in doc["paths"]

    def js(schema: Any) -> Any:  # OpenAPI 3.0 "nullable" -> JSON schema type lists
        if isinstance(schema, dict):
            out = {k: js(v) for k, v in schema.items() if k != "nullable"}
            if schema.get("nullable"):
                out["type"] = [schema["type"], "null"]
            if "$ref" in out:
                return js(doc["components"]["schemas"][out["$ref"].rsplit("/", 1)[1]])
            return out
        if isinstance(schema, list):
            return [js(s) for s in schema]
        return schema

    task = api.wait(api.export(api.emu.image_id("small"), container)["id"])
    _validate(task, js({"$ref": "#/components/schemas/Task"}))
    listing = doc["paths"]["/v2/tasks"]["get"]["responses"]["200"]["content"]
    _validate(api.get("/v2/tasks?limit=2").json(),
                        js(listing["application/json"]["schema"]))
    image = api.get(f"/v2/images/{api.emu.image_id('web')}").json()
    _validate(image, js({"$ref": "#/components/schemas/Image"}))


def test_list_and_detail_format_times_alike() -> None:
    """List stubs are formatted by SQLite, details by Python: the same instant must read the
    same in both, also a hair before a whole second (SQLite would round it up)."""
    import sqlite3

    from imgtools.emulator.clock import iso_z
    from imgtools.emulator.store import _ISO

    db = sqlite3.connect(":memory:")
    for ts in (1700000013.9996, 1700000013.0, 1700000013.5, 1700000059.99999):
        (sql,) = db.execute("SELECT " + _ISO.format("?"), (ts,)).fetchone()
        assert sql == iso_z(ts)

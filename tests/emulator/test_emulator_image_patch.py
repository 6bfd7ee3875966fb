"""``PATCH /v2/images/{id}`` with JSON patch, as real Glance answers it
(../shared/reference/real-server-behaviour.md, section D)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from imgtools.emulator import EmulatorHandle
from tests.emulator.helpers import Api


@pytest.fixture(scope="module")
def emu(emulator_in_process: EmulatorHandle) -> EmulatorHandle:
    """This module's emulator: the emulator tests' one, in this process (tests/conftest.py)."""
    return emulator_in_process


V21 = "application/openstack-images-v2.1-json-patch"
V20 = "application/openstack-images-v2.0-json-patch"


def _patch(api: Api, image_id: str, body: Any, media: str = V21) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return api.http.patch(f"/v2/images/{image_id}", content=content,
                          headers={"Content-Type": media, "Accept": "application/json"})


def _message(response: httpx.Response) -> str:
    message: str = response.json()["message"]
    return message.split("<br />")[0]


def test_add_replace_and_remove_properties(emu: EmulatorHandle, api: Api) -> None:
    image_id = emu.image_id("web")
    before = api.get(f"/v2/images/{image_id}").json()
    r = _patch(api, image_id, [
        {"op": "add", "path": "/com.example.source_image", "value": "abc"},
        {"op": "replace", "path": "/name", "value": "renamed web"},
        {"op": "add", "path": "/os_distro", "value": "debian"},  # add replaces in v2.1
        {"op": "remove", "path": "/auto_disk_config"},
        {"op": "replace", "path": "/min_disk", "value": 20},
        {"op": "add", "path": "/tags", "value": ["a", "b", "a"]},
        {"op": "replace", "path": "/protected", "value": True},
    ])
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    image = r.json()
    assert image["com.example.source_image"] == "abc" and image["name"] == "renamed web"
    assert image["os_distro"] == "debian" and "auto_disk_config" not in image
    assert image["min_disk"] == 20 and image["protected"] is True
    assert sorted(image["tags"]) == ["a", "b"]
    assert image["updated_at"] >= before["updated_at"]
    for key in ("id", "size", "checksum", "status", "owner", "created_at", "visibility"):
        assert image[key] == before[key]
    assert api.get(f"/v2/images/{image_id}").json() == image  # stored, not just answered
    listed = api.get("/v2/images", params={"name": "renamed web"}).json()["images"]
    assert [i["id"] for i in listed] == [image_id]


@pytest.mark.parametrize("body, status, message", [
    ([{"op": "replace", "path": "/nope", "value": "x"}], 409, "Property nope does not exist."),
    ([{"op": "remove", "path": "/nope"}], 409, "Property nope does not exist."),
    ([{"op": "replace", "path": "/status", "value": "active"}], 403,
     "Attribute 'status' is read-only."),
    ([{"op": "replace", "path": "/id", "value": "x"}], 403, "Attribute 'id' is read-only."),
    ([{"op": "add", "path": "/os_glance_foo", "value": "x"}], 403,
     "Attribute 'os_glance_foo' is reserved."),
    ([{"op": "replace", "path": "/com.rackspace__1__options", "value": "0"}], 403,
     "Attribute 'com.rackspace__1__options' is reserved."),
    ([{"op": "replace", "path": "/owner", "value": "100002"}], 403,
     "Access was denied to this resource. Owner can't be updated by non admin."),
    ([{"op": "replace", "path": "/visibility", "value": "public"}], 403,
     "You are not authorized to complete publicize_image action."),
    ([{"op": "remove", "path": "/name"}], 403, "Property name may not be removed."),
    ([{"op": "frobnicate", "path": "/name", "value": "x"}], 400,
     "Invalid operation: `frobnicate`. It must be one of the following: add, remove, replace."),
    ([{"path": "/name", "value": "x"}], 400, "Unable to find `op` in JSON Schema change."),
    ([{"op": "add", "value": "x"}], 400, "Unable to find 'path' in JSON Schema change"),
    ([{"op": "add", "path": "/x"}], 400, 'Operation "add" requires a member named "value".'),
    ({"op": "add", "path": "/x", "value": "y"}, 400,
     "Request body must be a JSON array of operation objects."),
    (["add"], 400, "Operations must be JSON objects."),
    ([{"op": "add", "path": "/custom", "value": 5}], 400,
     "Provided object does not match schema 'image': 5 is not of type 'string'"),
    ([{"op": "replace", "path": "/min_disk", "value": "20"}], 400,
     "'20' is not of type 'integer'"),
    ([{"op": "replace", "path": "/visibility", "value": "everyone"}], 400,
     "'everyone' is not one of"),
    ([{"op": "replace", "path": "name", "value": "x"}], 400,
     'Pointer `name` does not start with "/".'),
    ([{"op": "replace", "path": "/a//b", "value": "x"}], 400,
     'Pointer `/a//b` contains adjacent "/".'),
    ([{"op": "replace", "path": "/a/b", "value": "x"}], 400,
     "Invalid JSON pointer for this resource: '/a/b'"),
    (b"[{", 400, "Malformed JSON in request body."),
    (b"", 400, "Body expected in request."),
])
def test_glances_error_answers(emu: EmulatorHandle, api: Api, body: Any, status: int,
                               message: str) -> None:
    image_id = emu.image_id("db")
    before = api.get(f"/v2/images/{image_id}").json()
    r = _patch(api, image_id, body)
    assert r.status_code == status, r.text
    assert message in _message(r)
    assert api.get(f"/v2/images/{image_id}").json() == before


def test_a_failing_operation_changes_nothing(emu: EmulatorHandle, api: Api) -> None:
    image_id = emu.image_id("small")
    before = api.get(f"/v2/images/{image_id}").json()
    r = _patch(api, image_id, [{"op": "replace", "path": "/name", "value": "half done"},
                               {"op": "remove", "path": "/does_not_exist"}])
    assert r.status_code == 409
    assert api.get(f"/v2/images/{image_id}").json() == before


def test_media_types(emu: EmulatorHandle, api: Api) -> None:
    image_id = emu.image_id("small")
    wrong = _patch(api, image_id, [{"op": "add", "path": "/k", "value": "v"}],
                   media="application/json")
    assert wrong.status_code == 415
    assert "Image PATCH expects Content-Type one of: " \
        "application/openstack-images-v2.0-json-patch, " \
        "application/openstack-images-v2.1-json-patch" in _message(wrong)
    assert wrong.headers["accept-patch"] == f"{V20}, {V21}"
    # The v2.0 dialect names the operation as a member, and its add never replaces.
    mixed = _patch(api, image_id, [{"op": "add", "path": "/k", "value": "v"}], media=V20)
    assert mixed.status_code == 400
    assert _message(mixed) == ('Operation objects must contain exactly one member named '
                               '"add", "remove", or "replace".')
    old_style = _patch(api, image_id, [{"add": "/k20", "value": "v"}], media=V20)
    assert old_style.status_code == 200 and old_style.json()["k20"] == "v"
    again = _patch(api, image_id, [{"add": "/k20", "value": "w"}], media=V20)
    assert again.status_code == 409 and _message(again) == "Property k20 already present."


def test_who_may_patch_what(emu: EmulatorHandle, api: Api, other: Api) -> None:
    mine = emu.image_id("rhel")
    missing = "00000000-0000-4000-8000-000000000000"
    for client, image_id in ((other, mine), (api, missing)):
        r = _patch(client, image_id, [{"op": "add", "path": "/k", "value": "v"}])
        assert r.status_code == 404 and _message(r) == f"No image found with ID {image_id}"
    base = emu.image_id("base-ubuntu")
    r = _patch(api, base, [{"op": "add", "path": "/k", "value": "v"}])
    assert r.status_code == 403
    assert _message(r) == "You are not authorized to complete modify_image action."
    no_token = httpx.patch(f"{emu.url}/v2/images/{mine}", content=b"[]",
                           headers={"Content-Type": V21})
    assert no_token.status_code == 401
    # Another region's image is not there at all.
    away = emu.image_id("rhel", region=emu.regions[1])
    r = _patch(api, away, [{"op": "add", "path": "/k", "value": "v"}])
    assert r.status_code == 404
    shared = _patch(api, mine, [{"op": "replace", "path": "/visibility", "value": "shared"}])
    assert shared.status_code == 200 and shared.json()["visibility"] == "shared"


def test_quotas(emu: EmulatorHandle, other: Api) -> None:
    image_id = emu.image_id("web", other.tenant)
    many = [{"op": "add", "path": f"/p{n}", "value": "x"} for n in range(130)]
    r = _patch(other, image_id, many)
    assert r.status_code == 413 and "number of allowed image properties" in _message(r)
    tags = _patch(other, image_id, [{"op": "add", "path": "/tags",
                                     "value": [f"t{n}" for n in range(129)]}])
    assert tags.status_code == 413 and "number of allowed image tags" in _message(tags)


def test_glanceclient_images_update(emu: EmulatorHandle, other: Api) -> None:
    from glanceclient import Client
    from glanceclient import exc as glance_exc

    glance = Client(endpoint=emu.image_endpoint, token=other.token)
    image_id = emu.image_id("db", other.tenant)
    updated = glance.images.update(image_id, name="db copy", os_version="7.9",
                                   min_ram=512, remove_props=["vm_mode"])
    assert updated["name"] == "db copy" and updated["os_version"] == "7.9"
    assert updated["min_ram"] == 512 and "vm_mode" not in updated
    shown = other.get(f"/v2/images/{image_id}").json()
    assert shown["name"] == "db copy" and "vm_mode" not in shown
    with pytest.raises(glance_exc.HTTPForbidden):
        glance.images.update(image_id, visibility="public")
    with pytest.raises(glance_exc.HTTPNotFound):
        glance.images.update(emu.image_id("db"), name="not mine")


def test_one_tag_at_a_time(emu: EmulatorHandle, api: Api, other: Api) -> None:
    from glanceclient import Client

    image_id = emu.image_id("old")  # deactivated images take metadata changes too
    url = f"/v2/images/{image_id}/tags"
    assert api.http.put(f"{url}/blue").status_code == 204
    assert api.http.put(f"{url}/blue").status_code == 204  # already there: still 204
    assert api.get(f"/v2/images/{image_id}").json()["tags"].count("blue") == 1
    assert api.http.delete(f"{url}/blue").status_code == 204
    missing = api.http.delete(f"{url}/blue", headers={"Accept": "application/json"})
    assert missing.status_code == 404
    assert "blue" not in api.get(f"/v2/images/{image_id}").json()["tags"]
    too_long = api.http.put(f"{url}/{'x' * 256}", headers={"Accept": "application/json"})
    assert too_long.status_code == 400 and "is too long" in _message(too_long)
    hidden = other.http.put(f"{url}/red", headers={"Accept": "application/json"})
    assert hidden.status_code == 404
    assert _message(hidden) == f"No image found with ID {image_id}"
    base = api.http.put(f"/v2/images/{emu.image_id('base-ubuntu')}/tags/red")
    assert base.status_code == 403
    glance = Client(endpoint=emu.image_endpoint, token=api.token)
    glance.image_tags.update(image_id, "green")
    assert "green" in api.get(f"/v2/images/{image_id}").json()["tags"]
    glance.image_tags.delete(image_id, "green")
    assert "green" not in api.get(f"/v2/images/{image_id}").json()["tags"]

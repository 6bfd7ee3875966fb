"""Real third-party clients, unchanged, against the emulator: python-glanceclient's CLI,
openstacksdk and python-swiftclient (CLI and library)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from imgtools.emulator import EmulatorHandle
from tests.emulator.helpers import Api


@pytest.fixture(scope="module")
def emu(emulator_in_process: EmulatorHandle) -> EmulatorHandle:
    """This module's emulator: the emulator tests' one, in this process (tests/conftest.py)."""
    return emulator_in_process


BIN = Path(sys.executable).parent


def _run(tool: str, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    # A private HOME: glanceclient caches the schemas it fetched under ~/.glanceclient.
    env = {**os.environ, "HOME": str(home)}
    for name in list(env):
        if name.startswith(("OS_", "ST_")):
            del env[name]
    return subprocess.run([str(BIN / tool), *args], capture_output=True, text=True, env=env,
                          timeout=60)


# Importing glanceclient takes seconds here (jsonschema builds its format grammars), so the
# commands run through glanceclient's own console entry point, ``glanceclient.shell.main``,
# one after another in a single process; each gets the argv the ``glance`` script would.
_DRIVER = """
import contextlib, io, json, sys
from glanceclient.shell import main
out = []
for argv in json.loads(sys.argv[1]):
    stdout, stderr, code = io.StringIO(), io.StringIO(), 0
    sys.argv = ["glance", *argv]
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            code = main() or 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    out.append([code, stdout.getvalue(), stderr.getvalue()])
print(json.dumps(out))
"""


def _glance(emu: EmulatorHandle, token: str, home: Path,
            *commands: list[str]) -> list[tuple[int, str, str]]:
    base = ["--os-image-url", emu.url, "--os-auth-token", token]
    argv = json.dumps([base + list(c) for c in commands])
    done = _run("python", "-c", _DRIVER, argv, home=home)
    assert done.returncode == 0, done.stderr
    return [tuple(r) for r in json.loads(done.stdout.splitlines()[-1])]  # type: ignore[misc]


def _table(stdout: str) -> dict[str, str]:
    """``| key | value |`` rows of a glance ``*-show`` table."""
    rows: dict[str, str] = {}
    key = ""
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and not line.startswith("+"):
            if cells[0]:
                key = cells[0]
                rows[key] = cells[1]
            elif key:
                rows[key] += cells[1]
    return rows


def test_glanceclient_cli(emu: EmulatorHandle, api: Api, container: str,
                          tmp_path: Path) -> None:
    image_id = emu.image_id("web")
    first = api.wait(api.export(image_id, container)["id"])
    for slug in ("db", "small"):  # three tasks, so --page-size 2 follows "next" twice
        api.wait(api.export(emu.image_id(slug), container)["id"])
    other_container = api.container()
    results = _glance(
        emu, api.token, tmp_path,
        ["task-create", "--type", "export", "--input", json.dumps(
            {"image_uuid": image_id, "receiving_swift_container": other_container})],
        ["task-show", first["id"]],
        ["task-list", "--status", "success", "--type", "export", "--page-size", "2",
         "--sort-key", "id", "--sort-dir", "asc"],
        ["task-show", "00000000-0000-0000-0000-000000000000"],
        ["task-list", "--status", "bogus"],
    )
    (c_code, c_out, c_err), (s_code, s_out, s_err), (l_code, l_out, l_err), missing, bogus = \
        results
    assert c_code == 0, c_err
    created = _table(c_out)
    assert created["status"] == "pending" and created["type"] == "export"
    assert json.loads(created["input"])["receiving_swift_container"] == other_container
    assert api.wait(created["id"])["status"] == "success"

    assert s_code == 0, s_err
    details = _table(s_out)
    assert details["status"] == "success"
    assert json.loads(details["result"]) == {"export_location": f"{container}/{image_id}.vhd"}
    assert details["expires_at"].endswith("Z")

    assert l_code == 0, l_err
    ids = re.findall(r"^\| ([0-9a-f-]{36}) \| export\s+\| success", l_out, re.M)
    expected = {t["id"] for t in api.get("/v2/tasks", params={
        "status": "success", "type": "export", "limit": 1000}).json()["tasks"]}
    assert set(ids) | {created["id"]} >= expected - {created["id"]} and len(ids) >= 3
    assert ids == sorted(ids)

    assert missing[0] == 1
    assert "HTTP 404 Not Found: Could not find task 00000000-0000-0000-0000-000000000000" \
        in missing[2]
    assert bogus[0] == 1
    assert "HTTP 400 Bad Request: Invalid status value: bogus" in bogus[2]


@pytest.mark.parametrize("override", ["root", "v2"])
def test_openstacksdk(emu: EmulatorHandle, api: Api, container: str, override: str) -> None:
    import openstack
    from openstack import exceptions

    endpoint = emu.url if override == "root" else emu.image_endpoint
    conn = openstack.connect(auth_type="admin_token",
                             auth={"token": api.token, "endpoint": emu.url},
                             image_endpoint_override=endpoint, image_api_version="2")
    try:
        task = conn.image.create_task(type="export", input={
            "image_uuid": emu.image_id("small"), "receiving_swift_container": container})
        assert task.status == "pending" and task.owner_id == api.tenant
        done = conn.image.wait_for_task(task, status="success", failures=["failure"],
                                        interval=0.1, wait=30)
        assert done.result == {"export_location": f"{container}/{emu.image_id('small')}.vhd"}
        assert done.expires_at is not None
        listed = list(conn.image.tasks(limit=1000))
        assert task.id in {t.id for t in listed}
        assert len(listed) == len(api.get("/v2/tasks", params={"limit": 1000}).json()["tasks"])
        filtered = list(conn.image.tasks(status="success", type="export", limit=2))
        assert filtered and all(t.status == "success" for t in filtered)
        failing = conn.image.create_task(type="export", input={
            "image_uuid": emu.image_id("windows"), "receiving_swift_container": container})
        with pytest.raises(exceptions.ResourceFailure):
            conn.image.wait_for_task(failing, interval=0.1, wait=30)
        with pytest.raises(exceptions.NotFoundException, match="Could not find task"):
            conn.image.get_task("00000000-0000-0000-0000-000000000000")
        with pytest.raises(exceptions.BadRequestException, match="is not one of"):
            conn.image.create_task(type="copy", input={})
    finally:
        conn.close()


def test_swiftclient_cli_downloads_the_export(emu: EmulatorHandle, api: Api, container: str,
                                              tmp_path: Path) -> None:
    image_id = emu.image_id("web")
    assert api.wait(api.export(image_id, container)["id"])["status"] == "success"
    base = ["--os-storage-url", emu.storage_url(api.tenant), "--os-auth-token", api.token]
    stat = _run("swift", *base, "stat", home=tmp_path)
    assert stat.returncode == 0, stat.stderr
    assert re.search(r"Account: MossoCloudFS_100001", stat.stdout)
    listed = _run("swift", *base, "list", container, home=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == [f"{image_id}.vhd"] + [
        f"{image_id}.vhd-{n:05d}" for n in range(1, 5)]
    target = tmp_path / "export.vhd"
    got = _run("swift", *base, "download", container, f"{image_id}.vhd", "-o", str(target),
               home=tmp_path)
    assert got.returncode == 0, got.stderr
    assert target.read_bytes() == api.image_bytes(image_id)


def test_swiftclient_library(emu: EmulatorHandle, api: Api, container: str) -> None:
    from swiftclient import client as swift
    from swiftclient.exceptions import ClientException

    image_id = emu.image_id("db")
    api.wait(api.export(image_id, container)["id"])
    conn = swift.Connection(preauthurl=emu.storage_url(api.tenant), preauthtoken=api.token,
                            retries=0)
    headers = conn.head_container(container)
    assert int(headers["x-container-object-count"]) == 3
    _, objects = conn.get_container(container, full_listing=True)
    segments = [o for o in objects if o["name"].startswith(f"{image_id}.vhd-")]
    assert [o["bytes"] for o in segments] == [64 * 1024, 64 * 1024]
    head, body = conn.get_object(container, f"{image_id}.vhd")
    assert body == api.image_bytes(image_id)
    assert head["x-object-manifest"] == f"{container}/{image_id}.vhd-"
    _, part = conn.get_object(container, f"{image_id}.vhd", headers={"Range": "bytes=0-99"})
    assert part == body[:100]
    with pytest.raises(ClientException) as caught:
        conn.head_object(container, "nope")
    assert caught.value.http_status == 404
    conn.close()

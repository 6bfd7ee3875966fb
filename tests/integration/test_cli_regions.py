"""The command line's regions and imports against the emulator: ``--region``,
``imgtools import``, and ``tasks``/``audit`` with ``--region all``; and the README's example of
regions and imports, run as written."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from imgtools._embedded import CREDENTIAL_VARIABLES
from imgtools.cli import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK
from imgtools.emulator import EmulatorHandle
from imgtools.emulator import vhd as vhd_format
from tests.client_support import DEMO, fresh_container
from tests.client_support import run_cli as run


@pytest.fixture(scope="module")
def emu(emulator_in_subprocess: EmulatorHandle) -> EmulatorHandle:
    """This module's emulator: the client tests' one, in a subprocess (tests/conftest.py)."""
    return emulator_in_subprocess


def upload(emu: EmulatorHandle, region: str, data: bytes) -> str:
    container = fresh_container("cli-imp")
    base = emu.storage_url(DEMO, region)
    with httpx.Client(headers={"X-Auth-Token": emu.token()}) as http:
        http.put(f"{base}/{container}").raise_for_status()
        http.put(f"{base}/{container}/disk.vhd", content=data).raise_for_status()
    return f"{container}/disk.vhd"


def _vhd() -> bytes:
    return bytes(4096) + vhd_format.make_footer(4096, uuid.uuid4())


def test_import_wait_prints_the_new_image(as_demo: EmulatorHandle,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    location = upload(as_demo, "DFW", _vhd())
    code, out, err = run("import", location, "--name", "from-cli", "--wait", "--region", "DFW",
                         "--format", "json", capsys=capsys)
    assert code == EXIT_OK, err
    task = json.loads(out)
    assert (task["type"], task["status"]) == ("import", "success")
    assert task["input"]["import_from"] == location
    image_id = task["result"]["image_id"]
    with httpx.Client(headers={"X-Auth-Token": as_demo.token()}) as http:
        here = http.get(f"{as_demo.image_endpoint_for('DFW')}/images/{image_id}")
        there = http.get(f"{as_demo.image_endpoint_for('ORD')}/images/{image_id}")
    assert here.json()["name"] == "from-cli" and there.status_code == 404


def test_import_refusals_and_failures_exit_as_documented(as_demo: EmulatorHandle,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    location = upload(as_demo, "IAD", _vhd())
    # In another region the object does not exist: refused before any task.
    code, _, err = run("import", location, "--name", "x", "--region", "DFW", capsys=capsys)
    assert code == EXIT_BAD_INPUT and "ImportSourceNotFound" in err and "DFW" in err
    code, _, err = run("import", "no-slash", "--name", "x", capsys=capsys)
    assert code == EXIT_BAD_INPUT and "ValidationError" in err
    code, _, err = run("import", location, "--name", "x", "--region", "LON", capsys=capsys)
    assert code == EXIT_BAD_INPUT and "UnknownRegion" in err and "ORD, DFW, IAD" in err
    code, _, err = run("import", location, "--name", "x", "--region", "all", capsys=capsys)
    assert code == EXIT_BAD_INPUT and "tasks and audit only" in err
    bad = upload(as_demo, "IAD", b"junk" * 512)
    code, _, err = run("import", bad, "--name", "x", "--region", "IAD", "--wait", capsys=capsys)
    assert code == EXIT_FAILED and "ImportFailed" in err and "Error code: '396'" in err
    code, out, err = run("import", location, "--name", "later", "--region", "IAD",
                         "--format", "json", capsys=capsys)
    assert code == EXIT_OK, err
    assert json.loads(out)["status"] in ("pending", "processing", "success")


def test_tasks_and_audit_over_every_region(as_demo: EmulatorHandle,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    ids = {}
    for region in ("ORD", "DFW", "IAD"):
        code, out, err = run("import", upload(as_demo, region, _vhd()), "--name", "r",
                             "--wait", "--region", region, "--format", "json", capsys=capsys)
        assert code == EXIT_OK, err
        ids[region] = json.loads(out)["id"]
    code, out, err = run("tasks", "--region", "all", "--format", "json", capsys=capsys)
    assert code == EXIT_OK, err
    rows = json.loads(out)
    where = {row["id"]: row["region"] for row in rows}
    assert {region: where[task_id] for region, task_id in ids.items()} == \
        {"ORD": "ORD", "DFW": "DFW", "IAD": "IAD"}
    assert len(where) == len(rows)  # no task listed twice
    # One region only: the other region's task is not there.
    code, out, _ = run("tasks", "--region", "DFW", "--format", "json", capsys=capsys)
    listed = {row["id"] for row in json.loads(out)}
    assert ids["DFW"] in listed and ids["IAD"] not in listed
    code, out, _ = run("tasks", "--region", "all", capsys=capsys)
    assert code == EXIT_OK and out.splitlines()[0].split()[0] == "region"
    code, out, err = run("audit", "--region", "all", capsys=capsys)
    assert code == EXIT_OK, err
    section = out.split("== by_region ==")[1]
    table = {line.split()[0]: line.split() for line in section.strip().splitlines()[2:]}
    assert {"DFW", "IAD", "ORD", "total"} <= set(table)
    assert int(table["total"][-1]) == sum(int(table[r][-1]) for r in table if r != "total")


def test_the_readmes_regions_example_runs(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Regions, ServiceNet and imports", 1)[1]
    block = re.search(r"```py\n(.*?)```", section, flags=re.S)
    assert block is not None
    env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_VARIABLES}
    env["IMGTOOLS_LOG"] = str(tmp_path / "log.sqlite")
    proc = subprocess.run([sys.executable, "-c", block.group(1)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "DFW 100001 ('ORD', 'DFW', 'IAD')"
    assert re.fullmatch(r"[0-9a-f-]{36} .+ \(copy\)", lines[1])
    assert lines[2:] == ["not in IAD", "object not found"]

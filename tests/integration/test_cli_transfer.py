"""``imgtools transfer`` / ``transfers`` / ``transfer --resume`` against the emulator: a
transfer to another region and to another account, the listing, a resume, bad input, and the
exit codes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from imgtools._embedded import CREDENTIAL_VARIABLES
from imgtools.cli import EXIT_BAD_INPUT, EXIT_OK
from imgtools.emulator import EmulatorHandle
from imgtools.transfer import STEPS, TransferStore
from tests.client_support import DB, WEB, WINDOWS, fresh_container, make_client
from tests.client_support import run_cli as run


@pytest.fixture(scope="module")
def emu(emulator_in_subprocess: EmulatorHandle) -> EmulatorHandle:
    """This module's emulator: the client tests' one, in a subprocess (tests/conftest.py)."""
    return emulator_in_subprocess


def test_transfer_wait_then_transfers_lists_it(as_demo: EmulatorHandle,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    container = fresh_container("cli")
    code, out, err = run("transfer", WEB, "--to-region", "IAD", "--container", container,
                         "--name", "web in IAD", "--cleanup", "--wait", "--format", "json",
                         capsys=capsys)
    assert code == EXIT_OK, err
    [row] = json.loads(out)
    assert (row["status"], row["source_region"], row["target_region"]) == ("done", "ORD", "IAD")
    assert "copy: done" in err and "cleanup: done" in err
    with make_client(as_demo, region="IAD") as iad:
        image = iad.get_image(row["target_image"])
        assert image.name == "web in IAD" and image.checksum == row["copy_md5"]
        assert not iad.files.container_exists(container) or \
            list(iad.files.objects(container)) == []
    code, out, _ = run("transfers", capsys=capsys)
    assert code == EXIT_OK and row["id"] in out and "done" in out
    code, out, _ = run("transfers", "--format", "json", capsys=capsys)
    assert [r["id"] for r in json.loads(out)] == [row["id"]]


def test_transfer_without_wait_stops_after_the_export_and_resume_finishes(
        as_demo: EmulatorHandle, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run("transfer", DB, "--to-region", "DFW", "--container",
                         fresh_container("cli"), "--format", "json", capsys=capsys)
    assert code == EXIT_OK, err
    [row] = json.loads(out)
    assert (row["status"], row["step"]) == ("running", "export")
    assert f"imgtools transfer --resume {row['id']}" in err
    code, out, err = run("transfer", "--resume", row["id"], "--format", "json", capsys=capsys)
    assert code == EXIT_OK, err
    [done] = json.loads(out)
    assert done["status"] == "done" and done["export_task"] == row["export_task"]
    [rec] = TransferStore().records()
    assert rec.id == row["id"] and rec.target_image == done["target_image"]


def test_transfer_to_another_account(as_demo: EmulatorHandle, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("IMGTOOLS_TO_USERNAME", "other")
    monkeypatch.setenv("IMGTOOLS_TO_API_KEY", "other-key")
    code, out, err = run("transfer", DB, "--to-account", "100002", "--container",
                         fresh_container("cli"), "--wait", "--format", "json", capsys=capsys)
    assert code == EXIT_OK, err
    [row] = json.loads(out)
    assert (row["target_account"], row["target_region"], row["status"]) == (
        "100002", "ORD", "done")
    code, _, err = run("transfer", DB, "--to-account", "999999", "--wait", capsys=capsys)
    assert code == EXIT_BAD_INPUT and "not 999999" in err


@pytest.mark.parametrize("argv", [
    ("transfer", "--to-region", "IAD"),
    ("transfer", WEB),
    ("transfer", "not-a-uuid", "--to-region", "IAD"),
    ("transfer", WEB, "--to-region", "IAD", "--cleanup", "--keep-export"),
    ("transfer", "--resume", "no-such-transfer"),
])
def test_bad_input_exits_2(as_demo: EmulatorHandle, capsys: pytest.CaptureFixture[str],
                           argv: tuple[str, ...]) -> None:
    code, _, err = run(*argv, capsys=capsys)
    assert code == EXIT_BAD_INPUT, err


def test_a_refused_image_exits_2_and_is_listed_failed(
        as_demo: EmulatorHandle, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run("transfer", WINDOWS, "--to-region", "IAD", "--wait", capsys=capsys)
    assert code == EXIT_BAD_INPUT and "TransferFailed" in err and "preflight" in err
    code, out, _ = run("transfers", "--format", "json", capsys=capsys)
    [row] = json.loads(out)
    assert row["status"] == "failed" and row["error"].startswith("preflight")


def test_the_readmes_transfer_example_runs(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Moving an image to another region or account", 1)[1]
    block = re.search(r"```py\n(.*?)```", section, flags=re.S)
    assert block is not None
    env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_VARIABLES}
    env["IMGTOOLS_LOG"] = str(tmp_path / "log.sqlite")
    proc = subprocess.run([sys.executable, "-c", block.group(1)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"done IAD {len(STEPS)}"
    assert lines[1] == "ORD True"
    assert re.search(r"ORD\s+IAD\s+\d+\s+done", lines[-1])

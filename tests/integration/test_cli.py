"""The ``imgtools`` command against the emulator: outputs, exit codes, one-line errors, and no
secret in anything it prints."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from imgtools.cli import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, EXIT_SERVICE, EXIT_TIMEOUT
from imgtools.emulator import EmulatorHandle, start_emulator
from tests.client_support import FAST, WEB, WINDOWS, fresh_container
from tests.client_support import run_cli as run


@pytest.fixture(scope="module")
def emu(emulator_in_subprocess: EmulatorHandle) -> EmulatorHandle:
    """This module's emulator: the client tests' one, in a subprocess (tests/conftest.py)."""
    return emulator_in_subprocess


def _export(capsys: pytest.CaptureFixture[str], image: str = WEB) -> dict[str, object]:
    code, out, err = run("export", image, "--container", fresh_container("cli"),
                         "--create-container", "--wait", "--format", "json", capsys=capsys)
    assert code == EXIT_OK, err
    task: dict[str, object] = json.loads(out)
    return task


def test_export_wait_prints_the_final_task(as_demo: EmulatorHandle,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    task = _export(capsys)
    assert task["status"] == "success"
    assert str(task["result"]).endswith(".vhd'}")
    code, out, _ = run("task", str(task["id"]), capsys=capsys)
    assert code == EXIT_OK
    assert json.loads(out)["id"] == task["id"]


def test_export_without_wait_returns_the_pending_task(as_demo: EmulatorHandle,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run("export", WEB, "--container", fresh_container("nw"), "--create-container",
                       capsys=capsys)
    assert code == EXIT_OK
    assert "pending" in out and "export" in out


def test_not_exportable_is_bad_input_with_one_line(as_demo: EmulatorHandle,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run("export", WINDOWS, "--container", fresh_container("w"),
                       "--create-container", capsys=capsys)
    assert code == EXIT_BAD_INPUT
    assert err.count("\n") == 1 and "NotExportable" in err
    assert "Traceback" not in err


def test_failed_task_exits_1(as_demo: EmulatorHandle, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run("export", WINDOWS, "--container", fresh_container("w"),
                       "--create-container", "--no-preflight", "--wait", capsys=capsys)
    assert code == EXIT_FAILED
    assert "TaskFailed" in err and "licensing" in err


@pytest.mark.parametrize("argv", [
    ("export", "not-a-uuid", "--container", "c"),
    ("export", WEB, "--container", "a/b"),
    ("export", WEB, "--container", "c", "--timeout", "-1"),
    ("task", "nope"),
    ("tasks", "--since", "yesterday-ish"),
    ("frobnicate",),
])
def test_bad_input_exits_2(as_demo: EmulatorHandle, capsys: pytest.CaptureFixture[str],
                           argv: tuple[str, ...]) -> None:
    code, _, err = run(*argv, capsys=capsys)
    assert code == EXIT_BAD_INPUT
    assert "Traceback" not in err


def test_no_credentials_says_how(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run("tasks", capsys=capsys)
    assert code == EXIT_BAD_INPUT
    assert "API_ENDPOINT" in err and "emulator" in err


def test_wait_exit_codes(as_demo: EmulatorHandle, capsys: pytest.CaptureFixture[str]) -> None:
    good = _export(capsys)
    code, out, _ = run("wait", str(good["id"]), capsys=capsys)
    assert code == EXIT_OK and "success" in out
    code, out, _ = run("export", WINDOWS, "--container", fresh_container("w"),
                       "--create-container", "--no-preflight", "--format", "json",
                       capsys=capsys)
    bad = json.loads(out)
    code, out, _ = run("wait", str(good["id"]), str(bad["id"]), capsys=capsys)
    assert code == EXIT_FAILED
    assert "failure" in out and "success" in out


def test_wait_timeout_exits_3(capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    slow = FAST.replace(pending_delay=30.0)
    with start_emulator(config=slow, subprocess=True) as emu:
        monkeypatch.setenv("RAX_USERNAME", "demo")
        monkeypatch.setenv("RAX_API_KEY", "demo-key")
        monkeypatch.setenv("IMGTOOLS_IDENTITY_URL", emu.identity_url)
        code, out, _ = run("export", WEB, "--container", fresh_container("slow"),
                           "--create-container", "--format", "json", capsys=capsys)
        assert code == EXIT_OK
        task_id = json.loads(out)["id"]
        code, _, _ = run("wait", task_id, "--timeout", "0.3", capsys=capsys)
        assert code == EXIT_TIMEOUT


def test_tasks_formats_and_log(as_demo: EmulatorHandle,
                               capsys: pytest.CaptureFixture[str]) -> None:
    task = _export(capsys)
    code, out, _ = run("tasks", "--format", "csv", capsys=capsys)
    assert code == EXIT_OK
    rows = list(csv.DictReader(io.StringIO(out)))
    assert task["id"] in {r["id"] for r in rows}
    assert {"id", "type", "status", "created_at", "duration", "message"} <= set(rows[0])
    code, out, _ = run("tasks", "--format", "json", "--status", "success", capsys=capsys)
    assert code == EXIT_OK
    assert {r["status"] for r in json.loads(out)} == {"success"}
    # The local audit log holds the full task, with its input.
    code, out, _ = run("tasks", "--from", "log", "--format", "json", capsys=capsys)
    assert code == EXIT_OK
    logged = {r["id"]: r for r in json.loads(out)}
    assert logged[str(task["id"])]["image_id"] == WEB
    code, out, _ = run("tasks", "--from", "all", "--since", "1d", capsys=capsys)
    assert code == EXIT_OK and str(task["id"]) in out
    code, out, _ = run("audit", capsys=capsys)
    assert code == EXIT_OK
    assert "== counts ==" in out and "== failures ==" in out


def test_tasks_and_audit_filter_by_region_and_account(as_demo: EmulatorHandle,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    task = _export(capsys)
    code, out, _ = run("tasks", "--from", "log", "--format", "json", capsys=capsys)
    logged = {r["id"]: r for r in json.loads(out)}
    account = logged[str(task["id"])]["account"]
    assert account and logged[str(task["id"])]["region"] == "ORD"  # the login's default region
    for source in ("log", "service", "all"):
        code, out, _ = run("tasks", "--from", source, "--account", str(account),
                           "--account", "another", "--format", "json", capsys=capsys)
        assert code == EXIT_OK and str(task["id"]) in {r["id"] for r in json.loads(out)}
        code, out, _ = run("tasks", "--from", source, "--account", "another", capsys=capsys)
        assert code == EXIT_OK and out.strip() == "no tasks"
        code, out, _ = run("tasks", "--from", source, "--region", "ORD", "--format", "json",
                           capsys=capsys)
        assert code == EXIT_OK and str(task["id"]) in {r["id"] for r in json.loads(out)}
        code, out, _ = run("tasks", "--from", source, "--region", "DFW", "--format", "json",
                           capsys=capsys)
        assert code == EXIT_OK and str(task["id"]) not in {r["id"] for r in json.loads(out)}
        code, out, _ = run("tasks", "--from", source, "--region", "all", "--format", "json",
                           capsys=capsys)
        assert code == EXIT_OK and str(task["id"]) in {r["id"] for r in json.loads(out)}
    code, out, _ = run("audit", "--by", "account", "--format", "json", capsys=capsys)
    assert code == EXIT_OK
    counts = json.loads(out.splitlines()[0])["counts"]
    assert counts["index"] == [account, "total"]


@pytest.mark.parametrize("fsync", [False, True])
def test_verify_and_download(as_demo: EmulatorHandle, capsys: pytest.CaptureFixture[str],
                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             fsync: bool) -> None:
    synced: list[int] = []
    monkeypatch.setattr("imgtools._files.os.fsync", synced.append)
    task = _export(capsys)
    code, out, _ = run("verify", str(task["id"]), capsys=capsys)
    assert code == EXIT_OK and "OK" in out
    dest = tmp_path / "web.vhd"
    flags = ["--fsync"] if fsync else []
    code, out, _ = run("download", str(task["id"]), str(dest), "--no-progress", *flags,
                       capsys=capsys)
    assert code == EXIT_OK and "verified" in out
    assert len(synced) == (1 if fsync else 0)
    token = as_demo.token()
    import httpx

    image = httpx.get(f"{as_demo.image_endpoint}/images/{WEB}/file",
                      headers={"X-Auth-Token": token}).content
    assert hashlib.md5(dest.read_bytes()).digest() == hashlib.md5(image).digest()


def test_service_errors_exit_4_without_secrets(emu: EmulatorHandle,
                                               capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "tok-" + "9" * 28
    monkeypatch.setenv("API_ENDPOINT", emu.image_endpoint)
    monkeypatch.setenv("AUTH_TOKEN", secret)
    code, out, err = run("tasks", capsys=capsys)
    assert code == EXIT_SERVICE
    assert "401" in err
    assert secret not in out + err
    monkeypatch.setenv("API_ENDPOINT", "http://127.0.0.1:9/v2")  # nothing listens there
    code, out, err = run("tasks", capsys=capsys)
    assert code == EXIT_SERVICE
    assert secret not in out + err


def test_api_key_never_printed(emu: EmulatorHandle, capsys: pytest.CaptureFixture[str],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAX_USERNAME", "demo")
    monkeypatch.setenv("RAX_API_KEY", "wrong-key-5f3a9c")
    monkeypatch.setenv("IMGTOOLS_IDENTITY_URL", emu.identity_url)
    code, out, err = run("tasks", capsys=capsys)
    assert code == EXIT_SERVICE
    assert "wrong-key-5f3a9c" not in out + err


def test_help_everywhere(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["export"], ["task"], ["tasks"], ["wait"], ["download"], ["verify"],
                 ["audit"]):
        code, out, _ = run(*argv, "--help", capsys=capsys)
        assert code == EXIT_OK
        assert "usage: imgtools" in out


def test_console_script() -> None:
    exe = Path(sys.executable).with_name("imgtools")
    proc = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60,
                          env={**os.environ})
    assert proc.returncode == 0, proc.stderr
    assert "Exit codes" in proc.stdout
    proc = subprocess.run([str(exe), "emulator", "--help"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and "--data-dir" in proc.stdout

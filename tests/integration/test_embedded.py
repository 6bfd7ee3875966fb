"""The bridge between the client and the embedded emulator (``imgtools._embedded``): the demo
user, the fast-poll rule, and above all that tasks seen through the emulator never enter the
log that real-service tasks use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import imgtools
from imgtools._embedded import (
    CREDENTIAL_VARIABLES,
    EMULATOR_ENV,
    demo_user,
    emulator_environ,
    emulator_log_path,
    emulator_wanted,
    is_local,
    poll_policy,
)
from imgtools.emulator import DEFAULT_USERS, EmulatorConfig, User

WEB_TASK = {"id": "real-task-1", "type": "export", "status": "success",
            "created_at": "2026-11-01T10:00:00Z", "updated_at": "2026-11-01T10:05:00Z",
            "input": {"image_uuid": "11111111-2222-3333-4444-555555555555",
                      "receiving_swift_container": "real-exports"},
            "result": {"export_location": "real-exports/1111.vhd"}, "message": ""}


def _clean_env(home: Path) -> dict[str, str]:
    """No credentials, no IMGTOOLS_LOG, and a user data dir of our own (platformdirs reads
    XDG_DATA_HOME), so the default log is ``home/imgtools/tasks.sqlite``."""
    env = {k: v for k, v in os.environ.items()
           if k not in CREDENTIAL_VARIABLES and k not in (EMULATOR_ENV, "IMGTOOLS_LOG")}
    env["XDG_DATA_HOME"] = str(home)
    return env


def prefilled_default_log(home: Path, count: int = 3) -> Path:
    """The default log under ``home``, holding ``count`` tasks from a "real" service."""
    path = home / "imgtools" / "tasks.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    with imgtools.TaskLog(path) as log:
        log.record([imgtools.Task.from_json({**WEB_TASK, "id": f"real-task-{i}"})
                    for i in range(count)])
    return path


def _task_ids(path: Path) -> set[str]:
    with imgtools.TaskLog(path) as log:
        return {task.id for task in log.tasks()}


# -- decided once ---------------------------------------------------------------------------


def test_the_demo_user_is_the_emulators_own() -> None:
    assert demo_user() is DEFAULT_USERS[0]
    assert EmulatorConfig().users[0] == demo_user()


@pytest.mark.parametrize(("target", "fast"), [
    ("http://127.0.0.1:8777/v2", True), ("http://localhost:1/v2", True),
    ("http://[::1]:8777/v2", True), ("https://iad.images.api.rackspacecloud.com/v2", False),
    (SimpleNamespace(endpoint="http://127.0.0.2:9/v2"), True),
    (SimpleNamespace(endpoint="https://dfw.images.api.rackspacecloud.com/v2"), False),
    (SimpleNamespace(endpoint=None), False), ("", False),
])
def test_poll_fast_on_loopback_only(target: object, fast: bool) -> None:
    assert is_local(target) is fast
    assert poll_policy(target) == (imgtools.PollPolicy.fast() if fast else None)


@pytest.mark.parametrize(("argument", "env", "wanted"), [
    (True, "", True), (False, "1", False), (None, "1", True), (None, "yes", True),
    (None, "0", False), (None, "", False),
])
def test_emulator_wanted(argument: bool | None, env: str, wanted: bool) -> None:
    assert emulator_wanted(argument, {EMULATOR_ENV: env}) is wanted


def test_the_lab_environment_logs_in_as_the_demo_user_and_keeps_its_own_log(
        tmp_path: Path) -> None:
    user = User("lab-user", "lab-key-0c1d", "424242")
    handle: Any = SimpleNamespace(config=EmulatorConfig(users=(user,)),
                                  identity_url="http://127.0.0.1:9/v2.0", data_dir=tmp_path)
    base = {"PATH": "/bin", "AUTH_TOKEN": "a-real-token", "API_ENDPOINT": "https://x/v2",
            "OS_PASSWORD": "pw", EMULATOR_ENV: "1"}
    env = emulator_environ(handle, base)
    assert env == {"PATH": "/bin", "RAX_USERNAME": "lab-user", "RAX_API_KEY": "lab-key-0c1d",
                   "IMGTOOLS_IDENTITY_URL": "http://127.0.0.1:9/v2.0",
                   "IMGTOOLS_LOG": str(emulator_log_path(tmp_path))}
    # A log named explicitly is kept.
    explicit = emulator_environ(handle, {**base, "IMGTOOLS_LOG": "/data/mine.sqlite"})
    assert explicit["IMGTOOLS_LOG"] == "/data/mine.sqlite"


# -- connect(emulator=True): its own log --------------------------------------------------

SCRIPT = """
import asyncio, json, os, sys
import imgtools

out = {}
with imgtools.connect(emulator=True) as client:
    out["endpoint"] = client.endpoint
    out["poll_initial"] = client.poll.initial
    out["log"] = str(client.log.path)
    image = next(i for i in client.images() if client.exportability(i).ok)
    task = client.begin_export(image.id, "bridge-test", create_container=True)
    out["task"] = task.wait(timeout=60).id
    out["in_log"] = client.log.get(out["task"]) is not None

async def main():
    async with await imgtools.connect_async(emulator=True) as client:
        out["async_log"] = str(client.log.path)
        out["async_endpoint"] = client.endpoint

asyncio.run(main())
with imgtools.connect(emulator=True, log=False) as client:
    out["log_false"] = repr(client.log)
os.environ["IMGTOOLS_LOG"] = sys.argv[1]
with imgtools.connect(emulator=True) as client:
    out["explicit_log"] = str(client.log.path)
print(json.dumps(out))
"""


def test_connect_emulator_records_beside_the_emulator_not_in_the_default_log(
        tmp_path: Path) -> None:
    """The user's default log already holds real tasks; ``connect(emulator=True)`` (sync and
    async) records into the log beside the emulator's data, and leaves the default alone."""
    default = prefilled_default_log(tmp_path / "home")
    before = _task_ids(default)
    explicit = tmp_path / "explicit.sqlite"
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(explicit)],
                         env=_clean_env(tmp_path / "home"), capture_output=True, text=True,
                         timeout=180, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.splitlines()[-1])
    log = Path(out["log"])
    assert log.name == "imgtools-tasks.sqlite" and log != default
    assert out["async_log"] == out["log"] and out["async_endpoint"] == out["endpoint"]
    assert is_local(out["endpoint"]) and out["poll_initial"] == imgtools.PollPolicy.fast().initial
    assert out["log_false"] == "None"
    assert out["explicit_log"] == str(explicit)
    # The default log is exactly as it was; the export went nowhere near it.
    assert _task_ids(default) == before
    assert out["in_log"] and out["task"] not in before


def test_cli_emulator_audits_only_what_the_emulator_saw(tmp_path: Path) -> None:
    """``imgtools tasks --emulator --from all`` merges the service with the client's log: the
    emulator's, so the default log's real tasks stay out of it."""
    default = prefilled_default_log(tmp_path / "home")
    run = subprocess.run([sys.executable, "-m", "imgtools", "tasks", "--emulator", "--from",
                          "all", "--format", "json"], env=_clean_env(tmp_path / "home"),
                         capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    listed = {row["id"] for row in json.loads(run.stdout)}
    assert not listed & _task_ids(default)


def test_cli_runs_the_commands_with_their_own_command_line(
        capsys: pytest.CaptureFixture[str]) -> None:
    from imgtools.cli import main

    for command in ("lab", "runbook", "emulator"):
        with pytest.raises(SystemExit) as stop:
            main([command, "--help"])
        assert stop.value.code == 0
        assert f"usage: {'imgtools' if command != 'emulator' else ''}" in capsys.readouterr().out

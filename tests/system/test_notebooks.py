"""The notebooks: committed clean, run top to bottom under nbval, the runbook under papermill
(a run that succeeds and one that must fail), and no secret in any executed copy.

Kernels get their credentials from the environment, as a user's would: the emulator's
identity URL with a username and API key, or an endpoint and a token.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from imgtools._embedded import emulator_environ, emulator_log_path
from imgtools.emulator import EmulatorConfig, EmulatorHandle, User, start_emulator
from imgtools.lab import CREDENTIAL_VARIABLES, notebooks_dir
from imgtools.runbook import EXIT_FAILED, EXIT_OK, RUNBOOK, main

NOTEBOOKS = sorted(notebooks_dir().glob("*.ipynb"))
#: Past tasks seeded into each region of the emulators here; the audit notebook's checked
#: summary counts them in every region (plus the two exports notebooks 01 and 02 make).
SEEDED = 40
#: A recognisable API key, so the test can prove it never reaches a notebook.
API_KEY = "sekrit-api-key-5e1f0c2b7d"
CHECK = "NBVAL_CHECK_OUTPUT"


def _emulator_config() -> EmulatorConfig:
    return EmulatorConfig(users=(User("demo", API_KEY, "100001"),),
                          pending_delay=0.1, export_speed=64 * 1024 * 1024, seed_tasks=SEEDED)


def _kernel_env(tmp: Path, **credentials: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in CREDENTIAL_VARIABLES and k != "IMGTOOLS_EMULATOR"}
    env["IMGTOOLS_LOG"] = str(tmp / "audit-log.sqlite")
    env.update(credentials)
    return env


def _login(emu: EmulatorHandle) -> dict[str, str]:
    return {"RAX_USERNAME": "demo", "RAX_API_KEY": API_KEY,
            "IMGTOOLS_IDENTITY_URL": emu.identity_url}


def _copy_notebooks(tmp: Path) -> Path:
    # notebooks/ inside tmp, so the notebooks' "../runs/..." outputs land in tmp too.
    target = tmp / "notebooks"
    target.mkdir(parents=True)
    for book in NOTEBOOKS:
        shutil.copy(book, target / book.name)
    return target


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


# -- the committed notebooks ----------------------------------------------------------------


def test_there_are_four_notebooks() -> None:
    assert [p.name for p in NOTEBOOKS] == ["01_explore_export.ipynb", RUNBOOK,
                                          "03_audit_tasks.ipynb", "04_transfer_images.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebooks_are_clean(path: Path) -> None:
    """No outputs but the reference outputs nbval compares (plain text, on cells marked
    NBVAL_CHECK_OUTPUT), no errors, no widget state, the venv's python3 kernel."""
    book = _load(path)
    assert book["metadata"]["kernelspec"]["name"] == "python3"
    assert "widgets" not in book["metadata"]
    checked = 0
    for cell in book["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        if CHECK in source:
            checked += 1
            assert cell["execution_count"] is not None, "a checked cell needs its reference"
            assert cell["outputs"], "a checked cell needs its reference output"
            assert {o["output_type"] for o in cell["outputs"]} == {"stream"}
            assert {o["name"] for o in cell["outputs"]} == {"stdout"}
        else:
            assert cell["outputs"] == [], source[:80]
            assert cell["execution_count"] is None, source[:80]
    assert checked >= 1, f"{path.name}: no deterministic cell is checked"


def test_runbook_and_audit_take_parameters() -> None:
    import papermill as pm  # type: ignore[import-untyped]

    runbook = pm.inspect_notebook(str(notebooks_dir() / RUNBOOK))
    assert set(runbook) == {"image_ids", "name_contains", "container", "create_container",
                            "verify", "download_dir", "timeout"}
    audit = pm.inspect_notebook(str(notebooks_dir() / "03_audit_tasks.ipynb"))
    assert set(audit) == {"since", "regions", "details", "csv_path", "chart_path"}
    transfer = pm.inspect_notebook(str(notebooks_dir() / "04_transfer_images.ipynb"))
    assert set(transfer) == {"image_ids", "name_contains", "target_region", "cleanup",
                             "container"}


# -- nbval ----------------------------------------------------------------------------------


def _prefilled_default_log(home: Path) -> Path:
    """The user's default log (``XDG_DATA_HOME=home``), already holding tasks of a real
    service: the notebooks' checked counts must not see them."""
    from datetime import UTC, datetime, timedelta

    import imgtools

    path = home / "imgtools" / "tasks.sqlite"
    path.parent.mkdir(parents=True)
    # Yesterday: inside the audit notebook's "since 30 days" whenever the test runs.
    when = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {"type": "export", "status": "success", "created_at": when, "updated_at": when,
            "message": "",
            "input": {"image_uuid": "11111111-2222-3333-4444-555555555555",
                      "receiving_swift_container": "real"},
            "result": {"export_location": "real/11111111-2222-3333-4444-555555555555.vhd"}}
    with imgtools.TaskLog(path) as log:
        log.record([imgtools.Task.from_json({**body, "id": f"real-{i}"}) for i in range(7)])
    return path


def _log_ids(path: Path) -> set[str]:
    import imgtools

    with imgtools.TaskLog(path) as log:
        return {task.id for task in log.tasks()}


def test_notebooks_under_nbval(tmp_path: Path) -> None:
    """``pytest --nbval-lax`` on a copy of notebooks/, in a subprocess, against a fresh
    emulator with a seeded history, so the checked summary cells are deterministic.

    The kernels get the environment ``make lab`` gives them (no IMGTOOLS_LOG of ours), while
    the user's default log already holds other tasks: the notebooks record into, and audit,
    the log beside the emulator's data, and the default log stays as it was."""
    copy = _copy_notebooks(tmp_path)
    default_log = _prefilled_default_log(tmp_path / "home")
    before = _log_ids(default_log)
    # An empty config file: the project's pytest settings and conftest do not apply there.
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    with start_emulator(config=_emulator_config(), subprocess=False) as emu:
        base = {k: v for k, v in os.environ.items() if k != "IMGTOOLS_LOG"}
        env = emulator_environ(emu, {**base, "XDG_DATA_HOME": str(tmp_path / "home")})
        # Only the plugins this run needs: the project's others cost seconds to import.
        env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "nbval.plugin", "-p", "no:cacheprovider",
             "-c", str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path),
             "--nbval-lax", "--nbval-current-env", "--nbval-cell-timeout=120", "-q",
             *[str(copy / p.name) for p in NOTEBOOKS]],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        emulator_tasks = _log_ids(emulator_log_path(emu.data_dir))
    report = run.stdout[-4000:] + run.stderr[-2000:]
    assert run.returncode == 0, report
    assert _log_ids(default_log) == before
    assert emulator_tasks and not emulator_tasks & before
    cells = sum(1 for p in NOTEBOOKS for c in _load(p)["cells"] if c["cell_type"] == "code")
    assert re.search(rf"\b{cells} passed\b", run.stdout), report
    assert (tmp_path / "runs" / "notebooks" / "tasks-audit.csv").exists()


# -- papermill: the runbook, and secrets -----------------------------------------------------


@dataclass(frozen=True)
class Runs:
    emu_image: dict[str, str]
    ok_code: int
    ok_record: Path
    bad_code: int
    bad_record: Path
    downloads: Path
    out: str


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorHandle]:
    with start_emulator(config=_emulator_config(), subprocess=False) as emu:
        yield emu


@pytest.fixture(scope="module")
def runs(service: EmulatorHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    """Two runbook runs through ``python -m imgtools.runbook``'s ``main``: one that succeeds,
    one that must fail (a Windows image, which cannot be exported)."""
    tmp = tmp_path_factory.mktemp("runbook")
    images = {slug: service.image_id(slug) for slug in ("web", "db", "small", "windows")}
    with pytest.MonkeyPatch.context() as mp:
        for name, value in _kernel_env(tmp, **_login(service)).items():
            mp.setenv(name, value)
        for name in CREDENTIAL_VARIABLES:
            if name not in _login(service):
                mp.delenv(name, raising=False)
        capture = tmp / "stdout.txt"
        with capture.open("w") as out, contextlib.redirect_stdout(out), \
                ThreadPoolExecutor(2) as pool:
            # Both at once (each waits mostly on its kernel): the suite stays short.
            ok_run = pool.submit(main, [
                "--images", f"{images['web']},{images['db']}", "--container", "nightly",
                "--create-container", "--download-dir", str(tmp / "downloads"),
                "--runs-dir", str(tmp / "runs")])
            bad_run = pool.submit(main, [
                "--images", f"{images['small']} {images['windows']}", "--container",
                "nightly-bad", "--create-container", "--runs-dir", str(tmp / "runs-bad")])
            ok, bad = ok_run.result(), bad_run.result()
    ok_records = list((tmp / "runs" / "02_export_runbook").glob("*.ipynb"))
    bad_records = list((tmp / "runs-bad" / "02_export_runbook").glob("*.ipynb"))
    assert len(ok_records) == 1 and len(bad_records) == 1
    yield Runs(images, ok, ok_records[0], bad, bad_records[0], tmp / "downloads",
               capture.read_text())


def _outputs_text(book: dict[str, Any]) -> str:
    parts = []
    for cell in book["cells"]:
        for out in cell.get("outputs", []):
            parts.append("".join(out.get("text", "")))
            for value in out.get("data", {}).values():
                parts.append(value if isinstance(value, str) else json.dumps(value))
            parts.append(out.get("evalue", ""))
    return "\n".join(parts)


def test_runbook_success_is_recorded(runs: Runs) -> None:
    assert runs.ok_code == EXIT_OK, runs.out
    book = _load(runs.ok_record)
    meta = book["metadata"]["papermill"]
    assert meta["parameters"]["image_ids"] == [runs.emu_image["web"], runs.emu_image["db"]]
    assert meta["parameters"]["container"] == "nightly"
    assert meta["exception"] is None
    text = _outputs_text(book)
    assert "2 exported, 0 failed, 0 timed out, 0 skipped" in text
    assert "all exports succeeded" in text
    assert "verified: 2 downloaded: 2" in text
    for slug in ("web", "db"):
        assert (runs.downloads / f"{runs.emu_image[slug]}.vhd").stat().st_size > 0
    assert "2 exported, 0 failed" in runs.out  # main() prints the result table


def test_runbook_fails_on_an_image_that_cannot_be_exported(runs: Runs) -> None:
    assert runs.bad_code == EXIT_FAILED, runs.out
    book = _load(runs.bad_record)
    assert book["metadata"]["papermill"]["exception"] is True
    table = next(cell for cell in book["cells"]
                 if "result-table" in cell["metadata"].get("tags", []))
    text = "".join("".join(o.get("text", "")) for o in table["outputs"])
    assert "1 exported, 1 failed, 0 timed out, 0 skipped" in text
    failed = [line for line in text.splitlines() if " failed " in f" {line} "
              and "snapshot" in line]
    assert len(failed) == 1 and "Windows" in failed[0], text
    assert "licensing or billing restrictions" in failed[0]
    errors = [o for c in book["cells"] for o in c.get("outputs", [])
              if o["output_type"] == "error"]
    assert [e["ename"] for e in errors] == ["RunbookFailed"]


def test_no_secret_in_executed_notebooks(service: EmulatorHandle, runs: Runs,
                                         tmp_path: Path) -> None:
    """The explore and audit notebooks run with a known token; the runbook ran with a known
    API key. Neither appears anywhere in the executed files: outputs, widget state,
    papermill's metadata."""
    import papermill as pm

    token = service.token("demo", API_KEY)
    copy = _copy_notebooks(tmp_path)
    creds = {"API_ENDPOINT": service.image_endpoint, "AUTH_TOKEN": token,
             "FILES_ENDPOINT": service.storage_url("100001")}
    with pytest.MonkeyPatch.context() as mp:
        for name in CREDENTIAL_VARIABLES:
            mp.delenv(name, raising=False)
        for name, value in _kernel_env(tmp_path, **creds).items():
            mp.setenv(name, value)
        def execute(name: str) -> Path:
            out = tmp_path / f"executed-{name}"
            pm.execute_notebook(str(copy / name), str(out), cwd=str(copy), progress_bar=False,
                                parameters={"chart_path": str(tmp_path / "charts.png")}
                                if name.startswith("03") else None)
            return out

        with ThreadPoolExecutor(2) as pool:
            executed = list(pool.map(execute, ["01_explore_export.ipynb",
                                               "03_audit_tasks.ipynb"]))
    assert (tmp_path / "charts.png").stat().st_size > 0
    for path in [*executed, runs.ok_record, runs.bad_record]:
        text = path.read_text()
        assert token not in text, path.name
        assert API_KEY not in text, path.name
    # The executed explore notebook kept its widget state (the form still displays).
    assert "application/vnd.jupyter.widget-state+json" in json.dumps(
        _load(executed[0])["metadata"])

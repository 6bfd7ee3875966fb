"""``imgtools.runbook.run_exports``: the runbook's work, as a library call (notebook 02 is a
thin call of it). The report is checked alone; the runs go to an emulator over sockets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import imgtools
from imgtools._embedded import connect_to
from imgtools.emulator import EmulatorConfig, EmulatorHandle, start_emulator
from imgtools.runbook import OUTCOMES, RunbookFailed, RunReport, run_exports

MISSING = "00000000-0000-4000-8000-000000000000"


@pytest.fixture(scope="module")
def service() -> Iterator[EmulatorHandle]:
    config = EmulatorConfig(pending_delay=0.1, export_speed=64 * 1024 * 1024)
    with start_emulator(config=config, subprocess=False) as emu:
        yield emu


@pytest.fixture
def client(service: EmulatorHandle, tmp_path: Path) -> Iterator[imgtools.Client]:
    with connect_to(service, log=imgtools.TaskLog(tmp_path / "log.sqlite"),
                    wait_timeout=60.0) as c:
        yield c


# -- the report alone -----------------------------------------------------------------------


def test_the_report_counts_and_fails_on_failed_or_timed_out_rows() -> None:
    report = RunReport("c")
    report.row("a", name="web", outcome="exported", size=6 * 1024 * 1024)
    report.row("b", name="win", outcome="skipped", message="cannot be exported: Windows")
    assert report.counts() == {"exported": 1, "failed": 0, "timed out": 0, "skipped": 1}
    assert report.ok and report.raise_for_failures() is report
    assert report.summary() == "1 exported, 0 failed, 0 timed out, 1 skipped"
    assert list(report.frame()["size"]) == ["6.0 MiB", ""]
    report.row("c", outcome="timed out", message="still processing after 5 s")
    report.row("d", name="db", outcome="failed", message="boom")
    assert not report.ok and tuple(report.counts()) == OUTCOMES
    with pytest.raises(RunbookFailed, match=r"2 of 4 export\(s\) did not succeed: c: still "
                                            r"processing after 5 s; db: boom"):
        report.raise_for_failures()
    lines = report.text().splitlines()
    assert lines[0] == "1 exported, 1 failed, 1 timed out, 1 skipped"
    assert len(lines) == 1 + 1 + 4  # summary, header, one line per image


# -- runs against the emulator ------------------------------------------------------------


def test_a_run_exports_verifies_downloads_and_skips_what_only_matched_by_name(
        service: EmulatorHandle, client: imgtools.Client, tmp_path: Path) -> None:
    web, db = service.image_id("web"), service.image_id("db")
    said: list[str] = []
    report = run_exports(client, image_ids=[web, f" {db} ", MISSING], name_contains="WINDOWS",
                         container="run-ok", create_container=True,
                         download_dir=tmp_path / "downloads", poll=imgtools.PollPolicy.fast(),
                         say=said.append)
    rows = report.rows
    assert rows[web].outcome == rows[db].outcome == "exported"
    assert rows[web].verified is True and rows[web].task_id
    assert rows[web].export_location == f"run-ok/{web}.vhd"
    assert Path(rows[db].downloaded or "").stat().st_size == rows[db].size
    assert rows[MISSING].outcome == "failed" and rows[MISSING].task_id is None
    skipped = [r for r in rows.values() if r.outcome == "skipped"]
    assert skipped and all("cannot be exported" in (r.message or "") for r in skipped)
    # An id that does not exist fails the run; what the name filter found and cannot be
    # exported does not.
    assert report.counts()["failed"] == 1 and not report.ok
    assert report.wait is not None and len(report.wait.succeeded) == 2
    assert report.finished is not None and report.finished >= report.started
    assert said[-1] == "verified: 2 downloaded: 2"
    assert any(line.startswith("This run exports") for line in said)


def test_an_image_asked_for_by_id_that_cannot_be_exported_fails_the_run(
        service: EmulatorHandle, client: imgtools.Client) -> None:
    windows, small = service.image_id("windows"), service.image_id("small")
    report = run_exports(client, image_ids=[windows, small], container="run-bad",
                         create_container=True, verify=False, poll=imgtools.PollPolicy.fast())
    assert report.rows[small].outcome == "exported" and report.rows[small].verified is None
    assert report.rows[windows].outcome == "failed"
    assert "licensing or billing restrictions" in (report.rows[windows].message or "")
    with pytest.raises(RunbookFailed, match="1 of 2"):
        report.raise_for_failures()


def test_exports_still_running_at_the_deadline_time_out(tmp_path: Path) -> None:
    slow = EmulatorConfig(pending_delay=600.0)
    with start_emulator(config=slow, subprocess=False) as emu, \
            connect_to(emu, log=False) as client:
        web = emu.image_id("web")
        report = run_exports(client, image_ids=[web], container="run-slow",
                             create_container=True, timeout=0.5,
                             poll=imgtools.PollPolicy.fast())
    assert report.rows[web].outcome == "timed out"
    assert report.rows[web].message == "still pending after 0.5 s"
    assert not report.ok


def test_nothing_selected_is_refused_before_any_request(client: imgtools.Client) -> None:
    before = client.stats.requests
    with pytest.raises(RunbookFailed, match="nothing selected"):
        run_exports(client, image_ids=["  "], container="x")
    assert client.stats.requests == before


def test_the_runbook_notebook_loads_no_widgets() -> None:
    """Notebook 02 runs headless: what it imports (and imgtools.runbook itself) leaves
    ipywidgets unloaded."""
    import json
    import subprocess
    import sys

    from imgtools.lab import notebooks_dir

    book = json.loads((notebooks_dir() / "02_export_runbook.ipynb").read_text())
    imports = [line for cell in book["cells"] if cell["cell_type"] == "code"
               for line in "".join(cell["source"]).splitlines()
               if line.startswith(("import ", "from "))]
    assert any("run_exports" in line for line in imports), imports
    code = "\n".join([*imports, "import sys", "print('ipywidgets' in sys.modules)"])
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert run.stdout.split() == ["False"]

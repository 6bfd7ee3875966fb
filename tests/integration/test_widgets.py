"""ExportForm and TaskBrowser driven the way a notebook user drives them (set values, click),
against the emulator over real sockets; state is read from the widgets' traits."""

from __future__ import annotations

import asyncio
import csv
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

import imgtools
from imgtools.emulator import EmulatorConfig, EmulatorHandle, start_emulator
from imgtools.lab import CREDENTIAL_VARIABLES
from imgtools.widgets import ExportForm, TaskBrowser, format_bytes, one_line

SEEDED = 30


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorHandle]:
    # Fast tasks and a seeded history; in-process (thread) mode is the cheapest to start.
    config = EmulatorConfig(pending_delay=0.1, export_speed=64 * 1024 * 1024,
                            seed_tasks=SEEDED)
    with start_emulator(config=config, subprocess=False) as handle:
        yield handle


@pytest.fixture
def client(emu: EmulatorHandle) -> Iterator[imgtools.Client]:
    with imgtools.connect(username="demo", api_key="demo-key",
                          identity_url=emu.identity_url) as c:
        yield c


def _pick(form: ExportForm, image_id: str, container: str, *, create: bool = True) -> None:
    form.image_picker.value = image_id
    form.container.value = container
    form.create_container.value = create


def test_export_form_exports_verifies_and_downloads(emu: EmulatorHandle, client: imgtools.Client,
                                                    tmp_path: Path) -> None:
    image_id = emu.image_id("small")

    async def scenario() -> ExportForm:
        form = ExportForm(client, poll=imgtools.PollPolicy.fast(), download_dir=tmp_path)
        await form.settled()
        assert form.error == ""
        assert "local emulator" in form.connection
        _pick(form, image_id, "widget-exports")
        assert form.problems() == []
        assert not form.export_button.disabled
        statuses: list[str] = []
        form.observe(lambda change: statuses.append(change["new"]), names="status")
        form.export_button.click()
        # click() returns at once: the export runs as a task on the loop, not in the handler.
        assert form.busy
        assert form.status in ("idle", "starting")
        await form.settled()
        assert form.error == ""
        assert statuses[0] == "starting"
        assert statuses[-1] == "success"
        assert form.polls >= 1
        assert form.elapsed > 0
        assert form.task_id
        assert form.export_location == f"widget-exports/{image_id}.vhd"
        assert "widget-exports" in form.container.options  # created, now listed
        assert form.verify_button.layout.display is None  # shown after success

        form.verify_button.click()
        await form.settled()
        assert form.verified == "ok", form.result_line.value
        form.download_button.click()
        await form.settled()
        assert form.error == ""
        return form

    form = asyncio.run(scenario())
    image = client.get_image(image_id)
    data = Path(form.downloaded).read_bytes()
    assert len(data) == image.size
    assert hashlib.md5(data).hexdigest() == image.checksum
    assert form.progress.value == form.progress.max == image.size
    # The task the form followed is in the audit log, with the transitions it saw.
    log = client.log
    assert isinstance(log, imgtools.TaskLog)
    events = log.events_frame(form.task_id)
    assert list(events["status"].astype(str))[-1] == "success"


def test_images_that_cannot_be_exported_are_marked_and_not_submitted(
        emu: EmulatorHandle, client: imgtools.Client) -> None:
    async def scenario() -> ExportForm:
        form = ExportForm(client)
        await form.settled()
        labels = dict((value, label) for label, value in form.image_picker.options)
        assert labels[emu.image_id("small")].startswith("✓ ")
        windows = labels[emu.image_id("windows")]
        assert windows.startswith("✗ ")
        assert "licensing or billing restrictions" in windows
        assert "status is 'deactivated'" in labels[emu.image_id("old")]
        _pick(form, emu.image_id("windows"), "exports")
        assert form.export_button.disabled
        assert "cannot be exported" in form.image_info.value
        before = len(list(client.tasks()))
        form.export()  # what a click would do, were the button enabled
        await form.settled()
        assert form.error.startswith("this image cannot be exported")
        assert len(list(client.tasks())) == before  # nothing was sent
        return form

    asyncio.run(scenario())


def test_search_and_container_rules(emu: EmulatorHandle, client: imgtools.Client) -> None:
    async def scenario() -> None:
        form = ExportForm(client)
        await form.settled()
        form.search.value = "DB01"
        assert [value for _, value in form.image_picker.options] == [emu.image_id("db")]
        form.search.value = ""
        assert len(form.image_picker.options) > 1

        form.image_picker.value = emu.image_id("db")
        assert form.problems() == ["name a container"]
        form.container.value = "a/b"
        assert form.export_button.disabled
        assert any("/" in problem for problem in form.problems())
        form.container.value = "not-there-yet"
        assert form.export_button.disabled
        assert "does not exist" in form.container_info.value
        form.create_container.value = True
        assert not form.export_button.disabled
        assert "created at export" in form.container_info.value

    asyncio.run(scenario())


def test_failed_task_and_preflight_errors_show_one_line(emu: EmulatorHandle,
                                                        client: imgtools.Client) -> None:
    async def scenario() -> None:
        form = ExportForm(client, poll=imgtools.PollPolicy.fast())
        await form.settled()
        emu.set_faults(task_failure=1.0)
        try:
            _pick(form, emu.image_id("db"), "doomed")
            form.export_button.click()
            await form.settled()
        finally:
            # (clear_faults() is refused by the emulator: "unknown fault settings: reset")
            emu.set_faults(task_failure=0.0)
        assert form.status == "failure"
        assert form.error.startswith("the export failed: ")
        assert "\n" not in form.error and "Traceback" not in form.error
        assert form.export_location == ""
        assert form.verify_button.layout.display == "none"

        # The same image into a container that already holds its export: the preflight
        # refuses before any task is created, and says why in one line.
        _pick(form, emu.image_id("web"), "twice")
        form.export_button.click()
        await form.settled()
        assert form.status == "success"
        form.export_button.click()
        await form.settled()
        assert form.status == "error"
        assert "already exists" in form.error
        assert "\n" not in form.error
        assert "imgtools-error" in form.error_line.value

    asyncio.run(scenario())


def test_without_a_client_the_form_starts_the_emulator(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*CREDENTIAL_VARIABLES, "IMGTOOLS_EMULATOR"):
        monkeypatch.delenv(name, raising=False)

    async def scenario() -> ExportForm:
        form = ExportForm()
        assert form.connection in ("", "Connecting…")
        await form.settled()
        return form

    form = asyncio.run(scenario())
    assert form.error == ""
    assert form.connection.startswith("Connected to the local emulator")
    assert any(label.startswith("✓ ") for label, _ in form.image_picker.options)


def test_task_browser_filters_details_and_csv(emu: EmulatorHandle, client: imgtools.Client,
                                              tmp_path: Path) -> None:
    async def scenario() -> TaskBrowser:
        browser = TaskBrowser(client)
        await browser.settled()
        assert browser.error == ""
        total = len(browser.frame)
        assert total >= SEEDED
        assert browser.rows == total

        failures = int((browser.frame["status"] == "failure").sum())
        assert failures > 0  # the seeded history has some
        browser.status_filter.value = "failure"
        await browser.settled()
        assert browser.rows == failures
        assert set(browser.view["status"].astype(str)) == {"failure"}

        # Picking a failed task shows it in full, fetched because the list gave only a stub.
        browser.task_picker.value = browser.view["id"].iloc[-1]
        await browser.settled()
        assert browser.selected == browser.view["id"].iloc[-1]
        assert "message: " in browser.detail
        assert "message: (none)" not in browser.detail
        assert "input: image_uuid=" in browser.detail or "input: import_from=" in \
            browser.detail
        assert "observed:" in browser.detail

        browser.type_filter.value = "import"
        browser.status_filter.value = "all"
        assert set(browser.view["type"].astype(str)) <= {"import"}
        browser.type_filter.value = "all"
        first_day = browser.frame["created_at"].min().date()
        browser.until.value = first_day
        assert 0 < browser.rows < total
        assert (browser.view["created_at"].dt.date <= first_day).all()
        browser.until.value = None

        target = browser.export_csv(tmp_path / "out" / "tasks.csv")
        with target.open() as fh:
            rows = list(csv.DictReader(fh))
        assert len(rows) == browser.rows == total
        assert {r["id"] for r in rows} == set(browser.view["id"])

        # A new export shows up after Refresh.
        task = client.begin_export(emu.image_id("db"), "browser-refresh",
                                   create_container=True)
        task.wait(poll=imgtools.PollPolicy.fast())
        browser.refresh_button.click()
        await browser.settled()
        assert browser.rows == total + 1
        assert task.id in set(browser.view["id"])
        return browser

    asyncio.run(scenario())


def test_one_line_and_format_bytes() -> None:
    assert one_line(ValueError("first\nsecond")) == "ValueError: first"
    assert one_line(imgtools.ConfigurationError("no credentials\nmore")) == "no credentials"
    assert len(one_line(RuntimeError("x" * 1000))) <= 300
    assert format_bytes(None) == "size unknown"
    assert format_bytes(512) == "512 B"
    assert format_bytes(6 * 1024 * 1024) == "6.0 MiB"

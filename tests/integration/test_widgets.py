"""ExportForm and TaskBrowser driven the way a notebook user drives them (set values, click),
against the emulator over real sockets; state is read from the widgets' traits."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import html
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import imgtools
from imgtools import history
from imgtools.details import has_details
from imgtools.emulator import EmulatorConfig, EmulatorHandle, start_emulator
from imgtools.lab import CREDENTIAL_VARIABLES
from imgtools.widgets import TICK, ExportForm, TaskBrowser, format_bytes, one_line

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
    events = history.events_frame(log, form.task_id)
    assert list(events["status"].astype(str))[-1] == "success"


class _OneRateLimit(httpx.AsyncBaseTransport):
    """Passes every request to the emulator over a real socket, except the first poll of a
    task (``GET .../tasks/<id>``): that one is answered 429 with ``Retry-After`` (a single,
    placed rate limit is a fault the emulator's token bucket cannot produce on cue)."""

    def __init__(self, events: list[tuple[str, float]]) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.events = events
        self.limited = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        polling = request.method == "GET" and "/tasks/" in request.url.path
        if polling and not self.limited:
            self.limited = True
            self.events.append(("429", RETRY_AFTER))
            return httpx.Response(429, headers={"Retry-After": f"{RETRY_AFTER:g}"},
                                  json={"message": "slow down"}, request=request)
        if polling:
            self.events.append(("poll", 0.0))
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


RETRY_AFTER = 1.0
#: No jitter and a short delay, so a Retry-After slept twice would stand out.
STEADY = imgtools.PollPolicy(initial=0.05, maximum=0.05, jitter=0.0)


async def _poll_pattern(emu: EmulatorHandle, follow: Any,
                        monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, float]]:
    """The polls and sleeps of one export followed by ``follow(async_client, image_id)``,
    in order. Sleeps are recorded on this loop's thread only (the emulator's server thread
    sleeps too), except the form's elapsed-time ticker, which is not polling."""
    events: list[tuple[str, float]] = []
    real_sleep = asyncio.sleep
    here = threading.get_ident()

    async def recording_sleep(delay: float, result: Any = None) -> Any:
        if threading.get_ident() == here and delay != TICK:
            events.append(("sleep", round(delay, 3)))
        return await real_sleep(delay, result)

    monkeypatch.setattr(asyncio, "sleep", recording_sleep)
    async with imgtools.AsyncClient(username="demo", api_key="demo-key",
                                    identity_url=emu.identity_url, retries=0,
                                    transport=_OneRateLimit(events), poll=STEADY,
                                    environ={}) as aclient:
        await follow(aclient, emu.image_id("small"))
    monkeypatch.setattr(asyncio, "sleep", real_sleep)
    return events


def _after_the_rate_limit(events: list[tuple[str, float]]) -> list[tuple[str, float]]:
    start = events.index(("429", RETRY_AFTER))
    end = next(i for i in range(start + 1, len(events)) if events[i][0] == "poll")
    return events[start:end + 1]


def test_the_form_polls_as_wait_does(emu: EmulatorHandle, client: imgtools.Client,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The form follows an export with ``AsyncExportTask.wait``: after a 429 it sleeps the
    Retry-After once (not Retry-After and then the policy's delay as well), exactly as
    ``wait`` does."""
    async def by_wait(aclient: imgtools.AsyncClient, image_id: str) -> None:
        handle = await aclient.begin_export(image_id, "pattern-wait", create_container=True)
        await handle.wait(poll=STEADY)

    async def by_form(aclient: imgtools.AsyncClient, image_id: str) -> None:
        form = ExportForm(client, poll=STEADY, async_client=aclient)
        await form.settled()
        _pick(form, image_id, "pattern-form")
        form.export_button.click()
        await form.settled()
        assert form.status == "success", form.error
        polls.append(form.polls)
        await form.aclose()

    polls: list[int] = []
    waited = asyncio.run(_poll_pattern(emu, by_wait, monkeypatch))
    formed = asyncio.run(_poll_pattern(emu, by_form, monkeypatch))
    # Every answered poll counts, the 429 does not.
    assert polls == [sum(1 for kind, _ in formed if kind == "poll")]
    assert _after_the_rate_limit(waited) == [("429", RETRY_AFTER), ("sleep", RETRY_AFTER),
                                             ("poll", 0.0)]
    assert _after_the_rate_limit(formed) == _after_the_rate_limit(waited)


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
                                              tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> TaskBrowser:
        browser = TaskBrowser(client)
        await browser.settled()
        assert browser.error == ""
        total = len(browser.frame)
        assert total >= SEEDED
        assert browser.rows == total
        # Refresh fetched every task's details (the list gives stubs): no blank columns.
        assert has_details(browser.frame).all()
        grid = browser.grid.df
        assert grid is not None and len(grid) == total
        assert all((grid[column] != "").any() for column in grid.columns)
        assert {"id", "created", "duration", "image", "container", "failure"} <= set(grid)
        assert grid["id"].str.contains(r'^<span title="[0-9a-f-]{36}">[0-9a-f]{8}</span>$').all()

        failures = int((browser.frame["status"] == "failure").sum())
        assert failures > 0  # the seeded history has some
        browser.status_filter.value = "failure"
        assert browser.rows == failures
        assert set(browser.view["status"].astype(str)) == {"failure"}
        assert browser.grid.df["status"].str.endswith(">failure</span>").all()
        assert "#fee2e2" in browser.grid.df["status"].iloc[0]  # in the failure colours
        assert browser.grid.df["failure"].str.contains(" · ").all()  # category · message

        # A click on a row shows that task, highlighted, with where each time comes from.
        browser.select_row(1)
        await browser.settled()
        assert browser.selected == browser.view["id"].iloc[1]
        assert browser.grid.selected_rows == [1]
        assert "message: " in browser.detail and "message: (none)" not in browser.detail
        assert "category: " in browser.detail
        assert "input: image_uuid=" in browser.detail or " import_from=" in browser.detail
        assert "status first seen:" in browser.detail
        assert "pending" in browser.detail and "service time (created_at)" in browser.detail
        assert "failure" in browser.detail.split("status first seen:")[1]

        browser.type_filter.value = "import"
        browser.status_filter.value = "all"
        assert set(browser.view["type"].astype(str)) <= {"import"}
        browser.type_filter.value = "all"
        first_day = browser.frame["created_at"].min().date()
        browser.until.value = first_day
        assert 0 < browser.rows < total
        assert (browser.view["created_at"].dt.date <= first_day).all()
        browser.until.value = None

        monkeypatch.chdir(tmp_path)
        target = browser.export_csv("out/tasks.csv")
        assert target == (tmp_path / "out" / "tasks.csv").resolve()
        assert browser.csv_path == str(target) and target.is_absolute()
        assert str(target) in browser.csv_line.value
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
        await browser.aclose()
        return browser

    asyncio.run(scenario())


def test_task_browser_click_fetches_and_fills_the_row(emu: EmulatorHandle,
                                                      client: imgtools.Client) -> None:
    """With details="none" the grid starts from stubs; a click fetches that one task, and
    its row's cells fill in."""
    async def scenario() -> None:
        browser = TaskBrowser(client, details="none")
        await browser.settled()
        browser.status_filter.value = "failure"
        stubs = ~has_details(browser.view)
        assert stubs.any()
        position = int(stubs.argmax())
        task_id = browser.view["id"].iloc[position]
        assert "no details" in browser.grid.df["failure"].iloc[position]
        assert "not fetched" in browser.summary_line.value
        browser.select_row(position)
        assert "details: fetching" in browser.detail
        await browser.settled()
        assert browser.selected == task_id
        row = browser.view.loc[browser.view["id"] == task_id].iloc[0]
        assert isinstance(row["message"], str) and isinstance(row["container"], str)
        cell = browser.grid.df["failure"].iloc[browser._shown.index(task_id)]
        assert "no details" not in cell and html.escape(row["message"]) in cell
        assert browser.grid.selected_rows == [browser._shown.index(task_id)]
        assert f"message: {row['message']}" in browser.detail
        await browser.aclose()

    asyncio.run(scenario())


def test_task_browser_reads_every_region_and_fetches_a_click_from_its_region(
        emu: EmulatorHandle, client: imgtools.Client) -> None:
    """``regions="all"``: the rows of every region of the login; a click on a DFW task of an
    ORD client fetches it from DFW (through ORD it does not exist)."""
    async def scenario() -> None:
        browser = TaskBrowser(client, details="none", regions="all")
        await browser.settled()
        assert set(browser.frame["region"]) == {"ORD", "DFW", "IAD"}
        # Where each row ran is in the grid: its region and account (tenant), row by row.
        grid = browser.grid.df
        assert list(grid.columns[:5]) == ["id", "type", "status", "region", "account"]
        assert list(grid["region"]) == list(browser.view["region"].iloc[:len(grid)])
        assert set(grid["region"]) == {"ORD", "DFW", "IAD"}
        assert set(grid["account"]) == {client.tenant_id}
        dfw = (browser.view["region"] == "DFW").to_numpy() & ~has_details(browser.view)
        assert dfw.any()
        position = int(dfw.argmax())
        task_id = browser.view["id"].iloc[position]
        browser.select_row(position)
        await browser.settled()
        assert browser.error == ""
        row = browser.view.loc[browser.view["id"] == task_id].iloc[0]
        assert isinstance(row["container"], str)
        assert "input: " in browser.detail
        assert f"region: DFW\naccount: {client.tenant_id}\n" in browser.detail
        await browser.aclose()

    assert client.region == "ORD"
    asyncio.run(scenario())


def test_task_browser_on_a_given_frame_with_purged_tasks(tmp_path: Path) -> None:
    """Tasks only the log knows, as stubs: the browser says they have no details anywhere,
    times come from this machine where the service gave none."""
    from datetime import UTC, datetime, timedelta

    from imgtools._models import Task
    from imgtools.history import tasks_frame

    created = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    stub = Task.from_json({"id": "0b1a2c3d-0000-4000-8000-000000000001", "type": "export",
                           "status": "failure", "owner": "100001",
                           "created_at": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
                           "updated_at": (created + timedelta(minutes=5))
                           .strftime("%Y-%m-%dT%H:%M:%SZ")})
    with imgtools.TaskLog(tmp_path / "log.sqlite") as log:
        log.record([stub])
        frame = tasks_frame(log)
        browser = TaskBrowser(log=log, frame=frame)
        assert browser.rows == 1 and browser.client is None
        assert "1 with no details anywhere" in browser.summary_line.value
        assert list(browser.grid.df.columns) == ["id", "type", "status", "account", "created",
                                                 "duration", "failure"]  # empty ones hidden
        assert browser.grid.df["account"].iloc[0] == "100001"  # the owner
        browser.select_row(0)
        assert browser.selected == stub.id
        assert "none anywhere: purged" in browser.detail
        assert "failure    2026-11-01 12:05:00  (service time (updated_at); first seen here" \
            in browser.detail


def test_one_line_and_format_bytes() -> None:
    assert one_line(ValueError("first\nsecond")) == "ValueError: first"
    assert one_line(imgtools.ConfigurationError("no credentials\nmore")) == "no credentials"
    assert len(one_line(RuntimeError("x" * 1000))) <= 300
    assert format_bytes(None) == "size unknown"
    assert format_bytes(512) == "512 B"
    assert format_bytes(6 * 1024 * 1024) == "6.0 MiB"

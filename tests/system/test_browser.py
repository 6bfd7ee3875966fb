"""JupyterLab in a real browser: Debian's Chromium, driven by Playwright, against a JupyterLab
server started here, opens 01_explore_export.ipynb, runs every cell, uses the export form the
way a person does, and checks that nothing shows an error; the same for the audit notebook's
task browser and the transfer runbook's TransferForm.

The kernel gets no credentials, so the notebook takes its default path: the local emulator,
started in the background by the kernel. The screenshot goes to tests/artifacts/.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import ConsoleMessage, Page, sync_playwright

from imgtools.emulator import EmulatorConfig, EmulatorHandle, start_emulator
from imgtools.lab import (
    CREDENTIAL_VARIABLES,
    LAB_SEED_TASKS,
    LAB_TASK_TTL,
    emulator_environ,
    lab_argv,
    notebooks_dir,
    write_lab_settings,
)
from imgtools.transfer import DEFAULT_TRANSFER_CONTAINER, STEPS
from tests.client_support import SMALL, make_client

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
# The machine has no network: without these Chromium keeps trying to reach outside hosts.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]
ARTIFACTS = Path(__file__).parents[1] / "artifacts"
SERVER_START_TIMEOUT = 60.0
#: Milliseconds (Playwright's unit) for the slow steps: kernel start, run all, the export.
STEP_MS = 90_000


@dataclass(frozen=True)
class Lab:
    url: str
    token: str
    root: Path
    log: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """A JupyterLab server on a free loopback port over a temporary copy of notebooks/; its
    kernels start their own emulator (no credentials)."""
    with _lab_server(tmp_path, {}) as server:
        yield server


@pytest.fixture
def audit_lab(tmp_path: Path) -> Iterator[Lab]:
    """As ``lab``, with the kernels logged in to an emulator holding ``make lab``'s seeded
    history (LAB_SEED_TASKS tasks over LAB_TASK_TTL), as a new user sees the audit notebook."""
    config = EmulatorConfig(seed_tasks=LAB_SEED_TASKS, task_ttl=LAB_TASK_TTL)
    with start_emulator(config=config) as emu, \
            _lab_server(tmp_path, emulator_environ(emu, base={})) as server:
        yield server


@contextlib.contextmanager
def _lab_server(tmp_path: Path, credentials: dict[str, str]) -> Iterator[Lab]:
    root = tmp_path / "notebooks"
    shutil.copytree(notebooks_dir(), root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    settings = tmp_path / "lab-settings"
    # windowingMode none: cells off screen stay in the page, so the test can find them.
    write_lab_settings(settings, windowing_mode="none")
    token = secrets.token_hex(16)
    port = _free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in CREDENTIAL_VARIABLES and k != "IMGTOOLS_EMULATOR"}
    env.update({
        # Nothing of the user's Jupyter set-up leaks in, and nothing is written to it.
        "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab-user-settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "lab-workspaces"),
        "IMGTOOLS_LOG": str(tmp_path / "kernel-log.sqlite"),
        **credentials,
    })
    log_path = tmp_path / "jupyterlab.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            lab_argv(root, port=port, token=token, app_settings_dir=settings, expose_app=True),
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            assert process.poll() is None, f"JupyterLab exited:\n{log_path.read_text()[-3000:]}"
            try:
                if httpx.get(f"{url}/api/status", params={"token": token},
                             timeout=2.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "JupyterLab did not answer /api/status"
            time.sleep(0.2)
        yield Lab(url=url, token=token, root=root, log=log_path)
    finally:
        # SIGTERM: JupyterLab shuts its kernels down, and each kernel stops its emulator.
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


_APP = "(window.jupyterapp || window.jupyterlab)"

_KERNEL_IDLE = f"""() => {{
  const panel = {_APP}.shell.currentWidget;
  const kernel = panel && panel.sessionContext && panel.sessionContext.session &&
                 panel.sessionContext.session.kernel;
  return !!kernel && kernel.status === 'idle';
}}"""

# The kernel is idle again and every code cell has run (has an execution count), or one
# failed (Run All stops there; the assertions below then show the error).
_ALL_RAN = f"""() => {{
  const panel = {_APP}.shell.currentWidget;
  if (!panel || !panel.content) return false;
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  if (!kernel || kernel.status !== 'idle') return false;
  const code = panel.content.widgets.filter(cell => cell.model.type === 'code');
  const failed = code.some(cell => cell.model.outputs.toJSON().some(
    out => out.output_type === 'error'));
  return failed || code.every(cell => cell.model.executionCount !== null);
}}"""


def _open_and_run_all(page: Page, lab: Lab, notebook: str) -> None:
    page.goto(f"{lab.url}/lab/tree/{notebook}?token={lab.token}&reset")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=STEP_MS)
    page.wait_for_function(_KERNEL_IDLE, timeout=STEP_MS)
    page.evaluate(f"{_APP}.commands.execute('notebook:run-all-cells')")
    page.wait_for_function(_ALL_RAN, timeout=STEP_MS, polling=250)


def test_export_form_in_jupyterlab(lab: Lab) -> None:
    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: `make browser-deps`"
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            try:
                _open_and_run_all(page, lab, "01_explore_export.ipynb")
                _use_the_form(page)
            finally:
                page.screenshot(path=str(ARTIFACTS / "01_explore_export.png"), full_page=True)
        finally:
            browser.close()


def _use_the_form(page: Page) -> None:
    """Pick an image and a container, Export, wait for success, Verify; no error anywhere."""
    errors = page.locator(
        '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
    assert errors.count() == 0, errors.all_inner_texts()
    form = page.locator(".imgtools-export-form")
    form.wait_for(timeout=STEP_MS)
    # The image list fills once the form has connected and read the images.
    page.wait_for_function(
        "() => document.querySelectorAll('.imgtools-export-form select option')"
        ".length > 0", timeout=STEP_MS)
    form.get_by_placeholder("search images by name").fill("build")
    picker = form.locator("select")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.imgtools-export-form select option')]"
        ".every(o => o.textContent.includes('build'))", timeout=STEP_MS)
    label = picker.locator("option").first.inner_text()
    # The Select draws its labels with no-break spaces.
    assert label.replace("\xa0", " ").startswith("✓ build-agent snapshot"), label
    picker.select_option(label=label)

    export = form.get_by_role("button", name="Export")
    assert export.is_disabled(), "Export must wait for a container"
    form.get_by_placeholder("existing container, or a new name").fill("browser-test")
    form.get_by_label("create it if missing").check()
    page.wait_for_function(
        "() => [...document.querySelectorAll('.imgtools-export-form button')]"
        ".some(b => b.textContent.trim() === 'Export' && !b.disabled)",
        timeout=STEP_MS)
    export.click()

    status = form.locator(".imgtools-status")
    page.wait_for_function(
        "() => { const s = document.querySelector('.imgtools-export-form "
        ".imgtools-status'); return s && ['success', 'failure', 'error']"
        ".includes(s.textContent.trim()); }", timeout=STEP_MS)
    assert status.inner_text().strip() == "success", form.inner_text()
    form.get_by_text("Exported to browser-test/").wait_for(timeout=STEP_MS)
    form.get_by_role("button", name="Verify").click()
    form.get_by_text("Verified:").wait_for(timeout=STEP_MS)
    assert "OK" in form.inner_text(), form.inner_text()

    form.scroll_into_view_if_needed()
    form.screenshot(path=str(ARTIFACTS / "export-form.png"))

    assert page.get_by_text("Error displaying widget").count() == 0
    assert errors.count() == 0, errors.all_inner_texts()
    assert form.locator(".imgtools-error").count() == 0, form.inner_text()


# -- the audit notebook -------------------------------------------------------------------------

#: Per column of a table: does any body row have text in it? (JavaScript, run in the page.)
_FILLED_COLUMNS = """table => {
  const heads = [...table.querySelectorAll('thead th')].map(th => th.textContent.trim());
  const rows = [...table.querySelectorAll('tbody tr')];
  return heads.map((head, i) => [head, rows.some(
    tr => (tr.children[i] && tr.children[i].textContent.trim() !== ''))]);
}"""


def test_audit_notebook_in_jupyterlab(audit_lab: Lab) -> None:
    """Run All on 03_audit_tasks.ipynb with ``make lab``'s seeded history: no error; the
    failures table shows categories and messages; no column is empty in every row; a click
    on a row of the TaskBrowser shows that task; the status filter changes the rows."""
    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: `make browser-deps`"
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            # Tall enough that the task browser, its grid and the clicked task's details are
            # on screen together (for the README's picture).
            page = browser.new_page(viewport={"width": 1280, "height": 1500})
            try:
                _open_and_run_all(page, audit_lab, "03_audit_tasks.ipynb")
                _check_the_audit(page)
            finally:
                page.screenshot(path=str(ARTIFACTS / "03_audit_tasks.png"), full_page=True)
        finally:
            browser.close()


def _check_the_audit(page: Page) -> None:
    errors = page.locator(
        '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
    assert errors.count() == 0, errors.all_inner_texts()
    assert page.get_by_text("Traceback").count() == 0
    assert page.get_by_text("Error displaying widget").count() == 0

    # The details of every task in view were fetched: nothing is left without them.
    details = page.get_by_text("with no details anywhere").first
    assert details.count() == 1 and "0 with no details anywhere" in details.inner_text()

    failures = page.locator("table.imgtools-failures")
    failures.wait_for(timeout=STEP_MS)
    heads = failures.locator("thead th").all_inner_texts()
    assert heads[:2] == ["type", "category"] and heads[-1].startswith("message"), heads
    categories = failures.locator("tbody td:nth-child(2)").all_inner_texts()
    assert categories and "no details" not in categories, categories
    assert {"not owner", "licensing", "container missing"} <= set(categories), categories
    messages = failures.locator("tbody td:last-child").all_inner_texts()
    assert all(len(m) > 10 for m in messages), messages
    assert "(no message)" not in failures.inner_text()
    failures.scroll_into_view_if_needed()
    failures.screenshot(path=str(ARTIFACTS / "audit-failures.png"))

    recent = page.locator("table.imgtools-compact").first
    recent.scroll_into_view_if_needed()
    recent.screenshot(path=str(ARTIFACTS / "audit-recent.png"))
    for table in (recent, failures):
        empty = [head for head, filled in table.evaluate(_FILLED_COLUMNS) if not filled]
        assert not empty, f"columns empty in every row: {empty}"
        # It fits the output: no sideways scrolling.
        fits = table.evaluate("t => t.scrollWidth <= t.closest('.jp-OutputArea-output')"
                              ".clientWidth + 1")
        assert fits, "the table is wider than the output"

    tasks = page.locator(".imgtools-task-browser")
    tasks.wait_for(timeout=STEP_MS)
    grid = tasks.locator("table.imgtools-grid")
    page.wait_for_function(
        "() => document.querySelectorAll('.imgtools-task-browser table.imgtools-grid tbody tr')"
        ".length > 1", timeout=STEP_MS)
    empty = [head for head, filled in grid.evaluate(_FILLED_COLUMNS) if not filled]
    assert not empty, f"grid columns empty in every row: {empty}"
    widths = grid.evaluate("t => [t.scrollWidth, t.closest('.jp-OutputArea-output')"
                           ".clientWidth, [...t.querySelectorAll('thead th')].map(h => "
                           "h.offsetWidth)]")
    assert widths[0] <= widths[1] + 1, f"the grid is wider than the output: {widths}"
    # Rows are one line each: no wrapped ids, dates or durations.
    heights = grid.locator("tbody tr").evaluate_all("rows => rows.map(r => r.offsetHeight)")
    assert max(heights) < 2 * min(heights), heights

    rows = grid.locator("tbody tr")
    second = rows.nth(1)
    short = second.locator("td").first.inner_text().strip()
    second.click()
    detail = tasks.locator("div.imgtools-task-detail")
    detail.wait_for(timeout=STEP_MS)
    page.wait_for_function(
        f"() => {{ const d = document.querySelector('.imgtools-task-browser "
        f"div.imgtools-task-detail'); return d && d.textContent.includes('{short}'); }}",
        timeout=STEP_MS)
    text = detail.inner_text()
    assert "Status first seen" in text and "service time" in text, text
    assert "selected" in (second.get_attribute("class") or ""), "the clicked row is not marked"

    before = tasks.locator(".imgtools-summary, .widget-html-content").all_inner_texts()
    status = tasks.locator("select").nth(1)  # Type, Status, Source
    status.select_option("failure")
    page.wait_for_function(
        "() => { const cells = [...document.querySelectorAll("
        "'.imgtools-task-browser table.imgtools-grid tbody tr td:nth-child(3)')];"
        " return cells.length > 0 && cells.every(c => c.textContent.trim() === 'failure'); }",
        timeout=STEP_MS)
    after = tasks.locator(".imgtools-summary, .widget-html-content").all_inner_texts()
    assert before != after
    rows.first.click()
    page.wait_for_function(
        "() => { const d = document.querySelector('.imgtools-task-browser "
        "div.imgtools-task-detail'); return d && d.textContent.includes('category'); }",
        timeout=STEP_MS)
    tasks.scroll_into_view_if_needed()
    tasks.screenshot(path=str(ARTIFACTS / "audit-browser.png"))
    charts = page.locator(".jp-OutputArea-output img").first
    charts.screenshot(path=str(ARTIFACTS / "audit-charts.png"))
    assert errors.count() == 0, errors.all_inner_texts()


# -- the transfer form --------------------------------------------------------------------------

#: Seconds every task of the transfer emulator stays pending: longer than any test, so a task
#: starts only when the test moves the emulator's clock on (``advance_clock``). The test
#: checks the kernel while a task is held, then lets it go: no race, no sleep.
HOLD = 3600.0
KIB = 1024
#: A small image (the "build-agent" one is a quarter of it) in a few segments: a fast test.
TRANSFER_CONFIG = EmulatorConfig(pending_delay=HOLD, export_speed=64 * 1024 * KIB,
                                 image_size=1024 * KIB, segment_size=128 * KIB)
RUNBOOK = "04_transfer_images.ipynb"


@dataclass(frozen=True)
class TransferLab:
    lab: Lab
    emu: EmulatorHandle


@pytest.fixture
def transfer_lab(tmp_path: Path) -> Iterator[TransferLab]:
    """As ``lab``, with the kernels logged in to an emulator whose tasks wait for the test's
    word (HOLD), and the runbook's own transfers off (``name_contains = ""``): the only
    transfer is the one started from the form."""
    with start_emulator(config=TRANSFER_CONFIG) as emu, \
            _lab_server(tmp_path, emulator_environ(emu, base={})) as server:
        book = server.root / RUNBOOK
        data = json.loads(book.read_text())
        params = next(c for c in data["cells"] if "parameters" in c["metadata"].get("tags", []))
        source = "".join(params["source"])
        assert 'name_contains = "build-agent"' in source, source
        params["source"] = source.replace('name_contains = "build-agent"', 'name_contains = ""')
        book.write_text(json.dumps(data))
        yield TransferLab(server, emu)


def _step_states(page: Page) -> dict[str, str]:
    states: dict[str, str] = page.evaluate(
        "() => Object.fromEntries([...document.querySelectorAll("
        "'.imgtools-transfer-form [data-step]')].map(r => [r.dataset.step, r.dataset.state]))")
    return states


def _wait_for_step(page: Page, step: str, state: str) -> None:
    page.wait_for_function(
        f"() => {{ const r = document.querySelector('.imgtools-transfer-form "
        f"[data-step=\"{step}\"]'); return r && ['{state}', 'failed']"
        f".includes(r.dataset.state); }}", timeout=STEP_MS, polling=100)
    assert _step_states(page)[step] == state, _step_states(page)


def _status(page: Page) -> str:
    return page.locator(".imgtools-transfer-form .imgtools-status").inner_text().strip()


def _wait_for_status(page: Page, status: str) -> None:
    """Wait until the form shows ``status`` (or failed: the assertion says which)."""
    page.wait_for_function(
        f"() => {{ const s = document.querySelector('.imgtools-transfer-form .imgtools-status');"
        f" return s && ['{status}', 'failed'].includes(s.dataset.status); }}",
        timeout=STEP_MS, polling=100)
    shown = page.locator(".imgtools-transfer-form .imgtools-status").get_attribute("data-status")
    assert shown == status, page.locator(".imgtools-transfer-form").inner_text()


#: Add a code cell at the end of the notebook with the given source and run it.
_RUN_NEW_CELL = f"""async (source) => {{
  const app = {_APP};
  const notebook = app.shell.currentWidget.content;
  notebook.activeCellIndex = notebook.widgets.length - 1;
  await app.commands.execute('notebook:insert-cell-below');
  notebook.activeCell.model.sharedModel.setSource(source);
  await app.commands.execute('notebook:run-cell');
  return notebook.widgets.length - 1;
}}"""


def _kernel_answers(page: Page, label: str) -> str:
    """Run a new cell that prints the form's state now; wait for its output. It only runs if
    the kernel is free: the transfer runs on the kernel's loop, not in a cell."""
    code = (f"print('{label}', transfer_form.status, transfer_form.step_states['export_wait'],"
            " transfer_form.step_states['import_wait'])")
    index = page.evaluate(_RUN_NEW_CELL, code)
    cell = page.locator(".jp-Notebook .jp-Cell").nth(index)
    out = cell.locator(".jp-OutputArea-output").filter(has_text=label)
    out.wait_for(timeout=STEP_MS)
    return out.inner_text().strip()


def test_transfer_form_in_jupyterlab(transfer_lab: TransferLab) -> None:
    """Run All on the transfer runbook, then move the build-agent image to IAD with the
    form the way a person does (pick it in the list, type the region, choose the cleanup,
    click Transfer; Stop and Resume once): every step ends done, the kernel runs other cells
    while the export and the import are under way, no error shows anywhere (console,
    outputs, the form), and the new image in IAD has the source's bytes."""
    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: `make browser-deps`"
    ARTIFACTS.mkdir(exist_ok=True)
    console: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            console.append(message.text)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1200})
            page.on("console", on_console)
            page.on("pageerror", lambda exc: console.append(f"page error: {exc}"))
            try:
                _open_and_run_all(page, transfer_lab.lab, RUNBOOK)
                target = _transfer_with_the_form(page, transfer_lab.emu)
            finally:
                page.screenshot(path=str(ARTIFACTS / "04_transfer_images.png"), full_page=True)
        finally:
            browser.close()
    assert console == [], console

    with make_client(transfer_lab.emu) as client:
        source = client.get_image(SMALL)
        left = [o.name for o in client.files.objects(DEFAULT_TRANSFER_CONTAINER)]
        with client.in_region("IAD") as iad:
            new = iad.get_image(target)
            left += [o.name for o in iad.files.objects(DEFAULT_TRANSFER_CONTAINER)]
    assert new.status == "active" and new.name == source.name, new
    assert (new.size, new.checksum) == (source.size, source.checksum)
    assert left == [], f"cleanup 'both' left {left}"


def _transfer_with_the_form(page: Page, emu: EmulatorHandle) -> str:
    """Use the form; return the new image's id (as the form shows it)."""
    errors = page.locator(
        '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
    assert errors.count() == 0, errors.all_inner_texts()
    outputs = page.locator(".jp-OutputArea-output")
    assert outputs.filter(has_text="0 transferred, 0 failed").count() == 1
    assert outputs.filter(has_text="all transfers succeeded").count() == 1
    form = page.locator(".imgtools-transfer-form")
    form.wait_for(timeout=STEP_MS)
    form.scroll_into_view_if_needed()
    # The list fills once the form has connected and read the images.
    page.wait_for_function(
        "() => document.querySelectorAll('.imgtools-transfer-form select option')"
        ".length > 0", timeout=STEP_MS)
    transfer = form.get_by_role("button", name="Transfer")
    assert transfer.is_disabled(), "Transfer must wait for an image and a region"

    picker = form.locator("select").first
    option = picker.locator("option").filter(has_text="build-agent").first
    label = option.inner_text()
    # The Select draws its labels with no-break spaces.
    assert label.replace("\xa0", " ").startswith("✓ build-agent snapshot"), label
    picker.select_option(label=label)
    page.wait_for_function(
        f"() => [...document.querySelectorAll('.imgtools-transfer-form input')]"
        f".some(i => i.value === '{SMALL}')", timeout=STEP_MS)
    form.get_by_placeholder("e.g. IAD").fill("IAD")
    form.locator("select").nth(1).select_option("both")  # Cleanup
    page.wait_for_function(
        "() => [...document.querySelectorAll('.imgtools-transfer-form button')]"
        ".some(b => b.textContent.trim() === 'Transfer' && !b.disabled)", timeout=STEP_MS)
    transfer.click()

    # The export task is held pending: the kernel must answer while the form follows it.
    _wait_for_step(page, "export_wait", "running")
    assert _kernel_answers(page, "during-export") == "during-export running running"
    started = _status(page)

    # Stop, then Resume: the same transfer goes on from its last completed step.
    form.get_by_role("button", name="Stop").click()
    _wait_for_status(page, "failed")
    assert _step_states(page)["export_wait"] == "failed"
    resume = form.get_by_role("button", name="Resume")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.imgtools-transfer-form button')]"
        ".some(b => b.textContent.trim() === 'Resume' && !b.disabled)", timeout=STEP_MS)
    resume.click()
    page.wait_for_function(  # the stopped one's "failed" gives way first
        "() => document.querySelector('.imgtools-transfer-form .imgtools-status')"
        ".dataset.status !== 'failed'", timeout=STEP_MS, polling=100)
    _wait_for_status(page, "running")
    _wait_for_step(page, "export_wait", "running")
    assert _status(page) == started, (started, _status(page))
    emu.advance_clock(HOLD)
    _wait_for_step(page, "import_wait", "running")
    assert _step_states(page)["copy"] == "done"
    assert "MiB/s" in form.inner_text(), form.inner_text()  # the copy's progress line
    assert _kernel_answers(page, "during-import") == "during-import running done running"
    emu.advance_clock(HOLD)

    _wait_for_status(page, "done")
    states = _step_states(page)
    assert states == {step: "done" for step in STEPS}, (states, form.inner_text())
    status = form.locator(".imgtools-status").inner_text()
    found = re.search(r"new image ([0-9a-f-]{36})", status)
    assert found, status
    assert re.search(r"in \d+ segments at [\d.]+ MiB/s; new image", form.inner_text()), \
        form.inner_text()

    form.scroll_into_view_if_needed()
    form.screenshot(path=str(ARTIFACTS / "transfer-form.png"))
    assert page.get_by_text("Error displaying widget").count() == 0
    assert errors.count() == 0, errors.all_inner_texts()
    assert form.locator(".imgtools-error").count() == 0, form.inner_text()
    failed = page.evaluate(
        f"() => {_APP}.shell.currentWidget.content.widgets.filter(c => c.model.type === "
        "'code').flatMap(c => c.model.outputs.toJSON()).filter(o => o.output_type === "
        "'error').map(o => o.ename + ': ' + o.evalue)")
    assert failed == [], failed
    return found.group(1)

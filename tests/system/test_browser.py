"""JupyterLab in a real browser: Debian's Chromium, driven by Playwright, against a JupyterLab
server started here, opens 01_explore_export.ipynb, runs every cell, uses the export form the
way a person does, and checks that nothing shows an error.

The kernel gets no credentials, so the notebook takes its default path: the local emulator,
started in the background by the kernel. The screenshot goes to tests/artifacts/.
"""

from __future__ import annotations

import os
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
from playwright.sync_api import Page, sync_playwright

from imgtools.lab import CREDENTIAL_VARIABLES, lab_argv, notebooks_dir, write_lab_settings

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
    """A JupyterLab server on a free loopback port over a temporary copy of notebooks/."""
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

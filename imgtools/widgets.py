"""Jupyter forms: ``ExportForm`` (pick an image and a container, export, follow, verify,
download) and ``TaskBrowser`` (filter, read and export the task history).

Both are ``ipywidgets.VBox`` subclasses, so a notebook shows them as the last expression of a
cell. Their state lives in traits (``status``, ``polls``, ``error``, ...), so everything a
person can do is testable without a browser: set the input widgets' values, ``click()`` a
button, ``await form.settled()``, read the traits.

Work never blocks the kernel: each action runs as an asyncio task on the kernel's running
loop. Every status change (creating an export, following it, fetching a task's details) goes
through an ``AsyncClient`` on that loop: following is ``AsyncExportTask.wait``, the library's
one polling loop, so the form polls, paces and obeys ``Retry-After`` exactly as ``wait`` does
and can be cancelled at any moment (kernel restart, a second form). Listing, verifying and
downloading use the sync client in worker threads (``asyncio.to_thread``). Errors appear in
the form as one readable line; no traceback reaches the notebook.
"""

from __future__ import annotations

import asyncio
import html
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import UTC, date, datetime
from datetime import time as dtime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as w
import numpy as np
import pandas as pd
from traitlets import Bool, Float, Int, Unicode

import imgtools
from imgtools._exceptions import (
    ConfigurationError,
    ImgToolsError,
    NotFound,
    TaskFailed,
    ValidationError,
)
from imgtools._models import Image, Task, TaskStatus
from imgtools._polling import PollPolicy
from imgtools._region_frames import audit_frame
from imgtools._tasklog import TaskLog
from imgtools._validation import validate_container
from imgtools.details import (
    DEFAULT_DETAILS,
    check_details,
    fetch_details_async,
    fill_rows,
    has_details,
)
from imgtools.failures import categorize
from imgtools.formatting import format_bytes, one_line
from imgtools.history import STATUS_STYLES, events_frame, format_duration, merged
from imgtools.tables import display_frame

if TYPE_CHECKING:
    from imgtools._client import AsyncClient, Client

__all__ = ["ExportForm", "TaskBrowser", "format_bytes", "one_line"]

#: How often the elapsed time in the status line moves on while an export runs, seconds.
TICK = 0.5


def _async_twin(client: Client) -> AsyncClient:
    """An ``AsyncClient`` with ``client``'s credentials, settings and audit log: the forms
    follow tasks with the library's async operations, on the kernel's loop."""
    from imgtools._client import AsyncClient

    if client._inner is not None:
        # Its transport is sync and cannot be shared; a twin would bypass it (and its fakes).
        raise ConfigurationError("this client runs on a transport of its own: pass the form "
                                 "an async_client= made on a matching async transport")
    creds = client._creds
    options: dict[str, Any]
    if creds.kind == "token":
        assert creds.token is not None
        options = {"endpoint": creds.endpoint, "token": creds.token.reveal(),
                   "files_endpoint": creds.files_endpoint, "tenant_id": creds.tenant_id}
    else:
        options = {"username": creds.username, "region": creds.region,
                   "identity_url": creds.identity_url, "tenant_id": creds.tenant_id,
                   "api_key": None if creds.api_key is None else creds.api_key.reveal(),
                   "password": None if creds.password is None else creds.password.reveal()}
    log = client.log
    return AsyncClient(**options, poll=client.poll, wait_timeout=client.wait_timeout,
                       retries=client._retries, timeout=client._timeout.read or 30.0,
                       verify=client._verify, log=log if log is not None else False,
                       environ={})


def _describe(client: Client) -> str:
    from imgtools.lab import is_local

    where = "the local emulator" if is_local(client) else "Cloud Images"
    tenant = f", tenant {client.tenant_id}" if client.tenant_id else ""
    return f"Connected to {where} at {client.endpoint}{tenant}."


async def _connect() -> Client:
    # The environment's credentials, else the emulator (started once per kernel, stopped when
    # the kernel exits); starting it takes a moment, so it runs off the event loop.
    return await asyncio.to_thread(imgtools.connect, emulator=True)


class _Form(w.VBox):  # type: ignore[misc]
    """What both forms share: a client made on demand and the asyncio tasks they run."""

    error = Unicode("", help="the last error, as one line ('' when none)")
    busy = Bool(False, help="true while an action runs")
    connection = Unicode("", help="who and where the form is connected to")

    #: ``error`` once an action is stopped (a form whose actions can go on says how).
    stopped_message = "cancelled"

    def __init__(self, client: Client | None, async_client: AsyncClient | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.client: Client | None = client
        self.aclient: AsyncClient | None = async_client
        self._own_aclient = async_client is None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._active = 0

    async def _client(self) -> Client:
        if self.client is None:
            self.connection = "Connecting…"
            self.client = await _connect()
        self.connection = _describe(self.client)
        return self.client

    async def _async_client(self) -> AsyncClient:
        """The async twin of ``client`` (same account, settings and audit log): every status
        change is asked through it, so the forms poll exactly as ``AsyncExportTask.wait``."""
        if self.aclient is None:
            self.aclient = await (_async_twin(await self._client())).open()
        return self.aclient

    def _run(self, action: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``action()`` as a task on the running loop (in a kernel), or to completion when
        no loop runs (a plain script). Errors end in ``self.error``, as one line."""
        # Busy from the click on, not from when the task first runs: the Export button is
        # disabled at once, so a double click cannot start a second export.
        self._active += 1
        self.busy = True

        async def guarded() -> None:
            try:
                await action()
            except asyncio.CancelledError:
                self.error = self.stopped_message
                raise
            except Exception as exc:
                self.error = one_line(exc)
            finally:
                self._active -= 1
                self.busy = self._active > 0

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run(guarded())
            return
        task = loop.create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        """Stop what runs and close the connections the form opened itself."""
        self.cancel()
        await self.settled()
        if self.aclient is not None and self._own_aclient:
            await self.aclient.aclose()
            self.aclient = None

    async def settled(self) -> None:
        """Wait until every action started so far (and any they started) has finished."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def cancel(self) -> None:
        """Stop whatever runs (an export goes on in the service; only the watching stops)."""
        for task in list(self._tasks):
            task.cancel()

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # Where widgets cannot be drawn (a terminal, nbconvert to text), say what it is.
        printer.text(f"{type(self).__name__}({self.connection or 'not connected'})")


class ExportForm(_Form):
    """Export one image into a Cloud Files container, follow the task, verify, download.

    ``client``: a ``Client``; ``None`` uses the environment's credentials, else starts the
    local emulator in the background. ``poll``: the polling policy (default: fast against a
    local emulator, the client's own otherwise). ``timeout``: seconds to follow the task.
    ``async_client``: the ``AsyncClient`` that creates and follows the export (default: a
    twin of ``client``, same account, settings and audit log); polling is
    ``AsyncExportTask.wait``, so the form polls exactly as ``wait`` does.
    ``download_dir``: where Download writes ``<image id>.vhd``.

    Traits to read: ``status`` (``idle``, ``starting``, ``pending``, ``processing``,
    ``success``, ``failure``, ``error``), ``polls``, ``elapsed`` (seconds), ``task_id``,
    ``export_location``, ``verified`` ('' / 'ok' / 'failed'), ``downloaded`` (path), ``error``.
    """

    status = Unicode("idle")
    polls = Int(0)
    elapsed = Float(0.0)
    task_id = Unicode("")
    export_location = Unicode("")
    verified = Unicode("")
    downloaded = Unicode("")

    def __init__(self, client: Client | None = None, *, poll: PollPolicy | None = None,
                 timeout: float | None = None, download_dir: str | Path = ".",
                 async_client: AsyncClient | None = None) -> None:
        self._images: dict[str, Image] = {}
        self._reasons: dict[str, str | None] = {}
        self._containers: list[str] = []
        self._poll = poll
        self._timeout = timeout
        self._last_task: Task | None = None

        self.connection_label = w.HTML("Connecting…")
        self.search = w.Text(placeholder="search images by name", description="Image",
                             continuous_update=True, layout=w.Layout(width="60%"))
        self.image_picker = w.Select(options=[], rows=7, description="",
                                     layout=w.Layout(width="95%"))
        self.image_info = w.HTML("")
        self.container = w.Combobox(placeholder="existing container, or a new name",
                                    options=[], ensure_option=False, description="Container",
                                    continuous_update=True, layout=w.Layout(width="60%"))
        self.create_container = w.Checkbox(False, description="create it if missing",
                                           indent=False)
        self.container_info = w.HTML("")
        self.export_button = w.Button(description="Export", button_style="primary",
                                      icon="upload", disabled=True, tooltip="start the export")
        self.status_line = w.HTML(self._status_html())
        self.error_line = w.HTML("")
        self.location_line = w.HTML("")
        self.verify_button = w.Button(description="Verify", icon="check", disabled=True,
                                      layout=w.Layout(display="none"))
        self.download_button = w.Button(description="Download", icon="download",
                                        disabled=True, layout=w.Layout(display="none"))
        self.download_dir = w.Text(str(download_dir), description="Save in",
                                   layout=w.Layout(display="none", width="60%"))
        self.progress = w.FloatProgress(value=0.0, min=0.0, max=1.0, description="",
                                        layout=w.Layout(display="none", width="60%"))
        self.result_line = w.HTML("")
        children = [
            w.HTML("<b>Export an image to Cloud Files</b>"), self.connection_label,
            self.search, self.image_picker, self.image_info,
            w.HBox([self.container, self.create_container]), self.container_info,
            self.export_button, self.status_line, self.error_line, self.location_line,
            w.HBox([self.verify_button, self.download_button]), self.download_dir,
            self.progress, self.result_line,
        ]
        super().__init__(client, async_client, children=children)
        self.add_class("imgtools-export-form")

        self.search.observe(lambda _: self._fill_picker(), names="value")
        self.image_picker.observe(lambda _: self._validate(), names="value")
        self.container.observe(lambda _: self._validate(), names="value")
        self.create_container.observe(lambda _: self._validate(), names="value")
        self.export_button.on_click(lambda _: self.export())
        self.verify_button.on_click(lambda _: self.verify())
        self.download_button.on_click(lambda _: self.download())
        self.observe(self._show_status, names=["status", "polls", "elapsed", "task_id"])
        self.observe(self._show_error, names="error")
        self.observe(lambda _: self._validate(), names="busy")
        self.observe(lambda change: setattr(self.connection_label, "value",
                                            html.escape(change["new"])), names="connection")
        self._run(self._load)

    # -- loading ----------------------------------------------------------------------------

    async def _load(self) -> None:
        client = await self._client()
        images = await asyncio.to_thread(lambda: list(client.images()))
        self._images = {image.id: image for image in images}
        self._reasons = {}
        for image in images:
            verdict = client.exportability(image)
            self._reasons[image.id] = None if verdict.ok else (verdict.reason or "not exportable")
        try:
            containers = await asyncio.to_thread(lambda: client.files.containers())
        except ImgToolsError as exc:
            # Without Cloud Files the form still exports; only the container list is missing.
            self.container_info.value = html.escape(f"Containers unavailable: {one_line(exc)}")
            containers = []
        self._containers = sorted(c.name for c in containers)
        self.container.options = tuple(self._containers)
        self._fill_picker()

    def reload(self) -> None:
        """Read the images and containers again."""
        self._run(self._load)

    def _label(self, image: Image) -> str:
        reason = self._reasons.get(image.id)
        mark = "✓" if reason is None else "✗"
        text = (f"{mark} {image.name or image.id} · {format_bytes(image.size)} · "
                f"{image.status}")
        return text if reason is None else f"{text} · cannot export: {reason}"

    def _fill_picker(self) -> None:
        needle = self.search.value.strip().lower()
        # Exportable images first, then by name, so the likely choice is at the top.
        chosen = sorted(
            (image for image in self._images.values()
             if not needle or needle in (image.name or "").lower() or needle in image.id),
            key=lambda image: (self._reasons.get(image.id) is not None, image.name or ""))
        current = self.image_picker.value
        self.image_picker.options = [(self._label(image), image.id) for image in chosen]
        if current in {image.id for image in chosen}:
            self.image_picker.value = current
        self._validate()

    # -- validation -------------------------------------------------------------------------

    @property
    def image(self) -> Image | None:
        """The picked image."""
        value = self.image_picker.value
        return None if value is None else self._images.get(value)

    def problems(self) -> list[str]:
        """Why Export is disabled (empty when it is enabled)."""
        problems: list[str] = []
        image = self.image
        if image is None:
            problems.append("pick an image")
        elif self._reasons.get(image.id) is not None:
            problems.append(f"this image cannot be exported: {self._reasons[image.id]}")
        name = self.container.value
        if not name:
            problems.append("name a container")
        else:
            try:
                validate_container(name)
            except ValidationError as exc:
                problems.append(one_line(exc))
            else:
                if name not in self._containers and not self.create_container.value:
                    problems.append(f"container {name!r} does not exist: tick "
                                    "'create it if missing'")
        return problems

    def _validate(self) -> None:
        problems = self.problems()
        self.export_button.disabled = bool(problems) or self.busy or self.client is None
        image = self.image
        if image is None:
            self.image_info.value = ""
        else:
            reason = self._reasons.get(image.id)
            verdict = ("<span style='color:#15803d'>can be exported</span>" if reason is None
                       else f"<span style='color:#b91c1c'>cannot be exported: "
                            f"{html.escape(reason)}</span>")
            self.image_info.value = (f"<code>{image.id}</code> · {format_bytes(image.size)} · "
                                     f"{html.escape(image.status)} · {verdict}")
        container_problems = [p for p in problems if "container" in p]
        if container_problems:
            self.container_info.value = html.escape(container_problems[0])
        elif self.container.value in self._containers:
            self.container_info.value = "existing container"
        elif self.container.value:
            self.container_info.value = "new container: created at export"

    # -- export -----------------------------------------------------------------------------

    def export(self) -> None:
        """What the Export button does: start the export and follow it (an asyncio task)."""
        problems = self.problems()
        if problems:
            self.error = problems[0]
            return
        if self.busy:
            self.error = "still busy: wait for the running export or check to finish"
            return
        self._run(self._export)

    async def _export(self) -> None:
        client = await self._client()
        image = self.image
        assert image is not None
        container = self.container.value
        self.error = self.export_location = self.verified = self.downloaded = ""
        self.task_id, self.polls, self.elapsed = "", 0, 0.0
        self.location_line.value = self.result_line.value = ""
        self._show_result_buttons(False)
        self.status = "starting"
        started = time.monotonic()
        ticker = asyncio.get_running_loop().create_task(self._tick(started))
        try:
            aclient = await self._async_client()
            handle = await aclient.begin_export(image.id, container,
                                                create_container=self.create_container.value)
            if container not in self._containers:
                self._containers = sorted([*self._containers, container])
                self.container.options = tuple(self._containers)
            self.task_id = handle.id
            if handle.task is not None:
                self._last_task = handle.task
                self.status = handle.task.status.value
            policy = self._poll or _policy_for(client)
            try:
                final = await handle.wait(self._timeout, poll=policy, on_update=self._observe)
            except TaskFailed as failed:
                final = failed.task
                self._last_task = final
                self.status = final.status.value
        except BaseException:
            if self.status not in ("failure",):
                self.status = "error"
            raise
        finally:
            ticker.cancel()
            self.elapsed = time.monotonic() - started
        if final.status is TaskStatus.FAILURE:
            self.error = f"the export failed: {final.message or 'the service gave no reason'}"
            return
        self.export_location = final.export_location or ""
        self.location_line.value = (f"Exported to <code>{html.escape(self.export_location)}"
                                    "</code>")
        self._show_result_buttons(True)

    def _observe(self, task: Task) -> None:
        # wait's on_update: called after every answered poll.
        self._last_task = task
        self.polls += 1
        self.status = task.status.value

    async def _tick(self, started: float) -> None:
        while True:
            self.elapsed = time.monotonic() - started
            await asyncio.sleep(TICK)

    def _status_html(self) -> str:
        if self.status == "idle":
            return "<span style='color:#6b7280'>Status: idle</span>"
        css = STATUS_STYLES.get(self.status, "background-color: #fee2e2; color: #7f1d1d")
        parts = [f"<span class='imgtools-status' style='{css}; padding: 1px 6px; "
                 f"border-radius: 3px'>{html.escape(self.status)}</span>",
                 f"{self.elapsed:.1f} s", f"{self.polls} poll{'s' if self.polls != 1 else ''}"]
        if self.task_id:
            parts.append(f"task <code>{html.escape(self.task_id)}</code>")
        return "Status: " + " · ".join(parts)

    def _show_status(self, _change: Any = None) -> None:
        self.status_line.value = self._status_html()

    def _show_error(self, _change: Any = None) -> None:
        self.error_line.value = ("" if not self.error else
                                 f"<span class='imgtools-error' style='color:#b91c1c'>"
                                 f"{html.escape(self.error)}</span>")

    def _show_result_buttons(self, visible: bool) -> None:
        display = None if visible else "none"
        for widget in (self.verify_button, self.download_button, self.download_dir):
            widget.layout.display = display
        self.verify_button.disabled = self.download_button.disabled = not visible
        self.progress.layout.display = "none"

    # -- after success ----------------------------------------------------------------------

    def verify(self) -> None:
        """What Verify does: check the manifest, the segments, the sizes and every MD5."""
        if not self.export_location:
            self.error = "nothing to verify yet: export first"
            return
        self._run(self._verify)

    async def _verify(self) -> None:
        client = await self._client()
        assert self._last_task is not None
        self.error = ""
        self.result_line.value = "Verifying…"
        self._show_progress(0, 1)
        report = await asyncio.to_thread(
            client.verify_export, self._last_task,
            progress=self._progress_from_thread(asyncio.get_running_loop()))
        self.verified = "ok" if report.ok else "failed"
        self.result_line.value = html.escape(f"Verified: {report}")
        if not report.ok:
            self.error = "verification failed: " + "; ".join(report.problems)

    def download(self) -> None:
        """What Download does: fetch the export into ``<download dir>/<image id>.vhd``,
        checked segment by segment, with a progress bar."""
        if not self.export_location:
            self.error = "nothing to download yet: export first"
            return
        self._run(self._download)

    async def _download(self) -> None:
        client = await self._client()
        assert self._last_task is not None
        name = self.export_location.rsplit("/", 1)[-1]
        dest = Path(self.download_dir.value).expanduser() / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        self.error = ""
        self.result_line.value = f"Downloading to {html.escape(str(dest))}…"
        self._show_progress(0, 1)
        result = await asyncio.to_thread(
            client.download_export, self._last_task, dest,
            progress=self._progress_from_thread(asyncio.get_running_loop()))
        self.downloaded = str(result.path)
        self.result_line.value = html.escape(
            f"Downloaded {format_bytes(result.bytes)} in {result.segments} segment(s) to "
            f"{result.path}, every segment checked")

    def _progress_from_thread(self, loop: asyncio.AbstractEventLoop
                              ) -> Callable[[int, int], None]:
        # Called in the worker thread: widgets change only on the loop's thread.
        def report(done: int, total: int) -> None:
            loop.call_soon_threadsafe(self._show_progress, done, total)
        return report

    def _show_progress(self, done: int, total: int) -> None:
        self.progress.layout.display = None
        self.progress.max = float(max(total, 1))
        self.progress.value = float(min(done, max(total, 1)))
        self.progress.description = f"{100 * done / total:.0f} %" if total else ""


def _policy_for(client: Any) -> PollPolicy:
    from imgtools.lab import poll_policy

    policy = poll_policy(client)
    return policy if policy is not None else client.poll  # type: ignore[no-any-return]


# -- the task browser ---------------------------------------------------------------------------

_ALL = "all"
#: Rows handed to the grid at most: the newest of the view. Filtering and counting use every
#: row; shipping 100,000 rows to the browser on each change would take seconds.
GRID_ROWS = 1000
#: Rows per page of the grid.
GRID_PAGE = 15


class TaskBrowser(_Form):
    """Past and running tasks from the service and the audit log: filter, click a row to see
    it in full, export to CSV.

    ``client``: a ``Client`` (``None``: the environment's credentials, else the emulator);
    ``log``: a ``TaskLog`` (``None``: the client's); ``details``: which task details to fetch
    on Refresh (``imgtools.details``: ``"missing"`` by default, every task shown that the log
    lacks); ``frame``: show this tasks frame instead of reading the service and log;
    ``regions``: read these regions of the login (``"all"``, one name or several; default
    the client's own). A clicked task is fetched from its own region.

    The grid is itables' ``ITable`` widget: a real HTML table (copyable text, the full id on
    hover), sorted and paged in the browser, the clicked row highlighted. Traits to read:
    ``rows`` (tasks in the view), ``selected`` (task id), ``detail`` (its description, text),
    ``csv_path`` (absolute), ``error``. The full frame is ``browser.frame``, the filtered one
    ``browser.view`` (newest first); the grid shows ``browser.view.iloc[:GRID_ROWS]``.
    """

    rows = Int(0)
    selected = Unicode("")
    detail = Unicode("")
    csv_path = Unicode("")

    def __init__(self, client: Client | None = None, log: TaskLog | None = None, *,
                 csv_file: str | Path = "tasks.csv", details: str = DEFAULT_DETAILS,
                 frame: pd.DataFrame | None = None, regions: str | Sequence[str] | None = None,
                 async_client: AsyncClient | None = None) -> None:
        from itables.widget import ITable

        self.task_log = log
        self._regions = regions
        self._details = check_details(details)
        self.frame: pd.DataFrame = pd.DataFrame() if frame is None else frame
        self.view: pd.DataFrame = pd.DataFrame()
        self._shown: list[str] = []  # ids of the grid's rows, in the grid's order
        self.type_filter = w.Dropdown(options=[_ALL, "export", "import"], value=_ALL,
                                      description="Type", layout=w.Layout(width="190px"))
        self.status_filter = w.Dropdown(
            options=[_ALL, *(s.value for s in TaskStatus)], value=_ALL, description="Status",
            layout=w.Layout(width="210px"))
        self.source_filter = w.Dropdown(options=[_ALL, "service", "log"], value=_ALL,
                                        description="Source", layout=w.Layout(width="190px"))
        self.since = w.DatePicker(description="From", value=None,
                                  layout=w.Layout(width="230px"))
        self.until = w.DatePicker(description="To", value=None, layout=w.Layout(width="230px"))
        self.refresh_button = w.Button(description="Refresh", icon="refresh",
                                       layout=w.Layout(width="110px"))
        self.summary_line = w.HTML("")
        self.details_progress = w.IntProgress(value=0, min=0, max=1, description="details",
                                              layout=w.Layout(display="none", width="60%"))
        self.grid = ITable(pd.DataFrame({"id": []}), select={"style": "single"},
                           classes="display compact nowrap imgtools-grid", paging=True,
                           pageLength=GRID_PAGE, lengthMenu=[GRID_PAGE, 50, 200],
                           allow_html=True, order=[], autoWidth=False,
                           style="width:100%;margin:0")
        self.detail_view = w.HTML("")
        self.csv_file = w.Text(str(csv_file), description="CSV file")
        self.csv_button = w.Button(description="Export CSV", icon="file")
        self.csv_line = w.HTML("")
        self.connection_label = w.HTML("Connecting…" if frame is None else "")
        self.error_line = w.HTML("")
        children = [
            w.HTML(f"<b>Tasks</b><style>{GRID_CSS}</style>"), self.connection_label,
            w.HBox([self.type_filter, self.status_filter, self.source_filter],
                   layout=w.Layout(flex_flow="row wrap")),
            w.HBox([self.since, self.until, self.refresh_button],
                   layout=w.Layout(flex_flow="row wrap")),
            self.summary_line, self.details_progress, self.error_line,
            self.grid, self.detail_view,
            w.HBox([self.csv_file, self.csv_button]), self.csv_line,
        ]
        super().__init__(client, async_client, children=children)
        self.add_class("imgtools-task-browser")
        for widget in (self.type_filter, self.status_filter, self.source_filter, self.since,
                       self.until):
            widget.observe(lambda _: self._apply_filters(), names="value")
        self.grid.observe(lambda change: self._row_clicked(change["new"]),
                          names="selected_rows")
        self.refresh_button.on_click(lambda _: self.refresh())
        self.csv_button.on_click(lambda _: self.export_csv())
        self.observe(lambda change: setattr(self.connection_label, "value",
                                            html.escape(change["new"])), names="connection")
        self.observe(lambda change: setattr(
            self.error_line, "value",
            f"<span class='imgtools-error' style='color:#b91c1c'>{html.escape(change['new'])}"
            "</span>" if change["new"] else ""), names="error")
        if frame is None:
            self.refresh()
        else:
            self._apply_filters()

    # -- reading ----------------------------------------------------------------------------

    def refresh(self) -> None:
        """What Refresh does: read the service's tasks and the log again, then fetch the
        details the log lacks (``details``), a few at a time, with a progress bar."""
        self._run(self._refresh)

    async def _refresh(self) -> None:
        self.error = ""
        client = await self._client()
        log = self.task_log if self.task_log is not None else client.log
        if log is not None and not isinstance(log, TaskLog):
            log = None
        if self.task_log is None and isinstance(log, TaskLog):
            self.task_log = log
        if self._regions is None:
            self.frame = await asyncio.to_thread(merged, client, log)
        else:
            regions = self._regions
            self.frame = await asyncio.to_thread(audit_frame, client, regions=regions, log=log)
        self._apply_filters()
        if self._details != "none":
            found = await fetch_details_async(
                self.frame, await self._async_client(), log, details=self._details,
                progress=self._show_details_progress)
            self.details_progress.layout.display = "none"
            self.frame = found.frame
            self._apply_filters()

    def _show_details_progress(self, done: int, total: int) -> None:
        self.details_progress.layout.display = None if total and done < total else "none"
        self.details_progress.max = max(total, 1)
        self.details_progress.value = done
        self.details_progress.description = f"details {done}/{total}"

    # -- filtering --------------------------------------------------------------------------

    def _apply_filters(self) -> None:
        frame = self.frame
        if not len(frame):
            self.view = frame
        else:
            mask = np.ones(len(frame), dtype=bool)
            for column, widget in (("type", self.type_filter), ("status", self.status_filter),
                                   ("source", self.source_filter)):
                if widget.value != _ALL:
                    mask &= (frame[column] == widget.value).to_numpy()
            if self.since.value is not None:
                mask &= (frame["created_at"] >= _day_start(self.since.value)).to_numpy()
            if self.until.value is not None:
                mask &= (frame["created_at"]
                         < _day_start(self.until.value) + pd.Timedelta(days=1)).to_numpy()
            # Newest first: what someone opening the browser wants to see.
            chosen = frame.loc[mask]
            stamps = pd.DatetimeIndex(chosen["created_at"]).asi8
            order = np.argsort(-stamps, kind="stable")
            self.view = chosen.iloc[order].reset_index(drop=True)
        self.rows = len(self.view)
        self.summary_line.value = self._summary_html()
        self._fill_grid()

    def _fill_grid(self) -> None:
        shown = self.view.iloc[:GRID_ROWS] if len(self.view) else self.view
        self._shown = shown["id"].astype(str).tolist() if len(shown) else []
        cells = display_frame(shown) if len(shown) else pd.DataFrame({"id": []})
        if "status" in cells:
            cells["status"] = [f"<span class='imgtools-status' style='{STATUS_STYLES.get(v, '')};"
                               f" padding: 0 4px; border-radius: 3px'>{v}</span>"
                               for v in cells["status"]]
        keep = [self._shown.index(self.selected)] if self.selected in self._shown else []
        with self.grid.hold_sync():
            self.grid.update(cells, selected_rows=keep, allow_html=True)
        if not keep and self.selected and self.selected not in self._shown:
            self.selected = self.detail = ""
            self.detail_view.value = ""

    def _summary_html(self) -> str:
        if not len(self.view):
            return f"0 of {len(self.frame)} tasks"
        counts = self.view["status"].value_counts()
        parts = ", ".join(f"{int(counts.get(s, 0))} {s}" for s in
                          ("success", "failure", "processing", "pending") if counts.get(s, 0))
        text = f"{len(self.view):,} of {len(self.frame):,} tasks: {parts}"
        missing = ~has_details(self.view)
        if missing.any():
            listed = (self.view["source"] == "service").to_numpy()
            text += (f" · {int((missing & ~listed).sum())} with no details anywhere (purged, "
                     f"never seen in full here), {int((missing & listed).sum())} not fetched")
        if len(self.view) > GRID_ROWS:
            text += (f" · the grid shows the newest {GRID_ROWS:,}: narrow the filters, or "
                     "Export CSV for all")
        return html.escape(text)

    # -- one task ---------------------------------------------------------------------------

    def _row_clicked(self, rows: list[int]) -> None:
        if rows and 0 <= rows[0] < len(self._shown):
            task_id = self._shown[rows[0]]
            if task_id != self.selected or not self.detail:
                self.show_task(task_id)

    def select_row(self, position: int) -> None:
        """What a click on the grid's ``position``-th row (0: the newest shown) does."""
        self.grid.selected_rows = [position]

    def show_task(self, task_id: str | None) -> None:
        """Show one task in full: input, result, message and when each status was first seen.

        What the log holds in full is shown at once; a task it lacks is fetched
        (``GET /v2/tasks/{id}`` through the async client, recorded in the log), and the
        fetched details fill its row in the grid too."""
        if not task_id:
            return
        self.selected = task_id
        if task_id in self._shown and self.grid.selected_rows != [self._shown.index(task_id)]:
            self.grid.selected_rows = [self._shown.index(task_id)]
        task = self.task_log.get(task_id) if self.task_log is not None else None
        self._describe(task_id, task)
        if (task is None or task.is_stub) and self._listed(task_id) and (
                self.client is not None or self.aclient is not None):
            self._run(lambda: self._fetch_one(task_id))

    def _listed(self, task_id: str) -> bool:
        rows = self.frame.loc[self.frame["id"] == task_id, "source"]
        return bool(len(rows)) and str(rows.iloc[0]) == "service"

    async def _fetch_one(self, task_id: str) -> None:
        aclient = await self._async_client()
        rows = self.frame.loc[self.frame["id"] == task_id]
        region = rows["region"].iloc[0] if len(rows) and "region" in rows else None
        # A task is found only through its own region's endpoint: a twin of the login there.
        twin = (aclient.in_region(str(region)) if aclient.region is not None
                and not pd.isna(region) and str(region) != aclient.region else None)
        try:
            task = await (twin or aclient).get_task(task_id)
        except NotFound:
            return  # purged by the service since: what the log holds is all there is
        finally:
            if twin is not None:
                await twin.aclose()
        if self.task_log is not None and self.task_log is not aclient.log:
            self.task_log.record([task])
        self.frame = self.frame.copy()
        fill_rows(self.frame, [task])
        self._apply_filters()  # the row's cells now show what was fetched
        if self.selected == task_id:
            self._describe(task_id, task)

    def _describe(self, task_id: str, task: Task | None) -> None:
        row = self.frame.loc[self.frame["id"] == task_id]
        record = row.iloc[0] if len(row) else None
        fields: list[tuple[str, str]] = [("id", task_id)]
        if task is not None:
            fields += [("type", task.type), ("status", task.status.value),
                       ("owner", task.owner or ""),
                       ("created", f"{task.created_at:%Y-%m-%d %H:%M:%S} UTC"),
                       ("updated", f"{task.updated_at:%Y-%m-%d %H:%M:%S} UTC")]
            if task.expires_at is not None:
                fields.append(("expires", f"{task.expires_at:%Y-%m-%d %H:%M:%S} UTC"))
            if task.duration is not None:
                fields.append(("duration", format_duration(task.duration)))
        elif record is not None:
            fields += [("type", str(record["type"])), ("status", str(record["status"])),
                       ("created", _stamp(record["created_at"]) + " UTC")]
        if record is not None:
            fields += [(name, where) for name in ("region", "account")
                       if isinstance(where := record.get(name), str)]
            fields.append(("source", "the service lists it" if str(record["source"]) ==
                           "service" else "only the audit log knows it (purged by the "
                           "service)"))
        if task is not None and not task.is_stub:
            fields += [("input", _mapping(task.input)), ("result", _mapping(task.result))]
            if task.status is TaskStatus.FAILURE:
                found = categorize(task.message)
                fields.append(("category", str(found) if task.message else "unknown"))
            fields.append(("message", task.message or "(none)"))
        else:
            fields.append(("details", "fetching…" if self._listed(task_id) and (
                self.client is not None or self.aclient is not None) else
                "none anywhere: purged by the service and never seen in full here"))
        events = self._events(task_id, task, record)
        lines = [f"{name}: {value}" for name, value in fields]
        if events:
            lines.append("status first seen:")
            lines += [f"  {status:<10} {when}  ({how})" for status, when, how in events]
        self.detail = "\n".join(lines)
        self.detail_view.value = _detail_html(fields, events)

    def _events(self, task_id: str, task: Task | None, record: Any
                ) -> list[tuple[str, str, str]]:
        """(status, when, where the time comes from) for each status, first sighting first.

        A status's time is the service's own ``updated_at`` from the first answer that
        showed it when the log has one (when the service says the task was in that state);
        otherwise it is when this machine first saw it. ``pending`` is the task's
        ``created_at``, a service time too."""
        out: list[tuple[str, str, str]] = []
        created = task.created_at if task is not None else (
            None if record is None else record["created_at"])
        if created is not None:
            out.append(("pending", _stamp(created), SERVICE_TIME + " (created_at)"))
        if self.task_log is None:
            return out
        events = events_frame(self.task_log, task_id)
        for status, seen, updated in zip(events["status"].astype(str), events["seen_at"],
                                         events["updated_at"], strict=True):
            if status == "pending":
                continue
            if updated is not None and not pd.isna(updated):
                out.append((status, _stamp(updated),
                            f"{SERVICE_TIME} (updated_at); first seen here {_stamp(seen)}"))
            else:
                out.append((status, _stamp(seen), LOCAL_TIME))
        return out

    # -- CSV --------------------------------------------------------------------------------

    def export_csv(self, path: str | Path | None = None) -> Path:
        """What Export CSV does: write every task of the view (not only those in the grid)
        to ``path`` (default: the CSV file box); returns the absolute path it wrote."""
        target = Path(path if path is not None else self.csv_file.value).expanduser()
        target = target.resolve()
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            self.view.to_csv(target, index=False)
        except OSError as exc:
            self.error = one_line(exc)
            raise
        self.csv_path = str(target)
        self.csv_line.value = (f"Wrote {len(self.view):,} task(s) to "
                               f"<code>{html.escape(str(target))}</code>")
        return target


#: How the events list labels where a status's time comes from.
SERVICE_TIME = "service time"
LOCAL_TIME = "first seen by this machine (no service time)"

#: The grid's rules: rows never wrap, the last column (failure) takes the width the others
#: leave and is cut with "…" (its full text on hover; ``max-width: 0`` + ``width: 100%`` is
#: what lets a cell shrink below its text), so the table fits the output.
GRID_CSS = """
.imgtools-task-browser table.imgtools-grid { width: 100% !important; }
.imgtools-task-browser table.imgtools-grid td { white-space: nowrap;
  font-variant-numeric: tabular-nums; }
.imgtools-task-browser table.imgtools-grid td:last-child,
.imgtools-task-browser table.imgtools-grid th:last-child { max-width: 0; width: 100%;
  overflow: hidden; text-overflow: ellipsis; }
.imgtools-task-browser table.imgtools-grid tbody tr { cursor: pointer; }
.imgtools-task-browser .imgtools-task-detail { line-height: 1.5; }
.imgtools-task-browser .imgtools-task-detail td, .imgtools-task-browser .imgtools-task-detail th {
  padding: 1px 12px 1px 0; vertical-align: top; text-align: left; }
""".strip()


def _stamp(value: Any) -> str:
    return "" if value is None or pd.isna(value) else pd.Timestamp(value).strftime(
        "%Y-%m-%d %H:%M:%S")


def _detail_html(fields: list[tuple[str, str]], events: list[tuple[str, str, str]]) -> str:
    rows = "".join(f"<tr><td><b>{html.escape(k)}</b></td><td><code>{html.escape(v)}</code>"
                   "</td></tr>" if k == "id" else
                   f"<tr><td><b>{html.escape(k)}</b></td><td>{html.escape(v)}</td></tr>"
                   for k, v in fields)
    out = f"<table class='imgtools-task-detail'>{rows}</table>"
    if events:
        items = "".join(f"<tr><td>{html.escape(s)}</td><td><code>{html.escape(t)}</code></td>"
                        f"<td>{html.escape(h)}</td></tr>" for s, t, h in events)
        out += ("<div><b>Status first seen</b> (UTC)</div><table class='imgtools-task-detail "
                f"imgtools-events'><tr><th>status</th><th>when</th><th>time from</th></tr>"
                f"{items}</table>")
    return f"<div class='imgtools-task-detail'>{out}</div>"


def _day_start(day: date) -> pd.Timestamp:
    return pd.Timestamp(datetime.combine(day, dtime.min, tzinfo=UTC))


def _mapping(value: Mapping[str, Any] | None) -> str:
    if value is None:
        return "(none)"
    return ", ".join(f"{k}={v}" for k, v in value.items()) or "{}"

"""Jupyter forms: ``ExportForm`` (pick an image and a container, export, follow, verify,
download) and ``TaskBrowser`` (filter, read and export the task history).

Both are ``ipywidgets.VBox`` subclasses, so a notebook shows them as the last expression of a
cell. Their state lives in traits (``status``, ``polls``, ``error``, ...), so everything a
person can do is testable without a browser: set the input widgets' values, ``click()`` a
button, ``await form.settled()``, read the traits.

Work never blocks the kernel: each action runs as an asyncio task on the kernel's running
loop, and every blocking call (one HTTP request, a verification, a download) runs in a worker
thread through ``asyncio.to_thread``. Waiting for an export is a loop of single ``refresh()``
requests separated by ``asyncio.sleep``, so it can be cancelled at any moment (kernel restart,
a second form) without leaving a thread blocked for the length of a wait. Errors appear in the
form as one readable line; no traceback reaches the notebook.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import time
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, date, datetime
from datetime import time as dtime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as w
import pandas as pd
from traitlets import Bool, Float, Int, Unicode

import imgtools
from imgtools._exceptions import (
    APIError,
    ImgToolsError,
    NotFound,
    RateLimited,
    TaskTimeout,
    TransportError,
    ValidationError,
)
from imgtools._models import Image, Task, TaskStatus
from imgtools._polling import PollPolicy
from imgtools._tasklog import TaskLog
from imgtools._validation import validate_container
from imgtools.history import STATUS_STYLES, events_frame, format_duration, merged, style_tasks

if TYPE_CHECKING:
    from imgtools._client import Client

__all__ = ["ExportForm", "TaskBrowser", "format_bytes", "one_line"]

#: How often the elapsed time in the status line moves on while an export runs, seconds.
TICK = 0.5
#: Longest error line shown in a form, characters.
MAX_ERROR = 300


def one_line(exc: BaseException) -> str:
    """An error as one readable line: its message (first line, shortened), never a traceback.

    Errors that are not imgtools' own are prefixed with their type, since their message alone
    is often unreadable ("[Errno 2] ...")."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if not isinstance(exc, ImgToolsError):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 1] + "…"


def format_bytes(size: int | None) -> str:
    """``6291456`` as ``"6.0 MiB"``; ``None`` as ``"size unknown"``."""
    if size is None:
        return "size unknown"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _transient(exc: ImgToolsError) -> bool:
    # Worth another poll: the network or the service hiccuped; the task goes on regardless.
    return isinstance(exc, TransportError | RateLimited) or (
        isinstance(exc, APIError) and exc.status_code >= 500)


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

    def __init__(self, client: Client | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.client: Client | None = client
        self._tasks: set[asyncio.Task[Any]] = set()
        self._active = 0

    async def _client(self) -> Client:
        if self.client is None:
            self.connection = "Connecting…"
            self.client = await _connect()
        self.connection = _describe(self.client)
        return self.client

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
                self.error = "cancelled"
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
                 timeout: float | None = None, download_dir: str | Path = ".") -> None:
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
        super().__init__(client, children=children)
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
            handle = await asyncio.to_thread(
                client.begin_export, image.id, container,
                create_container=self.create_container.value)
            if container not in self._containers:
                self._containers = sorted([*self._containers, container])
                self.container.options = tuple(self._containers)
            self.task_id = handle.id
            final = await self._follow(handle, started)
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

    async def _follow(self, handle: Any, started: float) -> Task:
        """Poll ``handle`` until its task finishes: one request per round, off the loop."""
        policy = self._poll or _policy_for(handle.client)
        deadline = None if self._timeout is None else started + self._timeout
        task: Task | None = handle.task
        if task is not None:
            self._observe(task)
        attempt = 0
        while task is None or not task.done:
            retry_after: float | None = None
            delay = policy.delay(attempt, retry_after=retry_after)
            attempt += 1
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    assert task is not None
                    raise TaskTimeout(f"task {handle.id} is still {task.status.value} after "
                                      f"{self._timeout:g} s (it goes on in the service)",
                                      task=task)
                delay = min(delay, left)
            await asyncio.sleep(delay)
            try:
                fresh: Task = await asyncio.to_thread(handle.refresh)
            except ImgToolsError as exc:
                if not _transient(exc):
                    raise
                if isinstance(exc, RateLimited) and exc.retry_after:
                    await asyncio.sleep(min(exc.retry_after, policy.retry_after_cap))
                continue
            task = fresh
            self.polls += 1
            self._observe(task)
        return task

    def _observe(self, task: Task) -> None:
        self._last_task = task
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


class TaskBrowser(_Form):
    """Past and running tasks from the service and the audit log, filtered, in detail, to CSV.

    ``client``: a ``Client`` (``None``: the environment's credentials, else the emulator);
    ``log``: a ``TaskLog`` (``None``: the client's). Traits to read: ``rows`` (tasks shown),
    ``selected`` (task id), ``detail`` (its full description, text), ``csv_path``, ``error``.
    The full frame is ``browser.frame``, the filtered one ``browser.view``.
    """

    rows = Int(0)
    selected = Unicode("")
    detail = Unicode("")
    csv_path = Unicode("")

    def __init__(self, client: Client | None = None, log: TaskLog | None = None, *,
                 csv_file: str | Path = "tasks.csv") -> None:
        self.task_log = log
        self.frame: pd.DataFrame = pd.DataFrame()
        self.view: pd.DataFrame = pd.DataFrame()
        self.type_filter = w.Dropdown(options=[_ALL, "export", "import"], value=_ALL,
                                      description="Type")
        self.status_filter = w.Dropdown(
            options=[_ALL, *(s.value for s in TaskStatus)], value=_ALL, description="Status")
        self.source_filter = w.Dropdown(options=[_ALL, "service", "log"], value=_ALL,
                                        description="Source")
        self.since = w.DatePicker(description="From", value=None)
        self.until = w.DatePicker(description="To", value=None)
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.summary_line = w.HTML("")
        self.table = w.HTML("")
        self.task_picker = w.Dropdown(options=[], description="Task",
                                      layout=w.Layout(width="95%"))
        self.detail_view = w.HTML("")
        self.csv_file = w.Text(str(csv_file), description="CSV file")
        self.csv_button = w.Button(description="Export CSV", icon="file")
        self.csv_line = w.HTML("")
        self.connection_label = w.HTML("Connecting…")
        self.error_line = w.HTML("")
        children = [
            w.HTML("<b>Tasks</b>"), self.connection_label,
            w.HBox([self.type_filter, self.status_filter, self.source_filter]),
            w.HBox([self.since, self.until, self.refresh_button]),
            self.summary_line, self.error_line,
            w.Box([self.table], layout=w.Layout(max_height="420px", overflow="auto")),
            self.task_picker, self.detail_view,
            w.HBox([self.csv_file, self.csv_button]), self.csv_line,
        ]
        super().__init__(client, children=children)
        self.add_class("imgtools-task-browser")
        for widget in (self.type_filter, self.status_filter, self.source_filter, self.since,
                       self.until):
            widget.observe(lambda _: self._apply_filters(), names="value")
        self.task_picker.observe(lambda change: self.show_task(change["new"]), names="value")
        self.refresh_button.on_click(lambda _: self.refresh())
        self.csv_button.on_click(lambda _: self.export_csv())
        self.observe(lambda change: setattr(self.connection_label, "value",
                                            html.escape(change["new"])), names="connection")
        self.observe(lambda change: setattr(
            self.error_line, "value",
            f"<span class='imgtools-error' style='color:#b91c1c'>{html.escape(change['new'])}"
            "</span>" if change["new"] else ""), names="error")
        self.refresh()

    def refresh(self) -> None:
        """What Refresh does: read the service's tasks and the log again."""
        self._run(self._refresh)

    async def _refresh(self) -> None:
        self.error = ""
        client = await self._client()
        log = self.task_log if self.task_log is not None else client.log
        if log is not None and not isinstance(log, TaskLog):
            log = None
        if self.task_log is None and isinstance(log, TaskLog):
            self.task_log = log
        self.frame = await asyncio.to_thread(merged, client, log)
        self._apply_filters()

    def _apply_filters(self) -> None:
        frame = self.frame
        if not len(frame):
            self.view = frame
        else:
            mask = pd.Series(True, index=frame.index)
            for column, widget in (("type", self.type_filter), ("status", self.status_filter),
                                   ("source", self.source_filter)):
                if widget.value != _ALL:
                    mask &= frame[column].astype("string") == widget.value
            if self.since.value is not None:
                mask &= frame["created_at"] >= _day_start(self.since.value)
            if self.until.value is not None:
                mask &= frame["created_at"] < _day_start(self.until.value) + pd.Timedelta(days=1)
            # Newest first: what someone opening the browser wants to see.
            self.view = frame.loc[mask].sort_values("created_at", ascending=False,
                                                    kind="stable").reset_index(drop=True)
        self.rows = len(self.view)
        self.summary_line.value = self._summary_html()
        shown = self.view[[c for c in ("id", "type", "status", "created_at", "duration",
                                       "image_id", "container", "message", "source")
                           if c in self.view]]
        self.table.value = style_tasks(shown).to_html() if len(shown) else "<i>no tasks</i>"
        options = [(_task_label(row), row["id"]) for row in self.view.to_dict("records")]
        self.task_picker.options = options
        if self.selected in set(self.view["id"]) if len(self.view) else False:
            self.task_picker.value = self.selected
        elif options:
            self.task_picker.value = options[0][1]
        else:
            self.selected = self.detail = ""
            self.detail_view.value = ""

    def _summary_html(self) -> str:
        if not len(self.view):
            return f"0 of {len(self.frame)} tasks"
        counts = self.view["status"].value_counts()
        parts = ", ".join(f"{int(counts.get(s, 0))} {s}" for s in
                          ("success", "failure", "processing", "pending") if counts.get(s, 0))
        return f"{len(self.view)} of {len(self.frame)} tasks: {parts}"

    def show_task(self, task_id: str | None) -> None:
        """Show one task in full: input, result, message and the status changes the log saw.

        The service lists only stubs, so a task the log does not hold in full is fetched
        (``GET /v2/tasks/{id}``, which also records it in the log)."""
        if task_id:
            self.selected = task_id
            self._run(lambda: self._show_task(task_id))

    async def _show_task(self, task_id: str) -> None:
        task = self.task_log.get(task_id) if self.task_log is not None else None
        if (task is None or task.is_stub) and self.client is not None:
            # NotFound: purged by the service; what the log holds is all there is.
            with contextlib.suppress(NotFound):
                task = await asyncio.to_thread(self.client.get_task, task_id)
        if self.selected != task_id:
            return  # another task was picked meanwhile
        lines: list[str] = []
        if task is None:
            row = self.frame.loc[self.frame["id"] == task_id]
            if len(row):
                record = row.iloc[0]
                lines += [f"id: {task_id}", f"type: {record['type']}",
                          f"status: {record['status']}", f"created: {record['created_at']}"]
        else:
            lines += [f"id: {task.id}", f"type: {task.type}", f"status: {task.status.value}",
                      f"owner: {task.owner}", f"created: {task.created_at:%Y-%m-%d %H:%M:%S}Z",
                      f"updated: {task.updated_at:%Y-%m-%d %H:%M:%S}Z"]
            if task.expires_at is not None:
                lines.append(f"expires: {task.expires_at:%Y-%m-%d %H:%M:%S}Z")
            if task.duration is not None:
                lines.append(f"duration: {format_duration(task.duration)}")
            lines.append(f"input: {_mapping(task.input)}")
            lines.append(f"result: {_mapping(task.result)}")
            lines.append(f"message: {task.message or '(none)'}")
        events = self._events(task_id)
        if events:
            lines.append("observed:")
            lines += [f"  {seen} {status}" for seen, status in events]
        self.detail = "\n".join(lines)
        self.detail_view.value = (f"<pre class='imgtools-task-detail'>{html.escape(self.detail)}"
                                  "</pre>")

    def _events(self, task_id: str) -> list[tuple[str, str]]:
        if self.task_log is None:
            return []
        events = events_frame(self.task_log, task_id)
        return [(pd.Timestamp(seen).strftime("%Y-%m-%d %H:%M:%S"), str(status))
                for seen, status in zip(events["seen_at"], events["status"], strict=True)]

    def export_csv(self, path: str | Path | None = None) -> Path:
        """What Export CSV does: write the filtered tasks to ``path`` (default: the CSV file
        box); returns the path."""
        target = Path(path if path is not None else self.csv_file.value).expanduser()
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            self.view.to_csv(target, index=False)
        except OSError as exc:
            self.error = one_line(exc)
            raise
        self.csv_path = str(target)
        self.csv_line.value = html.escape(f"Wrote {len(self.view)} task(s) to {target}")
        return target


def _day_start(day: date) -> pd.Timestamp:
    return pd.Timestamp(datetime.combine(day, dtime.min, tzinfo=UTC))


def _task_label(row: Mapping[Any, Any]) -> str:
    created = row.get("created_at")
    when = "" if created is None or pd.isna(created) else pd.Timestamp(created).strftime(
        "%Y-%m-%d %H:%M")
    where = row.get("container")
    where = "" if where is None or pd.isna(where) else f" → {where}"
    return f"{when} · {row['type']} · {row['status']} · {str(row['id'])[:8]}{where}"


def _mapping(value: Mapping[str, Any] | None) -> str:
    if value is None:
        return "(none)"
    return ", ".join(f"{k}={v}" for k, v in value.items()) or "{}"

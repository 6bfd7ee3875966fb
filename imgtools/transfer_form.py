"""``TransferForm``: start a transfer from a notebook and watch each step live.

The transfer runs as an asyncio task on the kernel's loop through the form's ``AsyncClient``
(``AsyncTransfer``: the same steps as the library's), so the kernel stays free: each step's
state (running, done, reused, failed) appears as it changes, the copy's bytes, MiB/s and
segments as they pass (reported from the copy's threads, applied on the loop's thread).

The form reads the account's images and the catalog's regions when it opens: pick the image
in the list (or type its id) and the target region (or type it), then Transfer. Stop ends the
transfer where it is (left failed at the step it was in; a copy in progress stops too, its
segments in flight at their next chunk, before the form is free again); Resume continues it
from its last completed step, as ``client.resume_transfer`` does.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import ipywidgets as w
from traitlets import Dict, Unicode

from imgtools import testing
from imgtools.formatting import format_bytes
from imgtools.transfer import (
    CLEANUP_POLICIES,
    DEFAULT_TRANSFER_CONTAINER,
    STEPS,
    abegin_transfer,
    aresume_transfer,
)
from imgtools.widgets import _Form

if TYPE_CHECKING:
    from imgtools._client import AsyncClient, Client
    from imgtools._files import Progress
    from imgtools._models import Image
    from imgtools.transfer import AsyncTransfer

__all__ = ["TransferForm"]

_COLOURS = {"running": "#1f6feb", "done": "#1a7f37", "reused": "#1a7f37", "failed": "#cf222e",
            "": "#6e7781"}
_CELL = "padding:1px 8px; text-align:left"
#: Seconds between two redraws of the copy's progress (the end is always shown).
COPY_REFRESH = 0.25
#: Rows of the image list.
PICKER_ROWS = 6


class TransferForm(_Form):
    """An image list (or its id), target region, cleanup policy and a Transfer button; then
    one line per step.

    ``client``: a ``Client``; ``None`` uses the environment's credentials, else starts the
    local emulator in the background. ``step_states`` maps each step to its state ('' before
    it runs); ``status`` is the transfer's (``running``, ``done``, ``failed``);
    ``transfer_id`` its id (for ``client.resume_transfer``, or ``resume()``);
    ``target_image`` the new image's id once imported; ``error`` the last error as one line.
    ``start()``, ``stop()`` and ``resume()`` are what the buttons do.
    """

    status = Unicode("", help="the transfer's status")
    transfer_id = Unicode("", help="the transfer's id, once started")
    target_image = Unicode("", help="the new image's id, once imported")
    step_states = Dict(help="each step's state: running, done, reused, failed ('' before)")

    stopped_message = "stopped: Resume continues it"

    def __init__(self, client: Client | None = None, *, async_client: AsyncClient | None = None,
                 listing_delay: float | None = None, **kwargs: Any) -> None:
        super().__init__(client, async_client, **kwargs)
        self.add_class("imgtools-transfer-form")
        self._listing_delay = listing_delay
        self._images: dict[str, Image] = {}
        self._handle: AsyncTransfer | None = None
        self.connection_label = w.HTML("Connecting…")
        self.image_picker = w.Select(options=[], rows=PICKER_ROWS,
                                     layout=w.Layout(width="95%"))
        self.image = w.Text(description="Image id", placeholder="pick above, or type its UUID",
                            layout=w.Layout(width="60%"))
        self.target_region = w.Combobox(description="To region", placeholder="e.g. IAD",
                                        options=[], ensure_option=False)
        self.container = w.Text(value=DEFAULT_TRANSFER_CONTAINER, description="Container")
        self.cleanup = w.Dropdown(options=list(CLEANUP_POLICIES), value="none",
                                  description="Cleanup")
        self.start_button = w.Button(description="Transfer", button_style="primary",
                                     disabled=True, tooltip="pick an image and a region first")
        self.start_button.on_click(lambda _b: self.start())
        self.stop_button = w.Button(description="Stop", icon="stop", disabled=True,
                                    tooltip="stop the transfer; Resume continues it")
        self.stop_button.on_click(lambda _b: self.stop())
        self.resume_button = w.Button(description="Resume", icon="redo", disabled=True,
                                      tooltip="continue from the last completed step")
        self.resume_button.on_click(lambda _b: self.resume())
        self.status_line = w.HTML()
        self.steps_html = w.HTML()
        self.progress = w.FloatProgress(min=0.0, max=1.0, description="copy")
        self.copy_line = w.HTML()
        self.error_line = w.HTML()
        self.step_states = {s: "" for s in STEPS}
        self._copy_started = 0.0
        self._copy_shown: float | None = None
        self.observe(self._show_steps, names="step_states")
        self.observe(lambda _c: self._show_status(), names=["status", "target_image"])
        self.observe(lambda _c: self._validate(), names=["status", "transfer_id"])
        self.observe(lambda _c: self._show_error(), names="error")
        self.observe(lambda _c: self._validate(), names="busy")
        self.observe(lambda c: setattr(self.connection_label, "value", html.escape(c["new"])),
                     names="connection")
        self.image_picker.observe(self._picked, names="value")
        self.image.observe(self._typed, names="value")
        self.target_region.observe(lambda _c: self._validate(), names="value")
        self._show_steps()
        self.children = [w.HTML("<b>Transfer an image to another region</b>"),
                         self.connection_label, self.image_picker, self.image,
                         w.HBox([self.target_region, self.container, self.cleanup]),
                         w.HBox([self.start_button, self.stop_button, self.resume_button]),
                         self.status_line, self.steps_html, self.progress,
                         self.copy_line, self.error_line]
        self._run(self._load)

    # -- choosing ---------------------------------------------------------------------------

    async def _load(self) -> None:
        client = await self._client()
        images = await asyncio.to_thread(lambda: list(client.images()))
        self._images = {image.id: image for image in images}
        reasons = {image.id: self._refusal(client, image) for image in images}
        # Transferable images first, then by name, so the likely choice is at the top.
        chosen = sorted(images, key=lambda i: (reasons[i.id] is not None, i.name or ""))
        self.image_picker.options = [(self._label(i, reasons[i.id]), i.id) for i in chosen]
        self.image_picker.value = self.image.value.strip() if self.image.value.strip() in \
            self._images else None
        here = (client.region or "").upper()
        self.target_region.options = tuple(r for r in client.regions if r.upper() != here)

    @staticmethod
    def _refusal(client: Client, image: Image) -> str | None:
        """Why ``image`` cannot be transferred (no request), or ``None``."""
        verdict = client.exportability(image)
        if not verdict.ok:
            return verdict.reason or "not exportable"
        if str(image.properties.get("os_type", "")).lower() == "windows":
            return "Windows images cannot be imported"
        return None

    @staticmethod
    def _label(image: Image, refusal: str | None) -> str:
        text = f"{image.name or image.id} · {format_bytes(image.size)}"
        return f"✓ {text}" if refusal is None else f"✗ {text} · cannot transfer: {refusal}"

    def _picked(self, change: Any) -> None:
        if change["new"] is not None and change["new"] != self.image.value.strip():
            self.image.value = change["new"]
        self._validate()

    def _typed(self, change: Any) -> None:
        wanted = change["new"].strip()
        if self.image_picker.value != wanted:
            self.image_picker.value = wanted if wanted in self._images else None
        self._validate()

    def problems(self) -> list[str]:
        """Why Transfer is disabled (empty when it is enabled)."""
        problems = []
        if not self.image.value.strip():
            problems.append("pick an image")
        if not self.target_region.value.strip():
            problems.append("name a target region")
        return problems

    def _validate(self) -> None:
        problems = self.problems()
        self.start_button.disabled = self.busy or bool(problems)
        self.start_button.tooltip = problems[0] if problems else "start the transfer"
        self.resume_button.disabled = self.busy or not (self.transfer_id and
                                                        self.status == "failed")

    # -- the transfer -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the transfer (as a task on the running loop; to completion without one)."""
        if self.busy:
            self.error = "still busy: wait for the running transfer, or Stop it"
            return
        self.error = ""
        self._run(self._transfer)

    def resume(self, transfer_id: str | None = None) -> None:
        """Continue ``transfer_id`` (default: the form's last transfer) from its last
        completed step: no second export or import, only the missing segments copied."""
        wanted = transfer_id or self.transfer_id
        if not wanted:
            self.error = "no transfer to resume: start one first"
            return
        if self.busy:
            self.error = "still busy: wait for the running transfer, or Stop it"
            return
        self.error = ""
        self._run(lambda: self._resume(wanted))

    def stop(self) -> None:
        """Stop the transfer: it ends failed at the step it was in, and Resume continues it.
        A copy stops too: its segments in flight end at their next chunk (none is left
        half-written at the target), and the form's task ends only once the copy's threads
        have, so a Resume never copies alongside them. A task already started (an export,
        an import) goes on in the service meanwhile."""
        self.cancel()

    async def _transfer(self) -> None:
        self.transfer_id = ""  # a refusal must not leave the last transfer to Resume

        async def begin(client: AsyncClient, report: Progress) -> AsyncTransfer:
            return await abegin_transfer(
                client, self.image.value.strip(), to=self.target_region.value.strip(),
                container=self.container.value.strip(), cleanup=self.cleanup.value,
                on_step=self._on_step, progress=report, **self._options())

        await self._follow(begin, done_before=())

    async def _resume(self, transfer_id: str) -> None:
        async def again(client: AsyncClient, report: Progress) -> AsyncTransfer:
            return await aresume_transfer(client, transfer_id, on_step=self._on_step,
                                          progress=report, **self._options())

        await self._follow(again, done_before=None)

    def _options(self) -> dict[str, Any]:
        return {} if self._listing_delay is None else {"listing_delay": self._listing_delay}

    async def _follow(self, make: Callable[[AsyncClient, Progress], Awaitable[AsyncTransfer]],
                      *, done_before: tuple[str, ...] | None) -> None:
        """Make the handle with ``make`` and run it to its end, showing every step.
        ``done_before``: the steps already done (``None``: as the handle's record says)."""
        self.status, self.target_image = "starting", ""
        self._handle = None
        self.step_states = {s: "" for s in STEPS}
        self.progress.value, self.copy_line.value = 0.0, ""
        self._copy_shown = None
        try:
            client = await self._async_client()
            loop = asyncio.get_running_loop()

            def report(done: int, total: int) -> None:  # in the copy's threads
                loop.call_soon_threadsafe(self._on_copy, done, total)

            handle = await make(client, report)
            self._handle = handle
            self.transfer_id = handle.id
            if done_before is None:
                last = handle.record.step
                done_before = STEPS[:STEPS.index(last) + 1] if last in STEPS else ()
            self.step_states = {s: "done" if s in done_before else "" for s in STEPS}
            self.status = "running"
            self.stop_button.disabled = False
            try:
                await handle.run()
            finally:
                self.stop_button.disabled = True
                self.target_image = handle.target_image or ""
                self.status = handle.status
        except BaseException:
            # A refusal before the handle existed (bad region, no login) fails it too.
            if self.status != "failed":
                self.status = "failed"
            raise
        rec = handle.record
        rate = (f" at {(rec.copy_bytes or 0) / (1024 * 1024) / rec.copy_seconds:.1f} MiB/s"
                if rec.copy_seconds else "")
        self.copy_line.value = html.escape(
            f"{format_bytes(rec.copy_bytes or 0)} in {rec.copy_segments} segments{rate}; "
            f"new image {handle.target_image}")

    def _on_step(self, step: str, outcome: str) -> None:
        # Called on the loop's thread (the async driver runs the steps there).
        if step == "copy" and outcome == "running":
            self._copy_started = testing.clock().monotonic()
        if self._handle is not None and self._handle.target_image:
            self.target_image = self._handle.target_image
        self.step_states = {**self.step_states, step: outcome}

    def _on_copy(self, done: int, total: int) -> None:
        # Every MiB copied is reported; the page is redrawn at most every COPY_REFRESH
        # seconds (and at the end), so a fast copy does not flood the browser with messages.
        now = testing.clock().monotonic()
        if done < total and self._copy_shown is not None and \
                now - self._copy_shown < COPY_REFRESH:
            return
        self._copy_shown = now
        self._show_copy(done, total, now)

    # -- showing ----------------------------------------------------------------------------

    def _show_copy(self, done: int, total: int, now: float) -> None:
        self.progress.max = float(max(total, 1))
        self.progress.value = float(min(done, max(total, 1)))
        seconds = now - self._copy_started if self._copy_started else 0.0
        rate = done / (1024 * 1024) / seconds if seconds > 0 else 0.0
        self.copy_line.value = html.escape(f"{format_bytes(done)} of {format_bytes(total)}, "
                                           f"{rate:.1f} MiB/s")

    def _show_status(self) -> None:
        if not self.status:
            self.status_line.value = ""
            return
        text = self.status
        if self.transfer_id:
            text += f" · transfer {self.transfer_id}"
        if self.target_image:
            text += f" · new image {self.target_image}"
        self.status_line.value = (f"<span class='imgtools-status' data-status="
                                  f"'{html.escape(self.status)}'>{html.escape(text)}</span>")

    def _show_steps(self, _change: Any = None) -> None:
        # One line of steps, each name over its state; data-step / data-state are what a
        # browser test (or a style sheet) reads. Widgets' HTML has a tall line height: reset.
        names = "".join(f"<th style='{_CELL}; font-weight:normal'>{html.escape(s)}</th>"
                        for s in self.step_states)
        states = "".join(
            f"<td data-step='{html.escape(s)}' data-state='{html.escape(state)}' "
            f"style='{_CELL}; color:{_COLOURS.get(state, '#000')}'>"
            f"{html.escape(state or 'waiting')}</td>"
            for s, state in self.step_states.items())
        self.steps_html.value = (f"<table class='imgtools-steps' style='border-collapse:"
                                 f"collapse; line-height:1.4'><tr>{names}</tr>"
                                 f"<tr>{states}</tr></table>")

    def _show_error(self) -> None:
        self.error_line.value = (f"<span class='imgtools-error' style='color:#cf222e'>"
                                 f"{html.escape(self.error)}</span>" if self.error else "")

"""``TransferForm``: start a transfer from a notebook and watch each step live.

The transfer runs as an asyncio task on the kernel's loop through the form's ``AsyncClient``
(``AsyncTransfer``: the same steps as the library's), so the kernel stays free: each step's
state (running, done, reused, failed) appears as it changes, the copy's bytes, MiB/s and
segments as they pass (reported from the copy's threads, applied on the loop's thread).
"""

from __future__ import annotations

import asyncio
import html
import time
from typing import TYPE_CHECKING, Any

import ipywidgets as w
from traitlets import Dict, Unicode

from imgtools.formatting import format_bytes
from imgtools.transfer import CLEANUP_POLICIES, DEFAULT_TRANSFER_CONTAINER, STEPS, abegin_transfer
from imgtools.widgets import _Form

if TYPE_CHECKING:
    from imgtools._client import AsyncClient, Client

__all__ = ["TransferForm"]

_COLOURS = {"running": "#1f6feb", "done": "#1a7f37", "reused": "#1a7f37", "failed": "#cf222e",
            "": "#6e7781"}


class TransferForm(_Form):
    """Image id, target region, cleanup policy and a Transfer button; then one line per step.

    ``step_states`` maps each step to its state ('' before it runs); ``status`` is the
    transfer's (``running``, ``done``, ``failed``); ``transfer_id`` its id (for
    ``client.resume_transfer``); ``error`` the last error as one line.
    """

    status = Unicode("", help="the transfer's status")
    transfer_id = Unicode("", help="the transfer's id, once started")
    step_states = Dict(help="each step's state: running, done, reused, failed ('' before)")

    def __init__(self, client: Client | None = None, *, async_client: AsyncClient | None = None,
                 listing_delay: float | None = None, **kwargs: Any) -> None:
        super().__init__(client, async_client, **kwargs)
        self._listing_delay = listing_delay
        self.image = w.Text(description="Image id", placeholder="the image's UUID")
        self.target_region = w.Text(description="To region", placeholder="e.g. IAD")
        self.container = w.Text(value=DEFAULT_TRANSFER_CONTAINER, description="Container")
        self.cleanup = w.Dropdown(options=list(CLEANUP_POLICIES), value="none",
                                  description="Cleanup")
        self.start_button = w.Button(description="Transfer", button_style="primary")
        self.start_button.on_click(lambda _b: self.start())
        self.steps_html = w.HTML()
        self.progress = w.FloatProgress(min=0.0, max=1.0, description="copy")
        self.copy_line = w.HTML()
        self.error_line = w.HTML()
        self.step_states = {s: "" for s in STEPS}
        self._copy_started = 0.0
        self.observe(self._show_steps, names="step_states")
        self.observe(lambda _c: self._show_error(), names="error")
        self.observe(lambda c: setattr(self.start_button, "disabled", bool(c["new"])),
                     names="busy")
        self._show_steps()
        self.children = [w.HBox([self.image, self.target_region]),
                         w.HBox([self.container, self.cleanup, self.start_button]),
                         self.steps_html, self.progress, self.copy_line, self.error_line]

    def start(self) -> None:
        """Start the transfer (as a task on the running loop; to completion without one)."""
        self.error = ""
        self._run(self._transfer)

    async def _transfer(self) -> None:
        client = await self._async_client()
        loop = asyncio.get_running_loop()
        self.step_states = {s: "" for s in STEPS}
        options: dict[str, Any] = {}

        def report(done: int, total: int) -> None:  # in the copy's threads
            loop.call_soon_threadsafe(self._show_copy, done, total)

        if self._listing_delay is not None:
            options["listing_delay"] = self._listing_delay
        handle = await abegin_transfer(
            client, self.image.value.strip(), to=self.target_region.value.strip(),
            container=self.container.value.strip(), cleanup=self.cleanup.value,
            on_step=self._on_step,
            progress=report, **options)
        self.transfer_id = handle.id
        self.status = "running"
        try:
            await handle.run()
        finally:
            self.status = handle.status
        self.copy_line.value = html.escape(
            f"{format_bytes(handle.record.copy_bytes or 0)} in {handle.record.copy_segments} "
            f"segments; new image {handle.target_image}")

    def _on_step(self, step: str, outcome: str) -> None:
        # Called on the loop's thread (the async driver runs the steps there).
        if step == "copy" and outcome == "running":
            self._copy_started = time.monotonic()
        self.step_states = {**self.step_states, step: outcome}

    def _show_copy(self, done: int, total: int) -> None:
        self.progress.max = float(max(total, 1))
        self.progress.value = float(min(done, max(total, 1)))
        seconds = time.monotonic() - self._copy_started if self._copy_started else 0.0
        rate = done / (1024 * 1024) / seconds if seconds > 0 else 0.0
        self.copy_line.value = html.escape(f"{format_bytes(done)} of {format_bytes(total)}, "
                                           f"{rate:.1f} MiB/s")

    def _show_steps(self, _change: Any = None) -> None:
        cells = "".join(
            f"<tr><td>{html.escape(s)}</td><td style='color:{_COLOURS.get(state, '#000')}'>"
            f"{html.escape(state or 'waiting')}</td></tr>"
            for s, state in self.step_states.items())
        self.steps_html.value = f"<table>{cells}</table>"

    def _show_error(self) -> None:
        self.error_line.value = (f"<span style='color:#cf222e'>{html.escape(self.error)}</span>"
                                 if self.error else "")

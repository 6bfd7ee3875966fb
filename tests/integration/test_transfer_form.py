"""TransferForm against the emulator over sockets: the form lists the images and regions to
pick from, a transfer started from it runs on the loop (the click returns at once), each step's
state appears, the copy's progress too (redrawn at a bounded pace), a refusal shows as a failed
transfer, and Stop then Resume finishes a transfer with one export and one import."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import imgtools
from imgtools import transfer as transfer_module
from imgtools._copy import THREAD_PREFIX
from imgtools.emulator import EmulatorHandle, start_emulator
from imgtools.testing import FakeClock, use_clock
from imgtools.transfer import STEPS, TransferStore
from imgtools.transfer_form import COPY_REFRESH, TransferForm
from tests.client_support import (
    DB,
    FAST,
    SMALL,
    WEB,
    WINDOWS,
    live_threads,
    make_client,
    tasks_created,
)

#: Seconds the held emulator keeps every task pending: it starts when the test moves the
#: emulator's clock on, so the test acts while a task waits, with no race.
HOLD = 3600.0
#: Seconds to wait for a state the test is sure to reach (a bound, not a measure).
REACHED = 60.0


@pytest.fixture(scope="module")
def emu(emulator_in_subprocess: EmulatorHandle) -> EmulatorHandle:
    """This module's emulator: the client tests' one, in a subprocess (tests/conftest.py)."""
    return emulator_in_subprocess



@pytest.fixture
def held() -> Iterator[EmulatorHandle]:
    """An emulator of its own, in this process, whose tasks wait for ``advance_clock``."""
    with start_emulator(config=FAST.replace(pending_delay=HOLD), subprocess=False) as handle:
        yield handle


async def _reached(form: TransferForm, step: str, state: str) -> None:
    """Return once ``step`` shows ``state`` (or failed: the assertion after says so)."""
    seen = asyncio.Event()

    def check(_change: object = None) -> None:
        if form.step_states.get(step) in (state, "failed"):
            seen.set()

    form.observe(check, names="step_states")
    check()
    try:
        await asyncio.wait_for(seen.wait(), REACHED)
    finally:
        form.unobserve(check, names="step_states")
    assert form.step_states[step] == state, (form.step_states, form.error)


def _form(emu: EmulatorHandle, image: str) -> tuple[imgtools.Client, TransferForm]:
    client = make_client(emu, log=True)
    form = TransferForm(client, listing_delay=0)
    form.image.value, form.target_region.value = image, "IAD"
    form.cleanup.value = "both"
    return client, form


def test_a_transfer_from_the_form_shows_every_step(emu: EmulatorHandle) -> None:
    client, form = _form(emu, DB)
    seen: list[dict[str, str]] = []

    async def scenario() -> None:
        form.observe(lambda change: seen.append(dict(change["new"])), names="step_states")
        form.start_button.click()
        assert form.busy and form.start_button.disabled  # the click returned; it runs
        await form.settled()
        await form.aclose()

    with client:
        asyncio.run(scenario())
        assert form.error == "", form.error
        assert form.status == "done" and form.step_states == {s: "done" for s in STEPS}
        assert any(states["copy"] == "running" for states in seen)
        rec = TransferStore(client.log.path).get(form.transfer_id)  # type: ignore[union-attr]
        assert rec is not None and rec.status == "done"
        assert form.progress.value == form.progress.max == rec.copy_bytes
        assert rec.target_image is not None and rec.target_image in form.copy_line.value
        assert "failed" not in form.steps_html.value and not form.start_button.disabled
        assert form.target_image == rec.target_image and rec.target_image in form.status_line.value
        assert "data-step='cleanup' data-state='done'" in form.steps_html.value


def test_a_refused_transfer_shows_the_failed_step_and_one_line(emu: EmulatorHandle) -> None:
    client, form = _form(emu, WINDOWS)

    async def scenario() -> None:
        form.start()
        await form.settled()
        await form.aclose()

    with client:
        asyncio.run(scenario())
    assert form.status == "failed" and form.step_states["preflight"] == "failed"
    assert "TransferFailed" in form.error or "preflight" in form.error
    assert "preflight" in form.error_line.value


def test_the_form_lists_images_and_regions_to_pick_from(emu: EmulatorHandle) -> None:
    client = make_client(emu, log=True)
    with client:
        form = TransferForm(client)  # no loop runs: the listing is read at once
        labels = dict((value, label) for label, value in form.image_picker.options)
        assert labels[SMALL].startswith("✓ build-agent snapshot")
        assert labels[WINDOWS].startswith("✗") and "Windows" in labels[WINDOWS]
        # Transferable ones first.
        marks = [label[0] for label, _ in form.image_picker.options]
        assert marks == sorted(marks, key=lambda mark: mark != "✓")
        assert client.region is not None
        assert client.region not in form.target_region.options
        assert set(form.target_region.options) == set(client.regions) - {client.region}

        assert form.start_button.disabled and form.problems() == ["pick an image",
                                                                  "name a target region"]
        form.image_picker.value = SMALL  # a click in the list fills the id
        assert form.image.value == SMALL and form.problems() == ["name a target region"]
        form.target_region.value = "IAD"
        assert form.problems() == [] and not form.start_button.disabled
        form.image.value = DB  # typing an id picks it in the list
        assert form.image_picker.value == DB
        form.image.value = "not-listed"
        assert form.image_picker.value is None and not form.start_button.disabled
        form.image.value = ""
        assert form.start_button.disabled


def test_an_unknown_region_fails_the_transfer_in_one_line(emu: EmulatorHandle) -> None:
    client, form = _form(emu, SMALL)
    form.target_region.value = "NOWHERE"

    async def scenario() -> None:
        form.start()
        await form.settled()
        await form.aclose()

    with client:
        asyncio.run(scenario())
    assert form.status == "failed" and form.transfer_id == ""
    assert "NOWHERE" in form.error and "imgtools-error" in form.error_line.value
    assert "data-status='failed'" in form.status_line.value
    assert not form.start_button.disabled


def test_stop_then_resume_finishes_with_one_export_and_one_import(
        held: EmulatorHandle) -> None:
    client, form = _form(held, SMALL)
    before = tasks_created(held)

    async def scenario() -> None:
        assert form.stop_button.disabled and form.resume_button.disabled
        form.start_button.click()
        await _reached(form, "export_wait", "running")  # the export task is held pending
        assert not form.stop_button.disabled and form.resume_button.disabled
        form.stop_button.click()
        await form.settled()
        assert form.status == "failed" and form.error == "stopped: Resume continues it"
        assert form.step_states["export"] == "done"
        assert form.step_states["export_wait"] == "failed"
        assert form.stop_button.disabled and not form.resume_button.disabled
        stopped = form.transfer_id

        form.resume_button.click()
        assert form.busy and form.resume_button.disabled
        await _reached(form, "export_wait", "running")
        # Shown from the record: what ran before the stop is done.
        assert form.step_states["preflight"] == form.step_states["export"] == "done"
        assert form.transfer_id == stopped
        held.advance_clock(HOLD)  # the export starts, and soon ends
        await _reached(form, "import_wait", "running")
        held.advance_clock(HOLD)
        await form.settled()
        await form.aclose()

    with client:
        asyncio.run(scenario())
    assert form.error == "" and form.status == "done", (form.error, form.step_states)
    assert form.step_states == {s: "done" for s in STEPS}
    assert tasks_created(held) - before == 2  # one export, one import: none made twice
    assert form.resume_button.disabled


def test_resume_without_a_transfer_says_so(emu: EmulatorHandle) -> None:
    client = make_client(emu, log=True)
    with client:
        form = TransferForm(client)
        form.resume()
    assert form.error == "no transfer to resume: start one first" and not form.busy


def test_the_copy_is_redrawn_at_a_bounded_pace(emu: EmulatorHandle) -> None:
    """A copy reports every MiB; the page gets at most one redraw per COPY_REFRESH, and the
    end always."""
    client = make_client(emu, log=True)
    with client, use_clock(FakeClock()) as clock:
        form = TransferForm(client)
        drawn: list[float] = []
        form.progress.observe(lambda change: drawn.append(change["new"]), names="value")
        form._on_step("copy", "running")
        total = 1000
        for done in range(1, total):  # all at one instant
            form._on_copy(done, total)
        assert drawn == [1.0]
        clock.advance(COPY_REFRESH)
        form._on_copy(total - 1, total)
        form._on_copy(total, total)  # the end: drawn even within COPY_REFRESH
        assert drawn == [1.0, float(total - 1), float(total)]
        assert "MiB/s" in form.copy_line.value


def _stored_puts(emu: EmulatorHandle) -> int:
    """Object PUTs the emulator stored (201): segments and manifests."""
    return sum(r["count"] for r in emu.stats()["requests"]
               if r["method"] == "PUT" and r["route"].count("/") >= 4 and r["status"] == 201)


def test_stop_during_the_copy_ends_it_before_resume_copies_every_segment_once(
        emu: EmulatorHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stop clicked while segments are in flight: the copy's threads have ended when the
    form's task has (none goes on copying behind the Resume), the step is failed, and the
    Resume stores each segment exactly once, then the manifest."""
    client, form = _form(emu, WEB)  # four segments
    real_copy = transfer_module.copy_export
    copies: list[threading.Event | None] = []
    loop: list[asyncio.AbstractEventLoop] = []
    idle = threading.Event()
    form.observe(lambda change: change["new"] or idle.set(), names="busy")

    def held_copy(*args: Any, progress: Any = None, cancel: threading.Event | None = None,
                  **options: Any) -> Any:
        # The real copy; the first one's progress is held at its first bytes until the Stop
        # has reached it (its event set): where the stop lands does not hang on thread timing.
        first = not copies
        copies.append(cancel)
        clicked = threading.Event()

        def hold(done: int, total: int) -> None:
            if progress is not None:
                progress(done, total)
            if first and done:
                if not clicked.is_set():
                    clicked.set()
                    loop[0].call_soon_threadsafe(form.stop_button.click)
                # A copy given no stop event cannot be stopped: it goes on after the form.
                (idle if cancel is None else cancel).wait(REACHED)

        return real_copy(*args, progress=hold, **options,
                         **({} if cancel is None else {"cancel": cancel}))

    monkeypatch.setattr(transfer_module, "copy_export", held_copy)
    threads: list[str] = []
    stored: list[int] = [_stored_puts(emu)]

    async def scenario() -> None:
        loop.append(asyncio.get_running_loop())
        form.start_button.click()
        await form.settled()
        threads.extend(live_threads(THREAD_PREFIX))
        stored.append(_stored_puts(emu))
        assert form.status == "failed" and form.error == form.stopped_message
        assert form.step_states["copy"] == "failed" and not form.resume_button.disabled
        form.resume_button.click()
        await form.settled()
        stored.append(_stored_puts(emu))
        await form.aclose()

    with client:
        asyncio.run(scenario())
        rec = TransferStore(client.log.path).get(form.transfer_id)  # type: ignore[union-attr]
    assert threads == []  # the stopped copy had ended with the form's task
    assert len(copies) == 2 and copies[0] is not None and copies[0].is_set()
    assert form.error == "" and form.status == "done", (form.error, form.step_states)
    assert rec is not None and rec.copy_segments is not None and rec.copy_segments > 1
    runs = [s for s in TransferStore(client.log.path).steps(rec.id)  # type: ignore[union-attr]
            if s.step == "copy"]
    assert [s.outcome for s in runs] == ["failed", "done"]
    assert runs[0].detail == "CancelledError"
    # Held at its first bytes, the stopped copy stored nothing; the resume each segment once.
    assert stored[1] == stored[0]
    assert runs[1].detail is not None and "0 already there" in runs[1].detail
    assert stored[2] - stored[1] == rec.copy_segments + 1  # and the manifest
    assert rec.copy_copied_bytes == rec.copy_bytes

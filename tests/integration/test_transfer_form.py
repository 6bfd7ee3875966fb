"""TransferForm against the emulator over sockets: a transfer started from the form runs on
the loop (the click returns at once), each step's state appears, the copy's progress too."""

from __future__ import annotations

import asyncio

import pytest

import imgtools
from imgtools.emulator import EmulatorHandle
from imgtools.transfer import STEPS, TransferStore
from imgtools.transfer_form import TransferForm
from tests.client_support import DB, WINDOWS, make_client


@pytest.fixture(scope="module")
def emu(emulator_in_subprocess: EmulatorHandle) -> EmulatorHandle:
    """This module's emulator: the client tests' one, in a subprocess (tests/conftest.py)."""
    return emulator_in_subprocess



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

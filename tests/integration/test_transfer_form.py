"""TransferForm against the emulator over sockets: the form lists the images and regions to
pick from, a transfer started from it runs on the loop (the click returns at once), each step's
state appears, the copy's progress too, and a refusal shows as a failed transfer."""

from __future__ import annotations

import asyncio

import pytest

import imgtools
from imgtools.emulator import EmulatorHandle
from imgtools.transfer import STEPS, TransferStore
from imgtools.transfer_form import TransferForm
from tests.client_support import DB, SMALL, WINDOWS, make_client


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

"""Regressions found by the transfers-under-faults test (tests/system/test_transfer_faults.py):
steps that failed a transfer on a fault a retry would have cured."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import imgtools
from imgtools.emulator import EmulatorHandle
from imgtools.transfer import TransferStore
from tests.client_support import SMALL, fresh_container

#: With this seed and half of the PATCHes faulted at each stage, the emulator's draws give the
#: first PATCH a 503, the second a lost answer (handled, then the connection dropped), the
#: third a body cut halfway, and let the fourth through.
PATCH_SEED = 57


@pytest.fixture(scope="module")
def emu(emulator_in_subprocess: EmulatorHandle) -> EmulatorHandle:
    return emulator_in_subprocess


@pytest.fixture
def store(tmp_path: Path) -> TransferStore:
    return TransferStore(tmp_path / "log.sqlite")


@pytest.fixture
def iad(client: imgtools.Client) -> Iterator[imgtools.Client]:
    twin = client.in_region("IAD")
    yield twin
    twin.close()


def test_the_metadata_patch_is_asked_again_after_a_503_a_lost_answer_and_a_cut_body(
        emu: EmulatorHandle, client: imgtools.Client, iad: imgtools.Client,
        store: TransferStore) -> None:
    before = emu.stats()["faults"]
    emu.set_faults(error_503=0.5, drop_after=0.5, cut_body=0.5, methods="PATCH",
                   seed=PATCH_SEED)
    handle = client.transfer(SMALL, to="IAD", container=fresh_container("idem"),
                             listing_delay=0, store=store)
    after = emu.stats()["faults"]
    emu.clear_faults()
    # Each kind of fault met the PATCH once, and the step still ended at its first run.
    assert {k: after.get(k, 0) - before.get(k, 0)
            for k in ("error_503", "drop_after", "cut_body")} == \
        {"error_503": 1, "drop_after": 1, "cut_body": 1}
    assert handle.status == "done"
    assert [s.outcome for s in handle.steps() if s.step == "metadata"] == ["done"]
    new = iad.get_image(handle.target_image or "")
    assert new.properties.get("imgtools_source_image") == SMALL
    assert new.properties.get("imgtools_source_transfer") == handle.id

"""Regressions found by the transfers-under-faults test (tests/system/test_transfer_faults.py):
steps that failed a transfer on a fault a retry would have cured."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import imgtools
from imgtools.emulator import EmulatorHandle
from imgtools.testing import set_testing
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


#: With this seed and half of the task POSTs dropped before the service handles them, the
#: draws drop the first POST of the export and of the import (in their region) and let the
#: second through.
POST_SEED = 3


def test_a_task_post_that_cannot_be_confirmed_is_asked_again_with_no_duplicate(
        emu: EmulatorHandle, client: imgtools.Client, iad: imgtools.Client,
        store: TransferStore) -> None:
    before = emu.stats()
    emu.set_faults(drop_before=0.5, methods="POST", paths="/v2/tasks", seed=POST_SEED)
    with set_testing(True):  # no courtesy pause before looking for the lost POST's task
        handle = client.transfer(SMALL, to="IAD", container=fresh_container("idem"),
                                 listing_delay=0, store=store)
    after = emu.stats()
    emu.clear_faults()
    # Both POSTs were dropped once (no task made: the looks found none, TaskNotConfirmed),
    # and each step asked again, once, in its first run.
    assert after["faults"].get("drop_before", 0) - before["faults"].get("drop_before", 0) == 2
    assert handle.status == "done"
    assert [(s.step, s.outcome) for s in handle.steps() if s.step in ("export", "import")] == \
        [("export", "done"), ("import", "done")]
    assert after["tasks_created"] - before["tasks_created"] == 2  # one export, one import
    assert iad.get_image(handle.target_image or "").checksum == handle.record.copy_md5

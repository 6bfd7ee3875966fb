"""Regressions found by the transfers-under-faults test (tests/system/test_transfer_faults.py):
steps that failed a transfer on a fault a retry would have cured."""

from __future__ import annotations

import hashlib

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


def test_the_manifest_read_back_goes_on_after_cut_connections(
        emu: EmulatorHandle, client: imgtools.Client, iad: imgtools.Client,
        store: TransferStore) -> None:
    target = fresh_container("idem-target")
    # Every GET of the target's assembled object (never its segments' PUTs, nor the listings)
    # is cut halfway: each one brings half of what is left.
    emu.set_faults(cut_body=1.0, methods="GET",
                   paths=f"/v1/MossoCloudFS_{emu.tenant_of()}/{target}/{SMALL}.vhd")
    before = emu.stats()["faults"].get("cut_body", 0)
    handle = client.transfer(SMALL, to="IAD", container=fresh_container("idem"),
                             target_container=target, listing_delay=0, store=store,
                             cleanup="none")
    cuts = emu.stats()["faults"].get("cut_body", 0) - before
    emu.clear_faults()
    assert cuts > 1
    assert handle.status == "done"
    assert [s.outcome for s in handle.steps() if s.step == "manifest"] == ["done"]
    rec = handle.record
    assert iad.get_image(rec.target_image or "").checksum == rec.copy_md5
    response = iad._storage.get(f"{target}/{SMALL}.vhd")
    response.raise_for_status()
    assert (len(response.content), _md5(response.content)) == (rec.copy_bytes, rec.copy_md5)


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()

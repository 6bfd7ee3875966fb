"""``imgtools.audit_frame``, the public audit of every region (notebook 03, the task browser),
against the emulator's three regions over real sockets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import imgtools
from imgtools import TaskLog
from imgtools.emulator import EmulatorConfig, EmulatorHandle, start_emulator

SEEDED = 12


@pytest.fixture(scope="module")
def seeded() -> Iterator[EmulatorHandle]:
    with start_emulator(config=EmulatorConfig(seed_tasks=SEEDED), subprocess=False) as handle:
        yield handle


@pytest.fixture
def log(tmp_path: Path) -> Iterator[TaskLog]:
    with TaskLog(tmp_path / "audit.sqlite") as audit:
        yield audit


def _connect(emu: EmulatorHandle, log: TaskLog) -> imgtools.Client:
    return imgtools.connect(username="demo", api_key="demo-key", identity_url=emu.identity_url,
                            log=log)


def test_every_region_of_the_login_with_a_region_column(seeded: EmulatorHandle,
                                                        log: TaskLog) -> None:
    with _connect(seeded, log) as client:
        frame = imgtools.audit_frame(client)
        dfw = imgtools.audit_frame(client, regions="DFW")
        two = imgtools.audit_frame(client, regions=["ORD", "IAD"])
    assert frame["region"].value_counts().to_dict() == {"ORD": SEEDED, "DFW": SEEDED,
                                                        "IAD": SEEDED}
    assert frame["id"].is_unique and (frame["source"] == "service").all()
    assert list(frame["created_at"]) == sorted(frame["created_at"])
    assert set(dfw["region"]) == {"DFW"} and set(two["region"]) == {"ORD", "IAD"}
    assert sorted([*dfw["id"], *two["id"]]) == sorted(frame["id"])


def test_tasks_the_service_no_longer_lists_come_from_the_log_with_their_region(
        log: TaskLog) -> None:
    # An emulator of its own: the others' tests need the tasks this one purges.
    with start_emulator(config=EmulatorConfig(seed_tasks=SEEDED), subprocess=False) as emu, \
            _connect(emu, log) as client:
        imgtools.audit_frame(client)  # every region's tasks are now in the log
        gone = imgtools.audit_frame(client, regions="IAD")["id"].iloc[0]
        emu.advance_clock(400 * 86400.0)  # past every task's time to live: all purged
        assert imgtools.tasks_frame(client, record=False).empty
        frame = imgtools.audit_frame(client)
    row = frame.loc[frame["id"] == gone].iloc[0]
    assert (row["source"], row["region"]) == ("log", "IAD")
    assert frame["region"].value_counts().to_dict() == {"ORD": SEEDED, "DFW": SEEDED,
                                                        "IAD": SEEDED}


def test_a_bare_token_audits_its_own_endpoint(seeded: EmulatorHandle, log: TaskLog) -> None:
    with _connect(seeded, log) as client:
        ord_ids = set(imgtools.audit_frame(client, regions="ORD")["id"])
    assert len(ord_ids) == SEEDED
    with imgtools.connect(endpoint=seeded.image_endpoint, token=seeded.token(), log=log) as bare:
        assert bare.regions == ()
        frame = imgtools.audit_frame(bare)
    assert set(frame["id"]) == ord_ids

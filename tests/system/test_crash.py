"""Crash and restart: the emulator SIGKILLed in the middle of a ``wait_all`` and started again
on the same data dir, and a client process SIGKILLed in the middle of ``download_export``.

Nothing may be lost on either side: every task ends (``success``, or ``failure`` with the
restart message when the emulator is told to fail interrupted tasks), the service holds exactly
the tasks asked for, the audit log holds all of them, and a killed download resumes into a
verified file.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from imgtools import TaskLog, TaskStatus, WaitAllResult, history
from imgtools.emulator import EmulatorConfig, EmulatorHandle, start_emulator
from imgtools.emulator.engine import RESTART_MESSAGE
from tests.client_support import SMALL, WEB, fresh_container, make_client

KiB = 1024
#: Exports in flight when the emulator dies.
IN_FLIGHT = 10

#: The web image (256 KiB) takes about four seconds to export: long enough to kill mid-way.
SLOW = EmulatorConfig(image_size=256 * KiB, segment_size=32 * KiB, export_speed=64 * KiB,
                      pending_delay=0.2, tick=0.02)


def _service_tasks(emu: EmulatorHandle) -> dict[str, dict[str, Any]]:
    """Every task of the demo tenant, by id, as the service lists them."""
    token = emu.token()
    status, _, body = emu.request("GET", "/v2/tasks?limit=1000", headers={"X-Auth-Token": token})
    assert status == 200, body[:200]
    return {t["id"]: t for t in json.loads(body)["tasks"]}


def _wait_until_processing(emu: EmulatorHandle, ids: set[str], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        statuses = {i: t["status"] for i, t in _service_tasks(emu).items() if i in ids}
        if statuses and set(statuses.values()) == {"processing"} and len(statuses) == len(ids):
            return
        assert time.monotonic() < deadline, statuses
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("recovery", ["resume", "fail"])
def test_emulator_killed_during_wait_all(tmp_path: Path, recovery: str) -> None:
    config = SLOW.replace(crash_recovery=recovery)
    log = TaskLog(tmp_path / "audit.sqlite")
    with start_emulator(config=config, data_dir=tmp_path / "emu") as emu, \
            make_client(emu, log=log, retries=3) as client:
        handles = [client.begin_export(WEB, fresh_container("crash"), create_container=True)
                   for _ in range(IN_FLIGHT)]
        ids = {h.id for h in handles}
        outcome: list[WaitAllResult | BaseException] = []

        def follow() -> None:
            try:
                outcome.append(client.wait_all(handles, timeout=90.0))
            except BaseException as exc:  # reported below: the wait must not raise
                outcome.append(exc)

        waiter = threading.Thread(target=follow)
        waiter.start()
        _wait_until_processing(emu, ids)
        emu.kill()
        time.sleep(1.5)  # the wait meets refused connections meanwhile
        assert waiter.is_alive()
        emu.restart()
        waiter.join(timeout=120)
        assert not waiter.is_alive()
        [result] = outcome
        assert isinstance(result, WaitAllResult), repr(result)

        # The wait carried on through the outage and saw every task end.
        assert not result.timed_out and not result.errors, result
        final = {t.id: t for t in result.succeeded + result.failed}
        assert set(final) == ids
        if recovery == "resume":
            assert len(result.succeeded) == IN_FLIGHT
            for task in result.succeeded:  # the restarted copies are whole and correct
                assert client.verify_export(task).ok
        else:
            assert len(result.failed) == IN_FLIGHT
            assert {t.message for t in result.failed} == {RESTART_MESSAGE}
        # Nothing lost or duplicated in the service, nothing lost in the audit log.
        service = _service_tasks(emu)
        assert set(service) == ids
        assert {service[i]["status"] for i in ids} == {final[i].status.value for i in ids}
        assert {t.id: t.status for t in log.tasks()} == {i: final[i].status for i in ids}
        events = history.events_frame(log)
        assert set(events["task_id"].astype(str)) == ids
        assert client.stats.retries > 0  # the outage was really met


@pytest.mark.slow
def test_wait_all_runs_to_its_deadline_while_the_service_is_down(tmp_path: Path) -> None:
    with start_emulator(config=SLOW, data_dir=tmp_path / "emu") as emu, \
            make_client(emu, retries=1) as client:
        handles = [client.begin_export(SMALL, fresh_container("down"), create_container=True)
                   for _ in range(3)]
        emu.kill()
        began = time.monotonic()
        result = client.wait_all(handles, timeout=2.0)  # never raises for an outage
        assert time.monotonic() - began >= 2.0
        assert {t.id for t in result.timed_out} == {h.id for h in handles}
        assert all(t.status is TaskStatus.PENDING for t in result.timed_out)
        emu.restart()
        again = client.wait_all(handles, timeout=60.0)
        assert {t.id for t in again.succeeded} == {h.id for h in handles}


# -- a client killed in the middle of a download -----------------------------------------------

# Small chunks, a journal every two chunks and a pause per chunk, so the parent can kill the
# child part-way through; two workers so the journal is written from two threads.
CHILD = """
import sys, threading, time
import imgtools
from imgtools import _files
_files.DEFAULT_DOWNLOAD_CHUNK = 8 * 1024
_files._JOURNAL_EVERY = 16 * 1024
identity_url, task_id, dest = sys.argv[1:4]

lock = threading.Lock()

def progress(done, total):
    with lock:  # two workers report: keep each line whole
        sys.stdout.write(f"{done} {total}\\n")
        sys.stdout.flush()
    time.sleep(0.01)

with imgtools.connect(username="demo", api_key="demo-key", identity_url=identity_url,
                      log=False) as client:
    client.download_export(task_id, dest, progress=progress, workers=2)
print("finished", flush=True)
"""

BIG = EmulatorConfig(image_size=2048 * KiB, segment_size=256 * KiB, export_speed=64 * 1024 * KiB,
                     pending_delay=0.1, tick=0.01)


@pytest.fixture(scope="module")
def big_emu() -> Iterator[EmulatorHandle]:
    with start_emulator(config=BIG) as handle:
        yield handle


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


@pytest.mark.slow
def test_client_killed_mid_download_resumes(big_emu: EmulatorHandle, tmp_path: Path) -> None:
    with make_client(big_emu) as client:
        task = client.export(WEB, fresh_container("dl"), create_container=True)
        size = client.get_image(WEB).size
        assert size is not None
        image_md5 = _md5(b"".join(client.image_file(WEB)))
        dest = tmp_path / "web.vhd"
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, big_emu.identity_url, task.id, str(dest)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert child.stdout is not None
        reached = 0
        for line in child.stdout:
            if line.startswith("finished"):
                break
            reached = int(line.split()[0])
            if reached >= size * 2 // 5:
                child.kill()  # SIGKILL: no cleanup, no final journal write
                break
        child.wait(timeout=30)
        assert child.returncode == -9, child.stderr.read() if child.stderr else ""
        assert 0 < reached < size
        assert not dest.exists()
        part = dest.with_name(dest.name + ".part")
        journal = dest.with_name(dest.name + ".part.json")
        assert part.exists() and journal.exists()

        result = client.download_export(task, dest, progress=False)
        assert 0 < result.resumed_from < size  # picked up where the journal said
        assert result.bytes == size == dest.stat().st_size
        assert _md5(dest.read_bytes()) == image_md5
        assert not part.exists() and not journal.exists()
        assert client.verify_export(task).ok


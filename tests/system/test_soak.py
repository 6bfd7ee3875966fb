"""Soak: 200 exports through the client against an emulator that throttles, fails, drops
connections and expires tokens, followed with batch polling (``wait_all``).

Checks that a run under trouble ends with every task accounted for: each one ``success`` or
``failure``, no duplicate task in the service, every task and every transition the client saw
in the audit log, nothing unhandled on either side. Prints one summary line (also written to
``tests/artifacts/soak.json`` for RELIABILITY.md).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

import imgtools
from imgtools import ExportNotConfirmed, ExportTask, Task, TaskLog, TaskStatus, history
from imgtools.emulator import EmulatorConfig, EmulatorHandle, FaultSettings, start_emulator
from tests.client_support import SMALL, make_client

#: Exports requested (one image, each into its own container).
EXPORTS = 200
#: Exports started together, then followed by one ``wait_all`` per wave.
WAVE = 50
#: Threads calling ``begin_export`` together (the client is shared: it is thread-safe).
THREADS = 16
#: Times one export is asked for again after ``ExportNotConfirmed`` (the client's documented
#: answer when a POST was lost and no task was found: nothing was created, so ask again).
RESUBMITS = 3

FAULTS = FaultSettings(error_503=0.10, rate_limit=25.0, rate_limit_status=413,
                       latency_min=0.05, latency_max=0.30, drop_before=0.02, drop_after=0.02)
#: Small images, a quick worker: each task takes about a second, so waves overlap running
#: tasks with polling while the whole soak stays well under three minutes on two cores.
CONFIG = EmulatorConfig(token_ttl=20.0, pending_delay=0.5, image_size=64 * 1024,
                        segment_size=16 * 1024, export_speed=48 * 1024, tick=0.02,
                        faults=FAULTS)

ARTIFACT = Path(__file__).parents[1] / "artifacts" / "soak.json"


class ObservingLog:
    """Forwards to a ``TaskLog`` and remembers every (task id, status) the client reported."""

    def __init__(self, log: TaskLog) -> None:
        self.log = log
        self.seen: set[tuple[str, str]] = set()
        self.calls = 0
        self._lock = threading.Lock()

    def record(self, tasks: Iterable[Task], *, seen_at: datetime | None = None) -> None:
        batch = list(tasks)
        with self._lock:
            self.calls += 1
            self.seen.update((t.id, t.status.value) for t in batch)
        self.log.record(batch, seen_at=seen_at)


@pytest.fixture
def soak_emu(tmp_path: Path) -> Iterator[EmulatorHandle]:
    with start_emulator(config=CONFIG, data_dir=tmp_path / "emulator") as handle:
        yield handle


def _all_tasks(emu: EmulatorHandle) -> list[dict[str, Any]]:
    """Every task of the demo tenant, straight from the service (no faults on this path)."""
    token = emu.token()
    out: list[dict[str, Any]] = []
    path: str | None = "/v2/tasks?limit=1000"
    while path:
        status, _, body = emu.request("GET", path, headers={"X-Auth-Token": token})
        assert status == 200, body[:200]
        page = json.loads(body)
        out += page["tasks"]
        path = page.get("next")
    return out


def _begin(client: imgtools.Client, index: int, resubmitted: list[int]) -> ExportTask:
    container = f"soak-{index:03d}"
    for attempt in range(RESUBMITS + 1):
        try:
            return client.begin_export(SMALL, container, create_container=True)
        except ExportNotConfirmed:
            if attempt == RESUBMITS:
                raise
            resubmitted.append(index)
    raise AssertionError("unreachable")


@pytest.mark.slow
def test_soak_under_faults(soak_emu: EmulatorHandle, tmp_path: Path,
                           caplog: pytest.LogCaptureFixture,
                           capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.WARNING, logger="imgtools")
    log = TaskLog(tmp_path / "audit.sqlite")
    observer = ObservingLog(log)
    started = time.monotonic()
    handles: list[ExportTask] = []
    resubmitted: list[int] = []
    soak_emu.reset_stats()  # count the run only, not the start-up checks
    with make_client(soak_emu, log=observer, retries=10, wait_timeout=120.0) as client, \
            ThreadPoolExecutor(THREADS) as pool, ThreadPoolExecutor(EXPORTS // WAVE) as waiters:
        # A wave is followed by its own wait_all while the next wave is being created: batch
        # polling and new exports share one client, as in a notebook running several cells.
        waits = []
        for first in range(0, EXPORTS, WAVE):
            wave = list(pool.map(lambda i: _begin(client, i, resubmitted),
                                 range(first, min(first + WAVE, EXPORTS))))
            handles += wave
            waits.append(waiters.submit(client.wait_all, wave))
        results = [w.result() for w in waits]
        stats = client.stats.snapshot()
    elapsed = time.monotonic() - started
    emu_stats = soak_emu.stats()
    soak_emu.clear_faults()
    service_tasks = _all_tasks(soak_emu)

    ids = [h.id for h in handles]
    final: dict[str, Task] = {}
    for result in results:
        assert not result.timed_out and not result.errors, result
        final.update({t.id: t for t in result.succeeded + result.failed})
    succeeded = sum(1 for t in final.values() if t.status is TaskStatus.SUCCESS)
    failed = sum(1 for t in final.values() if t.status is TaskStatus.FAILURE)

    logged = {t.id: t for t in log.tasks()}
    events = history.events_frame(log)
    logged_transitions = set(zip(events["task_id"].astype(str), events["status"].astype(str),
                                 strict=True))
    lost_tasks = sorted(set(ids) - set(logged))
    lost_transitions = sorted(observer.seen - logged_transitions)
    by_container: dict[str, int] = {}
    for handle in handles:
        assert handle.task is not None
        container = handle.task.container or "?"
        by_container[container] = by_container.get(container, 0) + 1
    faults = emu_stats["faults"]
    summary = {
        "requested": EXPORTS, "created": emu_stats["tasks_created"],
        "service_tasks": len(service_tasks), "duplicates": len(service_tasks) - len(set(ids)),
        "succeeded": succeeded, "failed": failed, "resubmitted": len(resubmitted),
        "client_requests": stats["requests"], "retries": stats["retries"],
        "reauths": stats["reauths"], "rate_limited": stats["rate_limited"],
        "emulator_requests": emu_stats["requests_total"], "faults": faults,
        "faults_total": emu_stats["faults_total"], "log_rows": len(logged),
        "transitions_seen": len(observer.seen), "transitions_logged": len(logged_transitions),
        "lost_rows": len(lost_tasks) + len(lost_transitions), "seconds": round(elapsed, 1),
    }
    line = ("SOAK tasks requested={requested} created={created} duplicates={duplicates} "
            "success={succeeded} failure={failed} resubmitted={resubmitted} "
            "requests={client_requests} retries={retries} reauths={reauths} "
            "rate_limited={rate_limited} faults={faults_total} log_rows={log_rows} "
            "transitions={transitions_logged}/{transitions_seen} lost_rows={lost_rows} "
            "seconds={seconds}").format(**summary)
    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_text(json.dumps({"line": line, **summary}, indent=2) + "\n")
    with capsys.disabled():
        print("\n" + line)

    # Every task reached an end, and the client saw that end.
    assert len(ids) == len(set(ids)) == EXPORTS
    assert set(final) == set(ids)
    assert succeeded + failed == EXPORTS
    assert {t["status"] for t in service_tasks} <= {"success", "failure"}
    # No duplicates: the service made exactly one task per export asked for.
    assert emu_stats["tasks_created"] == EXPORTS
    assert sorted(t["id"] for t in service_tasks) == sorted(ids)
    assert set(by_container.values()) == {1}
    # Every export really went through; a failure here would be a real fault of the worker.
    assert succeeded == EXPORTS, [t.message for t in final.values() if t.message]
    # The audit log holds every task (with its final state) and every transition seen.
    assert lost_tasks == [] and lost_transitions == []
    assert all(logged[i].status is final[i].status for i in ids)
    assert {(i, "success") for i in ids} <= logged_transitions
    # The faults really happened, and the client rode them out.
    for name in ("error_503", "rate_limit_413", "drop_before", "drop_after", "latency"):
        assert faults.get(name, 0) > 0, faults
    assert stats["retries"] > 0 and stats["rate_limited"] > 0
    assert stats["reauths"] >= 1  # a 20-second token cannot last the run
    # Nothing unhandled: no audit-log write failed, no 5xx of the emulator's own making.
    assert not [r for r in caplog.records if "audit log" in r.getMessage()]
    own_errors = [r for r in emu_stats["requests"] if r["status"] >= 500 and r["status"] != 503]
    assert own_errors == []
    assert "Traceback" not in soak_emu.log_tail(10_000)

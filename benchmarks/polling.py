"""Polling cost and detection lag: ``wait_all`` vs one ``wait`` per task vs openstacksdk.

200 concurrent exports on the local emulator, followed three ways at the same interval, in the
same run, each on fresh tasks:

- ``client.wait_all(tasks, poll=PollPolicy.fixed(interval))`` (batch: the list endpoint);
- one ``ExportTask.wait(poll=PollPolicy.fixed(interval))`` per task, in threads;
- openstacksdk's ``conn.image.wait_for_task(task, interval=interval)`` per task, in threads.

The interval means different things to them: openstacksdk sleeps ``interval`` after each
answer; ``PollPolicy.fixed(interval)`` promises a finish goes unseen for at most about
``interval``, so its polls start ``interval`` apart less the time the next poll is expected to
take (never closer than ``interval / 2``). The request counts show what each costs.

Reports the requests the emulator received while waiting (``GET /_emulator/stats``) and the
lag between each task's finish (the emulator's own float timestamp, read from its database)
and the moment the waiter had the finished task (for ``wait_all`` and ``wait``: when the client
recorded it in its log, i.e. after the GET that returned it in full). Targets: ``wait_all``
needs at most 1/10 of openstacksdk's requests, with a lag no worse than one poll interval.

    .venv/bin/python benchmarks/polling.py [--tasks 200] [--interval 1.0]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import imgtools
from imgtools import PollPolicy, Task
from imgtools.emulator import EmulatorConfig, EmulatorHandle, image_id_for, start_emulator

#: Three image sizes so tasks finish at different times: about 8, 16 and 32 s of copying at
#: this speed, after a 1 s pending phase: 10 to 30 poll intervals, as a real export of a few
#: minutes is at the 30 s interval the provider asks for.
CONFIG = EmulatorConfig(pending_delay=1.0, image_size=64 * 1024, segment_size=16 * 1024,
                        export_speed=2 * 1024, tick=0.02)
IMAGES = [image_id_for("100001", slug) for slug in ("web", "db", "small")]


class FirstSeenFinished:
    """A stand-in audit log: notes when the client first saw each task finished."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def record(self, tasks: Iterable[Task], *, seen_at: datetime | None = None) -> None:
        now = time.time()
        with self._lock:
            for task in tasks:
                if task.done and task.id not in self.seen:
                    self.seen[task.id] = now


def client_for(emu: EmulatorHandle, log: Any = False) -> imgtools.Client:
    return imgtools.connect(username="demo", api_key="demo-key", identity_url=emu.identity_url,
                            log=log, wait_timeout=600.0)


def start_exports(emu: EmulatorHandle, count: int, tag: str) -> list[imgtools.ExportTask]:
    with client_for(emu) as c:
        containers = [f"bench-{tag}-{n}" for n in range(count)]
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda name: c.files.create_container(name), containers))
            return list(pool.map(
                lambda n: c.begin_export(IMAGES[n % len(IMAGES)], containers[n],
                                         preflight=False), range(count)))


def finish_times(emu: EmulatorHandle, ids: list[str]) -> dict[str, float]:
    db = sqlite3.connect(f"file:{emu.data_dir / 'state.sqlite'}?mode=ro", uri=True)
    try:
        marks = ",".join("?" * len(ids))
        rows = db.execute(f"SELECT id, updated_at, status FROM tasks WHERE id IN ({marks})", ids)
        return {task_id: updated for task_id, updated, status in rows
                if status in ("success", "failure")}
    finally:
        db.close()


def requests_while(emu: EmulatorHandle, run: Callable[[], None]) -> tuple[int, float]:
    emu.reset_stats()
    started = time.monotonic()
    run()
    elapsed = time.monotonic() - started
    total = int(emu.stats()["requests_total"])
    return total - 1, elapsed  # the stats GET itself counts once


def measure(name: str, emu: EmulatorHandle, handles: list[imgtools.ExportTask],
            seen: dict[str, float], run: Callable[[], None]) -> dict[str, Any]:
    requests, elapsed = requests_while(emu, run)
    ids = [h.id for h in handles]
    finished = finish_times(emu, ids)
    lags = [seen[i] - finished[i] for i in ids if i in seen and i in finished]
    missing = len(ids) - len(lags)
    return {"name": name, "requests": requests, "elapsed": elapsed, "missing": missing,
            "lag_median": statistics.median(lags), "lag_p95": _pct(lags, 0.95),
            "lag_max": max(lags)}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_wait_all(emu: EmulatorHandle, count: int, interval: float) -> dict[str, Any]:
    handles = start_exports(emu, count, "all")
    log = FirstSeenFinished()
    with client_for(emu, log=log) as c:
        rounds: list[int] = []

        def run() -> None:
            result = c.wait_all([h.id for h in handles], poll=PollPolicy.fixed(interval),
                                on_progress=lambda p: rounds.append(p.rounds))
            assert len(result.succeeded) == count, result
        row = measure("wait_all", emu, handles, log.seen, run)
        row["rounds"] = rounds[-1]
        return row


def bench_wait_each(emu: EmulatorHandle, count: int, interval: float) -> dict[str, Any]:
    handles = start_exports(emu, count, "each")
    log = FirstSeenFinished()
    with client_for(emu, log=log) as c:
        followed = [imgtools.ExportTask(c, h.task or h.id) for h in handles]

        def run() -> None:
            with ThreadPoolExecutor(count) as pool:
                finals = list(pool.map(lambda t: t.wait(poll=PollPolicy.fixed(interval)),
                                       followed))
            assert all(t.status is imgtools.TaskStatus.SUCCESS for t in finals)
        return measure("wait per task", emu, handles, log.seen, run)


def bench_openstacksdk(emu: EmulatorHandle, count: int, interval: float) -> dict[str, Any]:
    import openstack

    warnings.simplefilter("ignore")
    handles = start_exports(emu, count, "sdk")
    conn = openstack.connect(auth_type="admin_token",
                             auth={"token": emu.token("demo"), "endpoint": emu.url},
                             image_endpoint_override=emu.url, image_api_version="2")
    sdk_tasks = [conn.image.get_task(h.id) for h in handles]
    seen: dict[str, float] = {}
    lock = threading.Lock()

    def follow(task: Any) -> None:
        conn.image.wait_for_task(task, status="success", failures=["failure"],
                                 interval=interval, wait=600)
        with lock:
            seen[task.id] = time.time()

    def run() -> None:
        with ThreadPoolExecutor(count) as pool:
            list(pool.map(follow, sdk_tasks))
    return measure("openstacksdk wait_for_task", emu, handles, seen, run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--interval", type=float, default=1.0, help="poll interval, seconds")
    args = parser.parse_args()
    with start_emulator(config=CONFIG, subprocess=True) as emu:
        rows = [bench_wait_all(emu, args.tasks, args.interval),
                bench_wait_each(emu, args.tasks, args.interval),
                bench_openstacksdk(emu, args.tasks, args.interval)]
    print(f"{args.tasks} concurrent exports, poll interval {args.interval:g} s "
          f"(tasks take about 9-33 s)")
    print(f"{'waiter':<28}{'requests':>9}{'lag median':>12}{'lag p95':>10}{'lag max':>10}"
          f"{'wall s':>8}")
    for r in rows:
        print(f"{r['name']:<28}{r['requests']:>9}{r['lag_median']:>11.2f}s{r['lag_p95']:>9.2f}s"
              f"{r['lag_max']:>9.2f}s{r['elapsed']:>8.1f}"
              + (f"  ({r['missing']} unmeasured)" if r["missing"] else ""))
    batch, each, sdk = rows
    ratio = batch["requests"] / sdk["requests"]
    print(f"wait_all / openstacksdk requests: {ratio:.3f} (target <= 0.100: "
          f"{'met' if ratio <= 0.1 else 'MISSED'})")
    print(f"wait per task / openstacksdk requests: {each['requests'] / sdk['requests']:.3f}")
    print(f"wait_all rounds: {batch['rounds']} ({batch['elapsed'] / batch['rounds']:.2f} s apart "
          f"on average)")
    print(f"wait_all max lag / interval: {batch['lag_max'] / args.interval:.2f} (target <= 1: "
          f"{'met' if batch['lag_max'] <= args.interval else 'MISSED'})")
    print(f"wait per task max lag / interval: {each['lag_max'] / args.interval:.2f}; "
          f"openstacksdk max lag / interval: {sdk['lag_max'] / args.interval:.2f}")
    missing = sum(r["missing"] for r in rows)
    if missing:
        print(f"MISSED: {missing} task(s) could not be measured")


if __name__ == "__main__":
    main()

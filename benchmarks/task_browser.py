"""Benchmark: the TaskBrowser with a large view (run by hand; not part of the test suite).

N tasks (default 100,000: exports and imports, a mix of statuses and failure messages, over
90 days) are recorded in a fresh audit log in full, and shown in a ``TaskBrowser`` (the
frame given, no service). Then, each ``--rounds`` times: every status filter, a type filter,
a date range, back to all; and a click on rows of the grid (the task read from the log, its
status events, the details panel). Each action is timed on its own, from the change to the
grid and summary having been rebuilt; the target is under 0.5 s for each.

    .venv/bin/python benchmarks/task_browser.py [--tasks 100000] [--rounds 5]

Figures vary 5-10 % between runs on a shared machine.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

TARGET = 0.5
MESSAGES = (
    "An image may only be exported by the image owner.",
    "Image cannot be exported due to licensing or billing restrictions "
    "(com.rackspace__1__options: '2')",
    "Container not found. Container: {container}",
    "Object already exists in user's container. Container/Object: {container}/{image}.vhd",
    "Unknown error occurred during image export",
)


def _bodies(n: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    start = datetime(2026, 9, 1, tzinfo=UTC)
    images = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(40)]
    out: list[dict[str, Any]] = []
    for i in range(n):
        created = start + timedelta(seconds=rng.uniform(0, 90 * 86400))
        status = rng.choices(("success", "failure", "processing", "pending"),
                             (80, 15, 3, 2))[0]
        updated = created + timedelta(minutes=rng.uniform(1, 60))
        image, container = rng.choice(images), rng.choice(("exports", "backups", "nightly"))
        body: dict[str, Any] = {
            "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "type": "export" if i % 10 else "import", "status": status, "owner": "100001",
            "created_at": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "updated_at": updated.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "input": {"image_uuid": image, "receiving_swift_container": container},
            "result": {"export_location": f"{container}/{image}.vhd"}
            if status == "success" else None,
            "message": rng.choice(MESSAGES).format(container=container, image=image)
            if status == "failure" else "",
        }
        out.append(body)
    return out


def _time(action: Callable[[], Any]) -> float:
    began = time.perf_counter()
    action()
    return time.perf_counter() - began


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)

    from imgtools._tasklog import TaskLog
    from imgtools.history import log_frame
    from imgtools.widgets import GRID_ROWS, TaskBrowser

    with tempfile.TemporaryDirectory() as tmp, TaskLog(Path(tmp) / "audit.sqlite") as log:
        began = time.perf_counter()
        log.record_bodies(_bodies(args.tasks))
        frame = log_frame(log)
        print(f"{len(frame):,} tasks recorded and read in {time.perf_counter() - began:.1f} s")
        made = time.perf_counter()
        browser = TaskBrowser(log=log, frame=frame)
        print(f"TaskBrowser built (grid of {min(GRID_ROWS, len(frame)):,} rows) in "
              f"{time.perf_counter() - made:.2f} s")

        def status(value: str) -> Callable[[], None]:
            return lambda: setattr(browser.status_filter, "value", value)

        def typed(value: str) -> Callable[[], None]:
            return lambda: setattr(browser.type_filter, "value", value)

        def days(since: date | None, until: date | None) -> Callable[[], None]:
            def run() -> None:
                browser.since.value = since
                browser.until.value = until
            return run

        actions: list[tuple[str, Callable[[], None]]] = [
            ("status=failure", status("failure")), ("status=success", status("success")),
            ("status=all", status("all")), ("type=import", typed("import")),
            ("type=all", typed("all")),
            ("from/to a month", days(date(2026, 10, 1), date(2026, 10, 31))),
            ("from/to cleared", days(None, None)),
            *((f"click row {row}", (lambda r=row: browser.select_row(r)))  # type: ignore[misc]
              for row in (0, 7, 14, 400, 999)),
        ]
        times: dict[str, list[float]] = {name: [] for name, _ in actions}
        for _ in range(args.rounds):
            for name, action in actions:
                # A click on the row shown last is a change again, and shows it afresh.
                browser.grid.selected_rows = []
                browser.selected = browser.detail = ""
                times[name].append(_time(action))
        assert browser.error == "", browser.error
        assert browser.detail, "the last click showed no task"
        print(f"\n{'action':<18} {'median':>8} {'max':>8}   (target < {TARGET} s; "
              f"{args.rounds} rounds, {len(frame):,} tasks)")
        worst = 0.0
        for name, values in times.items():
            worst = max(worst, max(values))
            print(f"{name:<18} {statistics.median(values):>7.3f}s {max(values):>7.3f}s")
        print(f"\nslowest action: {worst:.3f} s -> {'OK' if worst < TARGET else 'TOO SLOW'}")
    return 0 if worst < TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())

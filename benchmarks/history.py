"""Benchmark: task history into pandas (run by hand; not part of the test suite).

1. The service: N tasks seeded in the emulator (default 100,000), listed at page size 1000 into
   a DataFrame by imgtools ``tasks_frame(client)`` (with and without recording the listing in
   the audit log), openstacksdk (``pd.DataFrame([t.to_dict() for t in conn.image.tasks(limit=
   1000)])``) and python-glanceclient (``tasks.list(page_size=1000)``), and the floor of them
   all, "server only": the pages fetched over one keep-alive connection with nothing parsed
   beyond finding ``next``. Interleaved in one run (each round in a seeded random order, with
   a short rest after each contender); medians of ``--rounds`` rounds, ratios against
   openstacksdk and against the server-only time (``--no-peers``: imgtools and the floor
   only). Logs are opened before the clock starts and written to after it stops, except in the
   "until ... has them all" rows. With ``--postgres``, also recording into a team log on
   PostgreSQL (a throwaway server on loopback, started by this script, emptied after each
   round).
2. The log: an M-row audit log (default 1,000,000) into a DataFrame, ``history.log_frame``
   against a plain ``pd.read_sql("SELECT * FROM tasks")`` of the same table; each in a fresh
   process, with its time and its peak RSS above the process's RSS after imports. With
   ``--postgres``, the same for a team log of ``--pg-log-rows`` rows (default: as many),
   copied from the file log by ``TaskLog.copy_into`` (what ``imgtools log push`` does).

    .venv/bin/python benchmarks/history.py [--tasks 100000] [--log-rows 1000000] [--rounds 3]
                                           [--only service|log] [--log-path PATH] [--no-peers]
                                           [--postgres] [--pg-log-rows N]

Figures vary 5-10 % between runs on a shared machine; compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

PAGE = 1000
#: Seconds of rest (untimed) after each contender of the service benchmark.
SETTLE = 0.5
SERVER_ONLY = "server only (pages fetched, `next` found)"
SDK = "openstacksdk tasks -> to_dict -> DataFrame"


# -- 1. the service ----------------------------------------------------------------------------

# Work a contender leaves for after its timed call (closing a log whose writes go on).
_AFTER: list[Callable[[], None]] = []


class _Fresh:
    """A fresh log per round, opened before the round's clock starts: opening one (a new
    file's schema and its fsyncs, a PostgreSQL connection) is what a process does once, not
    part of listing; measured in the timed call, it was up to 25 ms of noise on a busy disk."""

    made: list[_Fresh] = []

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make
        self._next = make()
        _Fresh.made.append(self)

    def take(self) -> Any:
        return self._next

    def renew(self) -> None:
        self._next = self._make()

    @classmethod
    def close_all(cls) -> None:
        while cls.made:
            cls.made.pop()._next.close()


def _imgtools(emu: Any, record: bool, log_dir: Path, *,
              until_recorded: bool = False) -> Callable[[], pd.DataFrame]:
    import imgtools
    from imgtools import history
    from imgtools._tasklog import TaskLog

    # A fresh log each round: recording 100,000 new stubs is the realistic (worst) case.
    logs = _Fresh(lambda: TaskLog(log_dir / f"{uuid.uuid4()}.sqlite"))

    def run() -> pd.DataFrame:
        log = logs.take()
        with imgtools.connect(username="demo", api_key="demo-key",
                              identity_url=emu.identity_url, log=log) as client:
            frame = history.tasks_frame(client, record=record)
        if until_recorded:
            log.close()  # waits until the log's writer has every listed task
        else:
            _AFTER.append(log.close)  # the frame is the user's; the log goes on writing
        _AFTER.append(logs.renew)
        return frame

    return run


_NEXT = re.compile(rb'"next"\s*:\s*"([^"]+)"')


class _Pages:
    """What ``len()`` the runner checks: the number of tasks the pages held."""

    def __init__(self, count: int) -> None:
        self.count = count

    def __len__(self) -> int:
        return self.count


def _server_only(emu: Any, token: str) -> Callable[[], Any]:
    """The floor: every page fetched, nothing parsed beyond finding ``next`` (and counting
    the tasks' ``"self"`` links, a byte count, to check the listing was whole)."""
    import httpx

    def run() -> _Pages:
        count = 0
        root = emu.image_endpoint.rsplit("/v2", 1)[0]
        with httpx.Client(headers={"X-Auth-Token": token, "Accept": "application/json"},
                          timeout=60.0) as http:
            url: str | None = f"{emu.image_endpoint}/tasks?limit={PAGE}"
            while url is not None:
                body = http.get(url).content
                count += body.count(b'"self": "/v2/tasks/') + body.count(b'"self":"/v2/tasks/')
                found = _NEXT.search(body)
                url = None if found is None else root + found[1].decode()
        return _Pages(count)

    return run


def _imgtools_postgres(emu: Any, url: str, *, until_recorded: bool = False
                       ) -> Callable[[], pd.DataFrame]:
    import psycopg

    import imgtools
    from imgtools import history
    from imgtools._tasklog import TaskLog

    def empty() -> None:
        # An empty team log each round: new stubs, the worst case (emptied after timing).
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("TRUNCATE tasks, events")

    logs = _Fresh(lambda: TaskLog(url))

    def run() -> pd.DataFrame:
        log = logs.take()
        with imgtools.connect(username="demo", api_key="demo-key",
                              identity_url=emu.identity_url, log=log) as client:
            frame = history.tasks_frame(client)
        if until_recorded:
            log.close()
        else:
            _AFTER.append(log.close)
        _AFTER.extend((empty, logs.renew))
        return frame

    return run


def _openstacksdk(emu: Any, token: str) -> Callable[[], pd.DataFrame]:
    import openstack

    def run() -> pd.DataFrame:
        conn = openstack.connect(auth_type="admin_token",
                                 auth={"token": token, "endpoint": emu.image_endpoint},
                                 image_endpoint_override=emu.image_endpoint,
                                 image_api_version="2")
        try:
            return pd.DataFrame([t.to_dict() for t in conn.image.tasks(limit=PAGE)])
        finally:
            conn.close()

    return run


def _glanceclient(emu: Any, token: str) -> Callable[[], pd.DataFrame]:
    import glanceclient

    def run() -> pd.DataFrame:
        client = glanceclient.Client("2", endpoint=emu.url, token=token)
        return pd.DataFrame([dict(t) for t in client.tasks.list(page_size=PAGE)])

    return run


def bench_service(count: int, rounds: int, peers: bool = True,
                  postgres: str | None = None) -> None:
    from imgtools.emulator import EmulatorConfig, server, start_emulator

    # Seeding 100,000 tasks at start-up takes longer than the handle's default readiness wait.
    server.READY_TIMEOUT = max(server.READY_TIMEOUT, 600.0)  # type: ignore[attr-defined]
    print(f"== {count:,} tasks in the emulator -> DataFrame (page size {PAGE}), "
          f"{rounds} interleaved rounds, medians")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, start_emulator(
            config=EmulatorConfig(seed_tasks=count), subprocess=True) as emu:
        print(f"   (emulator up and seeded in {time.perf_counter() - started:.1f} s)")
        token = emu.token("demo")
        contenders: dict[str, Callable[[], Any]] = {
            SERVER_ONLY: _server_only(emu, token),
            "imgtools tasks_frame(client)": _imgtools(emu, True, Path(tmp)),
            "  ... and until the log has written them all": _imgtools(
                emu, True, Path(tmp), until_recorded=True),
            "imgtools tasks_frame(client, record=False)": _imgtools(emu, False, Path(tmp)),
        }
        if postgres is not None:
            contenders["imgtools tasks_frame(client), team log on PostgreSQL"] = \
                _imgtools_postgres(emu, postgres)
            contenders["  ... and until PostgreSQL has them all"] = _imgtools_postgres(
                emu, postgres, until_recorded=True)
        if peers:
            contenders[SDK] = _openstacksdk(emu, token)
            contenders["python-glanceclient tasks.list -> DataFrame"] = _glanceclient(emu, token)
        # Warm-up (not timed): lazy imports, plugin loading, schema fetches, the first connection.
        if peers:
            import itertools

            import glanceclient
            import openstack

            conn = openstack.connect(auth_type="admin_token",
                                     auth={"token": token, "endpoint": emu.image_endpoint},
                                     image_endpoint_override=emu.image_endpoint,
                                     image_api_version="2")
            list(itertools.islice(conn.image.tasks(limit=10), 10))
            conn.close()
            gc = glanceclient.Client("2", endpoint=emu.url, token=token)
            list(itertools.islice(gc.tasks.list(page_size=10), 10))
        contenders[SERVER_ONLY]()  # warm the emulator's pages too
        while _AFTER:
            _AFTER.pop(0)()
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for round_ in range(rounds):
            # Each round in its own (seeded) order, and a pause after each contender: what a
            # heavy writer leaves running (PostgreSQL's WAL and vacuum, the kernel writing the
            # SQLite file back) must not land on whichever contender always came next.
            order = list(contenders.items())
            random.Random(round_).shuffle(order)
            for name, run in order:
                begin = time.perf_counter()
                frame = run()
                times[name].append(time.perf_counter() - begin)
                while _AFTER:  # not timed, but before the next contender starts
                    _AFTER.pop(0)()
                time.sleep(SETTLE)
                if len(frame) != count:
                    raise SystemExit(f"{name}: {len(frame)} rows, expected {count}")
        _Fresh.close_all()
    floor = statistics.median(times[SERVER_ONLY])
    sdk = statistics.median(times[SDK]) if SDK in times else None
    # "/ server": median over median; "paired": the median of each round's own ratio (the
    # two ran seconds apart), steadier when other work loads the machine unevenly.
    print(f"   {'client':52s} {'median s':>9s} {'tasks/s':>9s} {'vs sdk':>7s} "
          f"{'/ server':>8s} {'paired':>7s}   rounds")
    for name, values in times.items():
        median = statistics.median(values)
        versus = f"{sdk / median:6.1f}x" if sdk is not None else "      -"
        paired = statistics.median(v / s for v, s in zip(values, times[SERVER_ONLY],
                                                          strict=True))
        print(f"   {name:52s} {median:9.2f} {count / median:9,.0f} {versus} "
              f"{median / floor:7.2f}x {paired:6.2f}x   " + " ".join(f"{v:.2f}" for v in values))


# -- 2. the log --------------------------------------------------------------------------------

def seed_log(path: Path, rows: int) -> None:
    """``rows`` finished/running export and import tasks with input/result/message, through
    ``TaskLog.record`` (10,000 per transaction), times a day apart in whole seconds."""
    from imgtools._models import Task, TaskStatus
    from imgtools._tasklog import TaskLog

    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    statuses = [TaskStatus.SUCCESS] * 7 + [TaskStatus.FAILURE, TaskStatus.PROCESSING,
                                           TaskStatus.PENDING]
    messages = ["Container not found. Container: dr", "Unknown error occurred during "
                "image export", "An image may only be exported by the image owner."]
    started = time.perf_counter()
    with TaskLog(path) as log:
        batch: list[Task] = []
        for n in range(rows):
            created = t0 + timedelta(seconds=n * 3)
            status = statuses[n % 10]
            image = str(uuid.UUID(int=n))
            container = f"exports-{n % 7}"
            importing = n % 9 == 0
            batch.append(Task(
                id=str(uuid.UUID(int=(1 << 100) + n)), type="import" if importing else "export",
                status=status, created_at=created,
                updated_at=created + timedelta(seconds=600 + n % 900), owner="100001",
                expires_at=created + timedelta(hours=48, seconds=600 + n % 900)
                if status.terminal else None,
                input={"import_from": f"{container}/{image}.vhd", "import_from_format": "vhd",
                       "image_properties": {"name": f"r-{n}"}} if importing
                else {"image_uuid": image, "receiving_swift_container": container},
                result=None if status != TaskStatus.SUCCESS else (
                    {"image_id": image} if importing
                    else {"export_location": f"{container}/{image}.vhd"}),
                message=messages[n % 3] if status == TaskStatus.FAILURE else None))
            if len(batch) == 10_000:
                log.record(batch)
                batch = []
        if batch:
            log.record(batch)
    took = time.perf_counter() - started
    print(f"   seeded {rows:,} rows via TaskLog.record in {took:.1f} s "
          f"({rows / took:,.0f} tasks/s incl. building them)")


_CHILD = """
import json, resource, sys, time
import pandas as pd, sqlite3
from imgtools._tasklog import TaskLog
from imgtools.history import log_frame
mode, path = sys.argv[1], sys.argv[2]
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20
base = rss_mb()
start = time.perf_counter()
if mode == "imgtools":
    with TaskLog(path) as log:
        frame = log_frame(log)
elif mode == "pg-read_sql":
    import warnings, psycopg
    warnings.simplefilter("ignore")  # pandas prefers SQLAlchemy; a DBAPI connection works
    with psycopg.connect(path) as conn:
        frame = pd.read_sql("SELECT * FROM tasks", conn)
else:
    conn = sqlite3.connect(path)
    frame = pd.read_sql("SELECT * FROM tasks", conn)
    conn.close()
took = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": took, "peak_mb": peak - base, "rows": len(frame),
                  "frame_mb": frame.memory_usage(deep=True).sum() / 2**20}))
"""


def _measure(mode: str, path: Path) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", _CHILD, mode, str(path)], check=True,
                         capture_output=True, text=True)
    result: dict[str, float] = json.loads(out.stdout)
    return result


def bench_log(rows: int, rounds: int, path: Path | None, postgres: str | None = None,
              pg_rows: int | None = None) -> None:
    where = "audit log" if postgres is None else "team log on PostgreSQL"
    print(f"== a {pg_rows or rows:,}-row {where} -> DataFrame, each run in a fresh process, "
          f"{rounds} interleaved rounds, medians")
    with tempfile.TemporaryDirectory() as tmp:
        target: Path | str = path or Path(tmp) / "log.sqlite"
        if postgres is not None:
            if pg_rows is not None and pg_rows != rows:
                target = Path(tmp) / "pg-seed.sqlite"
            assert isinstance(target, Path)
            if not target.exists():
                seed_log(target, pg_rows or rows)
            from imgtools._tasklog import TaskLog

            started = time.perf_counter()
            with TaskLog(target) as local, TaskLog(postgres) as team:
                copied = local.copy_into(team)
            took = time.perf_counter() - started
            print(f"   copied {copied:,} tasks into PostgreSQL with TaskLog.copy_into in "
                  f"{took:.1f} s ({copied / took:,.0f} tasks/s)")
            target = postgres
        else:
            assert isinstance(target, Path)
            if not target.exists():
                seed_log(target, rows)
            print(f"   log file: {target.stat().st_size / 2**20:,.0f} MiB")
        modes = ("imgtools", "read_sql" if postgres is None else "pg-read_sql")
        results: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
        for _ in range(rounds):
            for mode in results:
                results[mode].append(_measure(mode, target))
    names = {"imgtools": "history.log_frame(log) (typed, 15 columns)",
             "read_sql": 'pd.read_sql("SELECT * FROM tasks") (raw)',
             "pg-read_sql": 'pd.read_sql("SELECT * FROM tasks") (raw)'}
    base = statistics.median(r["seconds"] for r in results[modes[1]])
    base_peak = statistics.median(r["peak_mb"] for r in results[modes[1]])
    print(f"   {'reader':42s} {'median s':>9s} {'rows/s':>10s} {'time/read_sql':>13s} "
          f"{'peak MiB':>9s} {'peak/read_sql':>13s} {'frame MiB':>10s}")
    for mode, runs in results.items():
        seconds = statistics.median(r["seconds"] for r in runs)
        peak = statistics.median(r["peak_mb"] for r in runs)
        size = statistics.median(r["frame_mb"] for r in runs)
        print(f"   {names[mode]:42s} {seconds:9.2f} {runs[0]['rows'] / seconds:10,.0f} "
              f"{seconds / base:12.2f}x {peak:9,.0f} {peak / base_peak:12.2f}x {size:10,.0f}")


@contextlib.contextmanager
def _postgres(enabled: bool) -> Iterator[str | None]:
    """A throwaway PostgreSQL server (tests/postgres_support.py) with an empty team log."""
    if not enabled:
        yield None
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import postgres_support

    with postgres_support.running() as server:
        yield postgres_support.team_log_url(server)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--log-rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=("service", "log"))
    parser.add_argument("--log-path", type=Path, help="reuse (or keep) this seeded log")
    parser.add_argument("--no-peers", action="store_true",
                        help="skip openstacksdk and python-glanceclient")
    parser.add_argument("--postgres", action="store_true",
                        help="also record into / read from a team log on a throwaway "
                             "PostgreSQL server (Debian's postgresql binaries)")
    parser.add_argument("--pg-log-rows", type=int, default=None,
                        help="rows of the team log read back (default: --log-rows)")
    args = parser.parse_args(argv)
    print(f"python {sys.version.split()[0]}, pandas {pd.__version__}, "
          f"{os.cpu_count()} CPUs, peak RSS measured with getrusage")
    with _postgres(args.postgres) as url:
        if args.only in (None, "service"):
            bench_service(args.tasks, args.rounds, peers=not args.no_peers, postgres=url)
        if args.only in (None, "log"):
            bench_log(args.log_rows, args.rounds, args.log_path)
            if url is not None:
                bench_log(args.log_rows, args.rounds, args.log_path, postgres=url,
                          pg_rows=args.pg_log_rows)


if __name__ == "__main__":
    main()

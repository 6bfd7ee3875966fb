"""The SQLite audit log: upsert rules, events, concurrency, crash safety, JSONL round trips."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from imgtools import history
from imgtools._exceptions import ValidationError
from imgtools._logsql import TASK_COLUMNS
from imgtools._models import Task
from imgtools._taskfields import Origin
from imgtools._tasklog import TaskLog, default_log_path, parse_since
from tests import postgres_support

T0 = datetime(2014, 2, 26, 2, 1, 13, tzinfo=UTC)
IMAGE = "ca5e7f11-5d57-4dd7-8ace-03ab647fe6c6"
REPO = Path(__file__).resolve().parents[2]


def body(task_id: str, status: str = "pending", *, minutes: int = 0, stub: bool = False,
         type: str = "export", message: str | None = "None", **extra: Any) -> dict[str, Any]:
    """A task body as the service sends it; ``minutes`` after T0 is ``updated_at``."""
    data: dict[str, Any] = {
        "id": task_id, "type": type, "status": status, "owner": "100001",
        "created_at": T0.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "updated_at": (T0 + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if status in ("success", "failure"):
        data["expires_at"] = (T0 + timedelta(minutes=minutes, hours=48)).strftime(
            "%Y-%m-%dT%H:%M:%SZ")
    if not stub:
        data["input"] = {"image_uuid": IMAGE, "receiving_swift_container": "exports"}
        data["result"] = ({"export_location": f"exports/{IMAGE}.vhd"}
                          if status == "success" else None)
        data["message"] = message
    data.update(extra)
    return data


def task(task_id: str, status: str = "pending", **kwargs: Any) -> Task:
    return Task.from_json(body(task_id, status, **kwargs))


def new_id() -> str:
    return str(uuid.uuid4())


@pytest.fixture(scope="module")
def pg() -> Iterator[postgres_support.Server]:
    """A PostgreSQL server of this module's own (each test gets a fresh database)."""
    postgres_support.require()
    with postgres_support.running() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TaskLog]:
    """The same log tests on both backends: a file, and a team log on a real server."""
    target: str | Path = tmp_path / "log.sqlite"
    if request.param == "postgresql":
        target = postgres_support.team_log_url(request.getfixturevalue("pg"))
    with TaskLog(target, spool=tmp_path / "spool.sqlite") as opened:
        yield opened


def raw(log: TaskLog, query: str) -> list[tuple[Any, ...]]:
    """Rows of a raw query, through the log's own connection (either backend)."""
    return log._backend.fetchall(query)


def rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


# -- paths -------------------------------------------------------------------------------------

def test_default_path_comes_from_the_environment(tmp_path: Path) -> None:
    # conftest points IMGTOOLS_LOG at a temp file for every test.
    assert default_log_path() == Path(os.environ["IMGTOOLS_LOG"])
    with TaskLog.default() as log:
        assert log.path == Path(os.environ["IMGTOOLS_LOG"])
        log.record([task(new_id())])
    assert Path(os.environ["IMGTOOLS_LOG"]).exists()


def test_default_path_falls_back_to_the_user_data_dir(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import platformdirs

    monkeypatch.delenv("IMGTOOLS_LOG")
    monkeypatch.setattr(platformdirs, "user_data_dir", lambda name: str(tmp_path / name))
    assert default_log_path() == tmp_path / "imgtools" / "tasks.sqlite"


def test_a_given_path_wins_and_its_directory_is_created(tmp_path: Path) -> None:
    with TaskLog(tmp_path / "deep" / "dir" / "t.sqlite") as log:
        assert log.path.parent.is_dir()
        assert raw(log, "PRAGMA journal_mode") == [("wal",)]


# -- upsert rules ------------------------------------------------------------------------------

def test_recording_the_same_state_twice_adds_nothing(log: TaskLog) -> None:
    t = task(new_id(), "processing", minutes=1)
    log.record([t], seen_at=T0 + timedelta(minutes=2))
    before = raw(log, "SELECT * FROM tasks"), raw(log, "SELECT * FROM events ORDER BY status")
    log.record([t, t], seen_at=T0 + timedelta(minutes=3))
    after = raw(log, "SELECT * FROM tasks"), raw(log, "SELECT * FROM events ORDER BY status")
    assert len(log) == 1
    assert after[1] == before[1]  # the event keeps its first sighting
    # Only last_seen moves.
    last = TASK_COLUMNS.index("last_seen")
    assert [r[:last] + r[last + 1:] for r in after[0]] == \
        [r[:last] + r[last + 1:] for r in before[0]]
    assert after[0][0][last] > before[0][0][last]


def test_a_stub_never_erases_known_detail(log: TaskLog) -> None:
    tid = new_id()
    log.record([task(tid, "success", minutes=5)])
    log.record([task(tid, "success", minutes=5, stub=True)])
    got = log.get(tid)
    assert got is not None and not got.is_stub
    assert got.input == {"image_uuid": IMAGE, "receiving_swift_container": "exports"}
    assert got.export_location == f"exports/{IMAGE}.vhd"


def test_a_stub_with_a_newer_status_keeps_input_and_asks_for_a_refetch(log: TaskLog) -> None:
    tid = new_id()
    log.record([task(tid, "pending")])
    log.record([task(tid, "failure", minutes=3, stub=True)])
    got = log.get(tid)
    assert got is not None
    assert got.status == "failure" and got.is_stub  # its message is not known yet
    assert got.input is not None and got.image_id == IMAGE
    assert log.complete_ids([tid]) == set()
    log.record([task(tid, "failure", minutes=3, message="Container not found. Container: x")])
    got = log.get(tid)
    assert got is not None and not got.is_stub
    assert got.message == "Container not found. Container: x"
    assert log.complete_ids([tid]) == {tid}


def test_an_older_state_never_overwrites_a_newer_one(log: TaskLog) -> None:
    tid = new_id()
    log.record([task(tid, "success", minutes=10)])
    log.record([task(tid, "processing", minutes=4)])
    log.record([task(tid, "pending", stub=True)])
    got = log.get(tid)
    assert got is not None and got.status == "success"
    assert got.export_location == f"exports/{IMAGE}.vhd"
    assert got.expires_at == T0 + timedelta(minutes=10, hours=48)
    assert set(history.events_frame(log, tid)["status"].astype(str)) == {"pending", "processing",
                                                                   "success"}


def test_same_second_updates_follow_the_lifecycle(log: TaskLog) -> None:
    # Timestamps have whole seconds: pending -> processing can share one updated_at.
    tid = new_id()
    log.record([task(tid, "processing")])
    log.record([task(tid, "pending")])
    assert (got := log.get(tid)) is not None and got.status == "processing"


def test_duplicates_inside_one_batch_fold_in_order(log: TaskLog) -> None:
    tid = new_id()
    log.record([task(tid, "pending"), task(tid, "processing", minutes=1, stub=True),
                task(tid, "success", minutes=2)])
    assert (got := log.get(tid)) is not None and got.status == "success" and not got.is_stub
    assert len(history.events_frame(log, tid)) == 3


def test_events_keep_the_time_each_status_was_first_seen(log: TaskLog) -> None:
    tid = new_id()
    for minute, status in ((0, "pending"), (1, "pending"), (2, "processing"), (9, "success")):
        log.record([task(tid, status, minutes=minute)], seen_at=T0 + timedelta(minutes=minute))
    events = history.events_frame(log, tid)
    assert list(events["status"].astype(str)) == ["pending", "processing", "success"]
    assert list(events["seen_at"]) == [pd.Timestamp(T0 + timedelta(minutes=m)) for m in (0, 2, 9)]
    assert str(events["seen_at"].dtype) == "datetime64[us, UTC]"
    assert isinstance(events["status"].dtype, pd.CategoricalDtype)


def test_get_tasks_len_contains_and_filters(log: TaskLog) -> None:
    old, new = new_id(), new_id()
    log.record([task(old, "failure", minutes=2, message="boom")])
    log.record([Task.from_json(body(new, "pending", created_at="2030-01-01T00:00:00Z",
                                    updated_at="2030-01-01T00:00:00Z", type="import"))])
    assert len(log) == 2 and old in log and "nope" not in log
    assert log.get("nope") is None
    assert [t.id for t in log.tasks()] == [old, new]  # oldest first
    assert [t.id for t in log.tasks(status="failure")] == [old]
    assert [t.id for t in log.tasks(type=["import"])] == [new]
    assert [t.id for t in log.tasks(since="2029-12-31")] == [new]
    assert list(history.log_frame(log, status=["failure", "success"])["id"]) == [old]
    assert list(history.log_frame(log, since=datetime(2029, 1, 1, tzinfo=UTC))["id"]) == [new]
    assert history.log_frame(log, type="export", status="pending").empty


def test_a_recorded_task_reads_back_equal(log: TaskLog) -> None:
    t = task(new_id(), "success", minutes=15)
    log.record([t])
    assert log.get(t.id) == t


def test_parse_since() -> None:
    now = datetime(2024, 5, 10, 12, 0, tzinfo=UTC)
    assert parse_since("7d", now=now) == now - timedelta(days=7)
    assert parse_since(" 12h ", now=now) == now - timedelta(hours=12)
    assert parse_since("30m", now=now) == now - timedelta(minutes=30)
    assert parse_since("2w", now=now) == now - timedelta(weeks=2)
    assert parse_since("2024-05-01", now=now) == datetime(2024, 5, 1, tzinfo=UTC)
    assert parse_since("2024-05-01T03:00:00Z") == datetime(2024, 5, 1, 3, tzinfo=UTC)
    assert parse_since(timedelta(hours=1), now=now) == now - timedelta(hours=1)
    assert parse_since(None) is None
    with pytest.raises(ValidationError) as caught:
        parse_since("a week")
    assert caught.value.field == "since"


def test_a_closed_log_refuses_work(tmp_path: Path) -> None:
    log = TaskLog(tmp_path / "c.sqlite")
    log.close()
    log.close()
    with pytest.raises(ValueError, match="closed"):
        log.record([task(new_id())])


def test_no_secrets_reach_the_log(log: TaskLog) -> None:
    # Tasks carry none; the log must not add any (nor the table layout invite them).
    log.record([task(new_id(), "success", minutes=1)])
    if log.path is not None:
        columns = {r[1] for r in raw(log, "PRAGMA table_info(tasks)")}
    else:
        columns = {r[0] for r in raw(log, "SELECT column_name FROM information_schema.columns "
                                          "WHERE table_name = 'tasks'")}
    assert columns == set(TASK_COLUMNS)
    assert not {c for c in columns if "token" in c or "key" in c or "password" in c}


# -- several writers ---------------------------------------------------------------------------

def test_threads_share_one_log(log: TaskLog) -> None:
    ids = [[new_id() for _ in range(200)] for _ in range(4)]

    def write(mine: list[str]) -> None:
        for tid in mine:
            log.record([task(tid, "pending")])
            log.record([task(tid, "success", minutes=1)])

    threads = [threading.Thread(target=write, args=(mine,)) for mine in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(log) == 800
    assert set(history.log_frame(log)["status"].astype(str)) == {"success"}
    assert len(history.events_frame(log)) == 1600


WRITER = textwrap.dedent("""
    import sys, time, uuid
    from datetime import UTC, datetime, timedelta
    from pathlib import Path
    from imgtools._models import Task
    from imgtools._tasklog import TaskLog

    path, name, count, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    log = TaskLog(path)
    while not go.exists():          # start both writers together
        time.sleep(0.001)
    for n in range(count):
        tid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{name}/{n}"))
        shared = str(uuid.uuid5(uuid.NAMESPACE_URL, f"shared/{n % 50}"))
        stamp = (t0 + timedelta(seconds=n)).strftime("%Y-%m-%dT%H:%M:%SZ")
        tasks = [Task.from_json({"id": i, "type": "export", "status": "pending", "owner": name,
                                 "created_at": stamp, "updated_at": stamp})
                 for i in (tid, shared)]
        log.record(tasks)           # one short transaction per task: maximal contention
        print(tid, flush=True)
    log.close()
""")


def start_writer(path: Path, name: str, count: int, go: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(path), name, str(count), str(go)],
                            stdout=subprocess.PIPE, text=True, cwd=REPO)


def test_two_processes_upserting_at_once_lose_nothing(tmp_path: Path) -> None:
    path, go = tmp_path / "shared.sqlite", tmp_path / "go"
    writers = [start_writer(path, name, 1000, go) for name in ("alpha", "beta")]
    go.touch()
    written = []
    for writer in writers:
        out, _ = writer.communicate(timeout=240)
        assert writer.returncode == 0
        written.append(out.split())
    with TaskLog(path) as log:
        ids = set(history.log_frame(log)["id"])
    assert len(written[0]) == len(written[1]) == 1000
    assert set(written[0]) | set(written[1]) <= ids
    assert len(ids) == 2000 + 50  # each writer's own tasks plus the 50 both touched
    assert rows(path, "PRAGMA integrity_check") == [("ok",)]
    assert rows(path, "SELECT count(*) FROM events") == [(2050,)]


def test_a_writer_killed_mid_run_leaves_every_committed_row(tmp_path: Path) -> None:
    path, go = tmp_path / "killed.sqlite", tmp_path / "go"
    go.touch()
    writer = start_writer(path, "victim", 1_000_000, go)
    assert writer.stdout is not None
    committed = [writer.stdout.readline().strip() for _ in range(300)]
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    assert writer.returncode == -signal.SIGKILL
    # Whatever it committed after the 300 lines we read also counts; none may be missing.
    with TaskLog(path) as log:
        ids = set(history.log_frame(log)["id"])
        assert set(committed) <= ids
        log.record([task(new_id())])  # and the log still takes writes
    assert rows(path, "PRAGMA integrity_check") == [("ok",)]


# -- JSON Lines --------------------------------------------------------------------------------

def test_export_import_round_trip(log: TaskLog, tmp_path: Path) -> None:
    a, b = new_id(), new_id()
    log.record([task(a, "pending")], seen_at=T0)
    log.record([task(a, "success", minutes=15)], seen_at=T0 + timedelta(minutes=16))
    log.record([task(b, "failure", minutes=2, message="Container not found. Container: x",
                     type="import")], seen_at=T0 + timedelta(minutes=3))
    out = tmp_path / "export.jsonl"
    assert log.export(out) == 2
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert {line["id"] for line in lines} == {a, b}
    assert all("token" not in line for line in lines)
    with TaskLog(tmp_path / "copy.sqlite") as copy:
        assert copy.import_(out) == 2
        pd.testing.assert_frame_equal(history.log_frame(copy), history.log_frame(log))
        pd.testing.assert_frame_equal(history.events_frame(copy), history.events_frame(log))
        assert copy.get(a) == log.get(a)
        before = rows(copy.path, "SELECT * FROM tasks ORDER BY id")
        copy.import_(out)  # importing again changes nothing
        assert rows(copy.path, "SELECT * FROM tasks ORDER BY id") == before
    # On the class, it merges into the default log ($IMGTOOLS_LOG, set per test).
    assert TaskLog.import_(out) == 2
    with TaskLog() as default:
        pd.testing.assert_frame_equal(history.log_frame(default), history.log_frame(log))


def test_import_merges_logs_from_several_machines(tmp_path: Path) -> None:
    tid = new_id()
    with TaskLog(tmp_path / "laptop.sqlite") as laptop, \
            TaskLog(tmp_path / "server.sqlite") as server, \
            TaskLog(tmp_path / "team.sqlite") as team:
        laptop.record([task(tid, "pending")], seen_at=T0 + timedelta(seconds=5))
        server.record([task(tid, "processing", minutes=1)], seen_at=T0 + timedelta(minutes=2))
        server.record([task(tid, "success", minutes=9, stub=True)],
                      seen_at=T0 + timedelta(minutes=10))
        laptop.record([task(tid, "success", minutes=9)], seen_at=T0 + timedelta(minutes=30))
        laptop.export(tmp_path / "laptop.jsonl")
        server.export(tmp_path / "server.jsonl")
        team.import_(tmp_path / "server.jsonl")
        team.import_(tmp_path / "laptop.jsonl")
        got = team.get(tid)
        assert got is not None and got.status == "success" and not got.is_stub
        assert got.export_location == f"exports/{IMAGE}.vhd"
        events = history.events_frame(team, tid)
        assert list(events["status"].astype(str)) == ["pending", "processing", "success"]
        # success was first seen by the server, 20 minutes before the laptop saw it.
        assert events["seen_at"].iloc[-1] == pd.Timestamp(T0 + timedelta(minutes=10))


def test_import_names_the_damaged_line(log: TaskLog, tmp_path: Path) -> None:
    good = json.dumps(body(new_id(), "pending"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(good + "\n\n" + '{"id": "x", "status": "exploded"}\n')
    with pytest.raises(ValidationError, match="line 3"):
        log.import_(bad)


def test_import_accepts_plain_task_bodies(log: TaskLog, tmp_path: Path) -> None:
    # A file of `GET /v2/tasks/{id}` bodies (no log bookkeeping) is a valid import too.
    tid = new_id()
    src = tmp_path / "bodies.jsonl"
    src.write_text(json.dumps(body(tid, "success", minutes=3)) + "\n")
    assert log.import_(src) == 1
    got = log.get(tid)
    assert got is not None and not got.is_stub and got.export_location is not None


def test_record_bodies_matches_record(tmp_path: Path) -> None:
    from imgtools._exceptions import ResponseError

    bodies = [body(new_id(), "success", minutes=4, stub=True),
              body(new_id(), "failure", minutes=2, message="boom"),
              dict(body(new_id(), "pending", stub=True),
                   created_at="2014-02-26T02:01:13.250+00:00")]
    with TaskLog(tmp_path / "a.sqlite") as fast, TaskLog(tmp_path / "b.sqlite") as slow:
        fast.record_bodies(bodies, seen_at=T0)
        slow.record([Task.from_json(b) for b in bodies], seen_at=T0)
        assert rows(fast.path, "SELECT * FROM tasks ORDER BY id") == \
            rows(slow.path, "SELECT * FROM tasks ORDER BY id")
        for damaged in ({"id": "x"}, dict(bodies[0], status="lost"),
                        dict(bodies[0], updated_at="yesterday")):
            with pytest.raises(ResponseError):
                fast.record_bodies([body(new_id()), damaged])
        assert len(fast) == 3  # a damaged batch writes nothing


# -- schema versions ---------------------------------------------------------------------------

# The schema of imgtools' first log (PRAGMA user_version 1), verbatim, and rows that code wrote:
# an export seen pending then successful, a successful import, a failed export's stub.
V1_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id              TEXT PRIMARY KEY,
    type            TEXT NOT NULL,
    status          TEXT NOT NULL,
    owner           TEXT,
    created_at      INTEGER NOT NULL,   -- epoch microseconds, UTC
    updated_at      INTEGER NOT NULL,
    expires_at      INTEGER,
    input           TEXT,               -- JSON object or NULL
    result          TEXT,
    message         TEXT,               -- NULL when the service sent "None" or ""
    image_id        TEXT,
    container       TEXT,
    export_location TEXT,
    first_seen      INTEGER NOT NULL,
    last_seen       INTEGER NOT NULL,
    detail          INTEGER NOT NULL    -- 1: input/result/message match the stored status
);
CREATE INDEX IF NOT EXISTS tasks_created_at ON tasks (created_at);
CREATE TABLE IF NOT EXISTS events (
    task_id    TEXT NOT NULL,
    status     TEXT NOT NULL,
    seen_at    INTEGER NOT NULL,        -- first time this status was seen, epoch us UTC
    updated_at INTEGER NOT NULL,        -- the task's updated_at when it was seen
    PRIMARY KEY (task_id, status)
) WITHOUT ROWID;
"""
V1_EXPORT, V1_IMPORT, V1_STUB = (f"11111111-0000-4000-8000-00000000000{n}" for n in (1, 2, 3))
V1_TASKS = [
    (V1_EXPORT, "export", "success", "100001", 1393380073000000, 1393380973000000,
     1393553773000000, '{"image_uuid":"ca5e7f11-5d57-4dd7-8ace-03ab647fe6c6",'
     '"receiving_swift_container":"exports"}',
     '{"export_location":"exports/ca5e7f11-5d57-4dd7-8ace-03ab647fe6c6.vhd"}', None,
     "ca5e7f11-5d57-4dd7-8ace-03ab647fe6c6", "exports",
     "exports/ca5e7f11-5d57-4dd7-8ace-03ab647fe6c6.vhd", 1393380073000000, 1393381273000000, 1),
    (V1_IMPORT, "import", "success", "100001", 1393380133000000, 1393380553000000,
     1393553353000000, '{"image_properties":{"name":"web"},"import_from":"vhds/web.vhd",'
     '"import_from_format":"vhd"}', '{"image_id":"4eb26d7b-0000-4000-8000-000000000001"}',
     None, "4eb26d7b-0000-4000-8000-000000000001", "vhds", None, 1393381273000000,
     1393381273000000, 1),
    (V1_STUB, "export", "failure", "100002", 1393380193000000, 1393380313000000,
     1393553113000000, None, None, None, None, None, None, 1393381273000000, 1393381273000000, 0),
]
V1_EVENTS = [
    (V1_EXPORT, "pending", 1393380073000000, 1393380073000000),
    (V1_EXPORT, "success", 1393381273000000, 1393380973000000),
    (V1_IMPORT, "success", 1393381273000000, 1393380553000000),
    (V1_STUB, "failure", 1393381273000000, 1393380313000000),
]


def make_v1_log(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(V1_SCHEMA)
    conn.executemany(f"INSERT INTO tasks VALUES ({', '.join('?' * 16)})", V1_TASKS)
    conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?)", V1_EVENTS)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()


def test_a_log_from_the_first_schema_upgrades_in_place_with_nothing_lost(tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite"
    make_v1_log(path)
    with TaskLog(path) as log:
        assert rows(path, "PRAGMA user_version") == [(2,)]
        assert len(log) == 3
        frame = history.log_frame(log)
        # Every column the old log had, as the old code derived it.
        by_id = frame.set_index("id")
        for old in V1_TASKS:
            got = by_id.loc[old[0]]
            assert (got["type"], got["status"], got["owner"]) == old[1:4]
            assert [pd.Timestamp(got[c]).value // 1000 for c in
                    ("created_at", "updated_at", "expires_at")] == list(old[4:7])
            assert [None if pd.isna(got[c]) else got[c] for c in
                    ("message", "image_id", "container", "export_location")] == \
                [old[9], *old[10:13]]
            assert got["account"] == old[3]  # the owner is the tenant it ran in
            assert pd.isna(got["region"])  # not known then; never invented
        stored = {r[0]: r for r in rows(path, f"SELECT {', '.join(TASK_COLUMNS)} FROM tasks")}
        for old in V1_TASKS:
            new = stored[old[0]]
            c = TASK_COLUMNS.index
            assert new[c("input")] == old[7] and new[c("result")] == old[8]
            assert (new[c("first_seen")], new[c("last_seen")], new[c("detail")]) == old[13:16]
        exported = log.get(V1_EXPORT)
        assert exported is not None and not exported.is_stub
        assert exported.export_location == f"exports/{IMAGE}.vhd"
        imported = log.get(V1_IMPORT)
        assert imported is not None and imported.image_id == V1_TASKS[1][10]
        assert log.complete_ids([V1_EXPORT, V1_IMPORT, V1_STUB]) == {V1_EXPORT, V1_IMPORT}
        assert [e[:4] for e in log.event_rows()] == sorted(V1_EVENTS, key=lambda e: (e[2], e[0]))
        # And it goes on: a later sighting of the stub fills its detail in, with its origin.
        log.record([task(V1_STUB, "failure", minutes=3, message="boom", owner="100002")],
                   origin=Origin("ORD", "100002", "images.example", False))
        got = log.get(V1_STUB)
        assert got is not None and got.message == "boom" and not got.is_stub
        row = history.log_frame(log, region="ORD")
        assert list(row["id"]) == [V1_STUB]
    with TaskLog(path) as again:  # a second open finds the current version: no new upgrade
        assert len(again) == 3 and rows(path, "PRAGMA integrity_check") == [("ok",)]


def test_a_log_from_a_newer_imgtools_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(ValidationError, match="newer imgtools"):
        TaskLog(path)


# -- where tasks were seen ---------------------------------------------------------------------

def test_rows_and_events_record_where_they_were_seen(log: TaskLog) -> None:
    ord_task, iad_task, unknown = new_id(), new_id(), new_id()
    log.record([task(ord_task, "pending")], origin=Origin("ORD", "100001", "ord.images", False))
    log.record([task(iad_task, "pending")],
               origin=Origin("IAD", "200002", "127.0.0.1:8774", True))
    log.record([task(unknown, "pending")])
    log.record([task(ord_task, "success", minutes=5)])  # a later sighting without an origin
    stored = {r[0]: r[-4:] for r in raw(log, f"SELECT {', '.join(TASK_COLUMNS)} "
                                                   f"FROM tasks")}
    assert stored == {ord_task: ("ORD", "100001", "ord.images", 0),
                      iad_task: ("IAD", "200002", "127.0.0.1:8774", 1),
                      unknown: (None, "100001", None, 0)}
    events = {(r[0], r[1]): r[4:] for r in raw(log, "SELECT * FROM events")}
    assert events[(ord_task, "pending")] == ("ORD", "100001", "ord.images", 0)
    assert events[(iad_task, "pending")] == ("IAD", "200002", "127.0.0.1:8774", 1)
    assert list(history.log_frame(log, region="ORD")["id"]) == [ord_task]
    assert list(history.log_frame(log, account=["200002"])["id"]) == [iad_task]
    assert set(history.log_frame(log, emulator=False)["id"]) == {ord_task, unknown}
    assert list(history.log_frame(log, emulator=True)["id"]) == [iad_task]
    assert [t.id for t in log.tasks(region=["IAD", "ORD"], status="pending")] == [iad_task]


def test_the_origin_travels_through_export_and_import(log: TaskLog, tmp_path: Path) -> None:
    tid = new_id()
    log.record([task(tid, "success", minutes=2)], origin=Origin("DFW", "100001", "dfw", False))
    log.export(tmp_path / "out.jsonl")
    with TaskLog(tmp_path / "copy.sqlite") as copy:
        copy.import_(tmp_path / "out.jsonl")
        for query in ("SELECT * FROM tasks ORDER BY id",
                      "SELECT * FROM events ORDER BY task_id, status"):
            assert rows(copy.path, query) == raw(log, query)


def test_storage_imports_no_pandas_and_no_module_cycle() -> None:
    # The log returns rows and columns; only history builds DataFrames.
    code = ("import sys, imgtools._tasklog, imgtools._logsql, imgtools._taskfields; "
            "print('pandas' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO)
    assert out.stdout.strip() == "False"
    graph = runtime_imports(REPO / "imgtools")
    storage = {"imgtools._tasklog", "imgtools._logsql", "imgtools._taskfields",
               "imgtools._times", "imgtools._models", "imgtools.history"}
    for module in storage:
        assert module not in reachable(graph, module), module


def runtime_imports(root: Path) -> dict[str, set[str]]:
    """Module -> the imgtools modules it imports at run time (function bodies included,
    ``if TYPE_CHECKING:`` blocks not)."""
    import ast

    modules = {".".join(p.relative_to(root.parent).with_suffix("").parts)
               .removesuffix(".__init__"): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                node.body = []
        found: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name in modules)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    found.add(full if full in modules else node.module)
        graph[name] = {m for m in found if m in modules and m != "imgtools"}
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(graph.get(start, ()))
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(graph.get(module, ()))
    return seen


# -- writes behind a listing -------------------------------------------------------------------

def stub_columns(bodies: list[dict[str, Any]]) -> dict[str, Any]:
    import numpy as np

    from imgtools._logsql import NAT_US
    from imgtools._times import time_us

    def us(name: str) -> Any:
        return np.array([NAT_US if b.get(name) is None else time_us(b[name]) for b in bodies],
                        dtype=np.int64)

    return {"id": [b["id"] for b in bodies], "type": [b["type"] for b in bodies],
            "status": [b["status"] for b in bodies], "owner": [b.get("owner") for b in bodies],
            "created_at": us("created_at"), "updated_at": us("updated_at"),
            "expires_at": us("expires_at")}


def test_stubs_written_behind_equal_stubs_recorded_at_once(tmp_path: Path) -> None:
    bodies = [body(new_id(), status, minutes=n, stub=True)
              for n, status in enumerate(("pending", "processing", "success", "failure"))]
    where = Origin("ORD", None, "images.example:443", False)
    with TaskLog(tmp_path / "now.sqlite") as now, TaskLog(tmp_path / "later.sqlite") as later, \
            TaskLog(tmp_path / "columns.sqlite") as columns:
        now.record_bodies(bodies, seen_at=T0, origin=where)
        later.record_bodies_later(bodies[:2], seen_at=T0, origin=where)
        later.record_bodies_later(bodies[2:], seen_at=T0, origin=where)
        columns.record_stubs_later(stub_columns(bodies), seen_at=T0, origin=where)
        assert len(later) == 4 and len(columns) == 4  # a read waits for the queued writes
        for query in ("SELECT * FROM tasks ORDER BY id", "SELECT * FROM events ORDER BY task_id"):
            assert rows(later.path, query) == rows(now.path, query) == rows(columns.path, query)


def test_a_damaged_page_written_behind_is_dropped_alone_and_said(
        log: TaskLog, caplog: pytest.LogCaptureFixture) -> None:
    good, other = [body(new_id(), stub=True)], [body(new_id(), stub=True)]
    damaged = [dict(body(new_id(), stub=True), status="exploded")]
    with caplog.at_level("WARNING", logger="imgtools"):
        log.record_bodies_later(good)
        log.record_bodies_later(damaged)
        log.record_stubs_later(stub_columns(damaged))
        log.record_bodies_later(other)
        log.flush()
    assert {t.id for t in log.tasks()} == {good[0]["id"], other[0]["id"]}
    assert caplog.text.count("could not record 1 listed task(s)") == 2


def test_pages_written_behind_in_slices_are_whole_and_a_damaged_slice_drops_its_page(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    # The writer builds a page's rows a few at a time (yielding the GIL between slices): the
    # rows must be those of one build, and damage in a late slice must drop the whole page.
    from imgtools import _tasklog

    monkeypatch.setattr(_tasklog, "WRITER_SLICE", 3)
    statuses = ("pending", "processing", "success", "failure")
    bodies = [body(new_id(), statuses[n % 4], minutes=n, stub=True) for n in range(11)]
    damaged = [body(new_id(), stub=True) for _ in range(7)]
    damaged[-1]["status"] = "exploded"  # in the third slice
    where = Origin("DFW", "9", "images.example:443", False)
    with TaskLog(tmp_path / "now.sqlite") as now, TaskLog(tmp_path / "sliced.sqlite") as sliced, \
            caplog.at_level("WARNING", logger="imgtools"):
        now.record_bodies(bodies, seen_at=T0, origin=where)
        sliced.record_stubs_later(stub_columns(bodies[:5]), seen_at=T0, origin=where)
        sliced.record_bodies_later(bodies[5:], seen_at=T0, origin=where)
        sliced.record_stubs_later(stub_columns(damaged), seen_at=T0, origin=where)
        sliced.record_bodies_later(damaged, seen_at=T0, origin=where)
        sliced.flush()
        for query in ("SELECT * FROM tasks ORDER BY id", "SELECT * FROM events ORDER BY task_id"):
            assert rows(sliced.path, query) == rows(now.path, query)
        assert len(sliced) == 11
    assert caplog.text.count("could not record 7 listed task(s)") == 2


def test_a_closed_log_keeps_no_writer_thread(tmp_path: Path) -> None:
    # One writer thread per log: each client's log (a notebook opens many) must not leave one
    # waiting forever once closed.
    import threading

    def writers() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name == "imgtools-log-writer"}

    before = writers()
    for n in range(3):
        log = TaskLog(tmp_path / f"{n}.sqlite")
        log.record_bodies_later([body(new_id(), stub=True)])
        log.close()
    for thread in writers() - before:
        thread.join(timeout=30)  # ends at once; the timeout only guards a broken build
        assert not thread.is_alive()
    for n in range(3):
        with TaskLog(tmp_path / f"{n}.sqlite") as log:
            assert len(log) == 1  # what was queued was written before the thread ended


def test_writes_queued_behind_are_kept_when_the_process_ends_without_close(
        tmp_path: Path) -> None:
    path = tmp_path / "exit.sqlite"
    script = textwrap.dedent(f"""
        import json, sys
        from imgtools._tasklog import TaskLog
        log = TaskLog({str(path)!r})
        pages = json.loads(sys.stdin.read())
        for page in pages:
            log.record_bodies_later(page)
        # no close, no flush: the interpreter's exit must still write them
    """)
    pages = [[body(new_id(), stub=True) for _ in range(300)] for _ in range(5)]
    subprocess.run([sys.executable, "-c", script], input=json.dumps(pages), text=True,
                   check=True, cwd=REPO, timeout=120)
    with TaskLog(path) as log:
        assert len(log) == 1500


def test_columns_share_repeated_values_and_keep_unique_ones(log: TaskLog) -> None:
    # A million rows must not hold a million copies of "success", of the owner or of the
    # region while the columns are read: repeats within a chunk are one object.
    where = Origin("ORD", "100001", "images.example:443", False)
    ids = [new_id() for _ in range(40)]
    log.record([task(i, "success", minutes=n) for n, i in enumerate(ids)], origin=where)
    columns = log.columns()
    for name in ("status", "type", "owner", "container", "region", "account"):
        values = list(columns[name])
        assert len({id(v) for v in values}) == 1 and values[0] == values[-1], name
    assert sorted(columns["id"]) == sorted(ids)
    assert list(columns["region"]) == ["ORD"] * 40 and list(columns["status"]) == ["success"] * 40


def test_columns_survive_separator_characters_and_filters(log: TaskLog) -> None:
    # Both backends read columns as joined text; a value holding the separators must still
    # come back whole (that chunk is read again row by row), and filters apply in the query.
    odd = "line one\x1eline two\x1f,\n'quoted' 100%"
    a, b, c = new_id(), new_id(), new_id()
    log.record([task(a, "failure", minutes=2, message=odd),
                task(b, "failure", minutes=2, message="fine"), task(c, "pending")])
    frame = history.log_frame(log)
    assert dict(zip(frame["id"], frame["message"].fillna(""), strict=True)) == \
        {a: odd, b: "fine", c: ""}
    assert list(frame["image_id"]) == [IMAGE] * 3 and list(frame["container"]) == ["exports"] * 3
    assert sorted(history.log_frame(log, status="failure")["id"]) == sorted([a, b])
    assert history.log_frame(log, status="success").empty
    plain = log.columns(status="failure")
    assert sorted(plain["message"]) == sorted([odd, "fine"])
    assert plain["expires_at"].dtype.kind == "i"

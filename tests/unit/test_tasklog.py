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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from imgtools._exceptions import ValidationError
from imgtools._models import Task
from imgtools._tasklog import TaskLog, default_log_path, parse_since

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


@pytest.fixture
def log(tmp_path: Path) -> TaskLog:
    with TaskLog(tmp_path / "log.sqlite") as opened:
        yield opened  # type: ignore[misc]


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
        assert rows(log.path, "PRAGMA journal_mode") == [("wal",)]


# -- upsert rules ------------------------------------------------------------------------------

def test_recording_the_same_state_twice_adds_nothing(log: TaskLog) -> None:
    t = task(new_id(), "processing", minutes=1)
    log.record([t], seen_at=T0 + timedelta(minutes=2))
    before = rows(log.path, "SELECT * FROM tasks"), rows(log.path, "SELECT * FROM events")
    log.record([t, t], seen_at=T0 + timedelta(minutes=3))
    after = rows(log.path, "SELECT * FROM tasks"), rows(log.path, "SELECT * FROM events")
    assert len(log) == 1
    assert after[1] == before[1]  # the event keeps its first sighting
    # Only last_seen moves.
    assert [r[:14] for r in after[0]] == [r[:14] for r in before[0]]
    assert after[0][0][14] > before[0][0][14]


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
    assert set(log.events_frame(tid)["status"].astype(str)) == {"pending", "processing",
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
    assert len(log.events_frame(tid)) == 3


def test_events_keep_the_time_each_status_was_first_seen(log: TaskLog) -> None:
    tid = new_id()
    for minute, status in ((0, "pending"), (1, "pending"), (2, "processing"), (9, "success")):
        log.record([task(tid, status, minutes=minute)], seen_at=T0 + timedelta(minutes=minute))
    events = log.events_frame(tid)
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
    assert list(log.frame(status=["failure", "success"])["id"]) == [old]
    assert list(log.frame(since=datetime(2029, 1, 1, tzinfo=UTC))["id"]) == [new]
    assert log.frame(type="export", status="pending").empty


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
    columns = {r[1] for r in rows(log.path, "PRAGMA table_info(tasks)")}
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
    assert set(log.frame()["status"].astype(str)) == {"success"}
    assert len(log.events_frame()) == 1600


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
        ids = set(log.frame()["id"])
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
        ids = set(log.frame()["id"])
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
        pd.testing.assert_frame_equal(copy.frame(), log.frame())
        pd.testing.assert_frame_equal(copy.events_frame(), log.events_frame())
        assert copy.get(a) == log.get(a)
        before = rows(copy.path, "SELECT * FROM tasks ORDER BY id")
        copy.import_(out)  # importing again changes nothing
        assert rows(copy.path, "SELECT * FROM tasks ORDER BY id") == before
    # On the class, it merges into the default log ($IMGTOOLS_LOG, set per test).
    assert TaskLog.import_(out) == 2
    with TaskLog() as default:
        pd.testing.assert_frame_equal(default.frame(), log.frame())


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
        events = team.events_frame(tid)
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

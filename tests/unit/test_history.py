"""Task frames: columns and dtypes, flattening, message normalisation, details, merged,
styling and summaries."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from imgtools import history
from imgtools._exceptions import NotFound, ResponseError, ValidationError
from imgtools._frames import _frame_from_items
from imgtools._models import Task
from imgtools._tasklog import TaskLog
from imgtools.history import (
    COLUMNS,
    filter_tasks,
    merged,
    style_tasks,
    summary,
    tasks_frame,
    tasks_frame_async,
)

T0 = datetime(2014, 2, 26, 2, 1, 13, tzinfo=UTC)
IMAGE = "ca5e7f11-5d57-4dd7-8ace-03ab647fe6c6"
STR = pd.StringDtype(na_value=np.nan)
EXPECTED_DTYPES = {
    "id": STR,
    "type": pd.CategoricalDtype(["export", "import"]),
    "status": pd.CategoricalDtype(["pending", "processing", "success", "failure"]),
    "owner": STR,
    "created_at": pd.DatetimeTZDtype("us", "UTC"),
    "updated_at": pd.DatetimeTZDtype("us", "UTC"),
    "expires_at": pd.DatetimeTZDtype("us", "UTC"),
    "duration": np.dtype("m8[us]"),
    "image_id": STR,
    "container": STR,
    "export_location": STR,
    "message": STR,
    "source": pd.CategoricalDtype(["service", "log"]),
    "region": STR,
    "account": STR,
}


def stamp(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


def export_body(task_id: str, status: str = "success", *, minutes: float = 15,
                message: Any = "None", stub: bool = False, image: str = IMAGE,
                container: str = "exports") -> dict[str, Any]:
    data: dict[str, Any] = {"id": task_id, "type": "export", "status": status,
                            "owner": "100001", "created_at": stamp(0),
                            "updated_at": stamp(minutes), "self": f"/v2/tasks/{task_id}",
                            "schema": "/v2/schemas/task"}
    if status in ("success", "failure"):
        data["expires_at"] = stamp(minutes + 48 * 60)
    if not stub:
        data["input"] = {"image_uuid": image, "receiving_swift_container": container}
        data["result"] = ({"export_location": f"{container}/{image}.vhd"}
                          if status == "success" else None)
        data["message"] = message
    return data


def import_body(task_id: str, status: str = "success", *, minutes: float = 7,
                message: Any = "") -> dict[str, Any]:
    return {"id": task_id, "type": "import", "status": status, "owner": "100001",
            "created_at": stamp(1), "updated_at": stamp(1 + minutes),
            "input": {"import_from": "vhds/web.vhd", "import_from_format": "vhd",
                      "image_properties": {"name": "web"}},
            "result": {"image_id": "4eb26d7b-0000-4000-8000-000000000001"}
            if status == "success" else None,
            "message": message}


def new_id() -> str:
    return str(uuid.uuid4())


def assert_standard(frame: pd.DataFrame) -> None:
    assert tuple(frame.columns) == COLUMNS
    assert {c: frame[c].dtype for c in frame.columns} == EXPECTED_DTYPES


class FakeClient:
    """What ``tasks_frame`` needs of a client: ``tasks()`` (list stubs), ``get_task``, ``log``.
    Counts GETs and the most GETs in flight at once."""

    def __init__(self, bodies: list[dict[str, Any]], log: TaskLog | None = None) -> None:
        self.full = {b["id"]: b for b in bodies}
        self.listed = [{k: v for k, v in b.items() if k not in ("input", "result", "message")}
                       for b in bodies]
        self.log = log
        self.gets: list[str] = []
        self.in_flight = self.most_in_flight = 0
        self._lock = threading.Lock()
        self._release = threading.Event()

    def tasks(self) -> Iterator[Task]:
        for item in self.listed:
            yield Task.from_json(item)

    def get_task(self, task_id: str) -> Task:
        with self._lock:
            self.gets.append(task_id)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            # Hold each GET until several are queued, so the bound is actually exercised.
            self._release.wait(0.05)
            if task_id not in self.full:
                raise NotFound("gone", status_code=404)
            return Task.from_json(self.full[task_id])
        finally:
            with self._lock:
                self.in_flight -= 1


class RawPagesClient(FakeClient):
    """A client offering ``iter_task_pages()``: raw list bodies, page by page."""

    def iter_task_pages(self) -> Iterator[list[dict[str, Any]]]:
        for start in range(0, len(self.listed), 2):
            yield self.listed[start:start + 2]


class FakeAsyncClient:
    def __init__(self, bodies: list[dict[str, Any]], log: TaskLog | None = None) -> None:
        self.sync = FakeClient(bodies, log)
        self.log = log

    async def tasks(self) -> AsyncIterator[Task]:
        for task in self.sync.tasks():
            yield task

    async def get_task(self, task_id: str) -> Task:
        await asyncio.sleep(0)
        return self.sync.get_task(task_id)


@pytest.fixture
def log(tmp_path: Path) -> Iterator[TaskLog]:
    with TaskLog(tmp_path / "h.sqlite") as opened:
        yield opened


# -- columns and dtypes ------------------------------------------------------------------------

def test_empty_frames_have_every_column_typed(log: TaskLog) -> None:
    assert_standard(tasks_frame([]))
    assert_standard(tasks_frame(log))
    assert_standard(history.log_frame(log))
    assert_standard(tasks_frame(FakeClient([])))
    assert_standard(tasks_frame(RawPagesClient([])))
    assert_standard(history.empty_frame())
    assert tasks_frame([]).empty


def test_one_task(log: TaskLog) -> None:
    t = Task.from_json(export_body(new_id()))
    frame = tasks_frame([t])
    assert_standard(frame)
    row = frame.iloc[0]
    assert row["id"] == t.id and row["status"] == "success" and row["type"] == "export"
    assert row["created_at"] == pd.Timestamp(T0)
    assert row["expires_at"] == pd.Timestamp(T0 + timedelta(minutes=15, hours=48))
    assert row["duration"] == pd.Timedelta(minutes=15)
    assert row["source"] == "service"
    log.record([t])
    pd.testing.assert_frame_equal(history.log_frame(log).drop(columns="source"),
                                  frame.drop(columns="source"))
    assert list(history.log_frame(log)["source"]) == ["log"]


def test_mixed_tasks_keep_types_and_order() -> None:
    bodies = [export_body(new_id(), "pending", minutes=0), export_body(new_id(), "processing"),
              export_body(new_id(), "failure", message="Container not found. Container: x"),
              import_body(new_id()), export_body(new_id(), "success", stub=True)]
    odd = dict(import_body(new_id()), type="api_image_import")
    frame = tasks_frame([Task.from_json(b) for b in [*bodies, odd]])
    assert list(frame["id"]) == [b["id"] for b in [*bodies, odd]]
    assert list(frame["status"].cat.categories) == ["pending", "processing", "success",
                                                    "failure"]
    # An unknown type is kept (appended after the fixed categories), never nulled.
    assert list(frame["type"].cat.categories) == ["export", "import", "api_image_import"]
    assert frame["type"].iloc[-1] == "api_image_import"
    # Only finished tasks have a duration; pending/processing have no expiry either.
    assert frame["duration"].isna().tolist() == [True, True, False, False, False, False]
    assert frame["expires_at"].isna().tolist()[:2] == [True, True]
    # The stub knows its state but not its detail.
    assert frame["image_id"].isna().iloc[4] and frame["status"].iloc[4] == "success"


@pytest.mark.parametrize("message", ["None", "", "  ", "null", None])
def test_empty_messages_become_null(message: Any) -> None:
    from_objects = tasks_frame([Task.from_json(export_body(new_id(), message=message))])
    from_raw = _frame_from_items([export_body(new_id(), message=message)])
    assert from_objects["message"].isna().all()
    assert from_raw["message"].isna().all()
    assert_standard(from_raw)


def test_real_messages_are_kept() -> None:
    text = "Image cannot be imported. Error code: '396'"
    frame = tasks_frame([Task.from_json(import_body(new_id(), "failure", message=text))])
    assert frame["message"].tolist() == [text]


def test_export_and_import_are_flattened() -> None:
    export = export_body(new_id())
    imported = import_body(new_id())
    for frame in (tasks_frame([Task.from_json(export), Task.from_json(imported)]),
                  _frame_from_items([export, imported])):
        ex, im = frame.iloc[0], frame.iloc[1]
        assert ex["image_id"] == IMAGE and ex["container"] == "exports"
        assert ex["export_location"] == f"exports/{IMAGE}.vhd"
        assert im["image_id"] == "4eb26d7b-0000-4000-8000-000000000001"
        assert im["container"] == "vhds" and pd.isna(im["export_location"])


def test_raw_pages_and_task_objects_give_the_same_frame() -> None:
    bodies = [export_body(new_id(), s) for s in ("pending", "processing", "success", "failure")]
    bodies.append(import_body(new_id()))
    pd.testing.assert_frame_equal(tasks_frame(RawPagesClient(bodies)),
                                  tasks_frame(FakeClient(bodies)))
    assert tasks_frame(RawPagesClient(bodies))["image_id"].isna().all()  # list items are stubs


class FullPagesClient(RawPagesClient):
    """Pages as a service that sends full bodies in its list would: input/result/message."""

    def iter_task_pages(self) -> Iterator[list[dict[str, Any]]]:
        bodies = list(self.full.values())
        for start in range(0, len(bodies), 2):
            yield bodies[start:start + 2]


def test_raw_pages_of_stubs_or_full_bodies_frame_and_record_every_listed_task(
        log: TaskLog) -> None:
    bodies = [export_body(new_id(), s, minutes=n)
              for n, s in enumerate(("pending", "processing", "success", "failure") * 2)]
    bodies.append(import_body(new_id()))
    stubs = RawPagesClient(bodies, log)
    pd.testing.assert_frame_equal(tasks_frame(stubs),
                                  _frame_from_items(stubs.listed, origin=None))
    assert len(log) == len(bodies) and log.complete_ids(b["id"] for b in bodies) == set()
    framed = tasks_frame(FullPagesClient(bodies))
    pd.testing.assert_frame_equal(framed, _frame_from_items(bodies, origin=None))
    assert framed["image_id"].notna().all()


def test_a_damaged_page_fails_the_listing() -> None:
    bodies = [export_body(new_id(), stub=True) for _ in range(5)]
    bodies[3]["created_at"] = "not a time"
    with pytest.raises(ResponseError, match="not ISO 8601"):
        tasks_frame(RawPagesClient(bodies))


def test_bad_sources_are_refused(log: TaskLog) -> None:
    with pytest.raises(ValidationError):
        tasks_frame("tasks")
    with pytest.raises(ValidationError):
        tasks_frame([{"id": "x"}])
    with pytest.raises(ValidationError):
        tasks_frame(log, details=True)
    with pytest.raises(ValidationError):
        tasks_frame([], details=True)


# -- details -----------------------------------------------------------------------------------

def test_details_fetch_only_what_the_log_lacks(log: TaskLog) -> None:
    bodies = [export_body(new_id(), "failure", message=f"boom {n}") for n in range(30)]
    log.record([Task.from_json(b) for b in bodies[:10]])  # held in full already
    client = FakeClient(bodies, log)
    frame = tasks_frame(client, details=True, concurrency=4)
    assert_standard(frame)
    assert sorted(client.gets) == sorted(b["id"] for b in bodies[10:])
    assert 1 < client.most_in_flight <= 4
    assert frame["message"].tolist() == [f"boom {n}" for n in range(30)]
    assert frame["image_id"].eq(IMAGE).all()
    # What was fetched is now in the log, so a second pass asks the service for nothing.
    client.gets.clear()
    tasks_frame(client, details=True)
    assert client.gets == []


def test_details_never_go_backwards(log: TaskLog) -> None:
    tid, rounded = new_id(), new_id()
    client = FakeClient([export_body(tid, "processing", minutes=9),
                         export_body(rounded, "success", minutes=15)], log)
    # The detail view answers with an older state, or the same state a second earlier.
    client.full[tid] = export_body(tid, "pending", minutes=0)
    late = export_body(rounded, "success", minutes=15)
    late["updated_at"] = (T0 + timedelta(minutes=15) - timedelta(seconds=1)).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    client.full[rounded] = late
    frame = tasks_frame(client, details=True).set_index("id")
    assert frame.loc[tid, "status"] == "processing" and pd.isna(frame.loc[tid, "image_id"])
    assert frame.loc[rounded, "export_location"] == f"exports/{IMAGE}.vhd"
    assert frame.loc[rounded, "updated_at"] == pd.Timestamp(T0 + timedelta(minutes=15))


def test_details_skip_a_task_purged_meanwhile(log: TaskLog) -> None:
    gone, kept = export_body(new_id()), export_body(new_id())
    client = FakeClient([gone, kept], log)
    del client.full[gone["id"]]
    frame = tasks_frame(client, details=True)
    assert frame["image_id"].isna().tolist() == [True, False]


def test_details_with_an_async_client(log: TaskLog) -> None:
    bodies = [export_body(new_id()) for _ in range(5)]
    client = FakeAsyncClient(bodies, log)
    frame = tasks_frame(client, details=True, concurrency=2)
    assert frame["export_location"].notna().all()
    assert client.sync.most_in_flight <= 2
    again = asyncio.run(tasks_frame_async(client, details=True))
    pd.testing.assert_frame_equal(again, frame)


def test_inside_a_running_loop(log: TaskLog) -> None:
    # Notebooks run a loop already: a sync client still works (details fetched on a private
    # loop in a worker thread); an async client must be awaited, and says so.
    body = export_body(new_id())

    async def inside() -> pd.DataFrame:
        frame = tasks_frame(FakeClient([body], log), details=True)
        with pytest.raises(ValidationError, match="tasks_frame_async"):
            tasks_frame(FakeAsyncClient([body], log))
        pd.testing.assert_frame_equal(
            await tasks_frame_async(FakeAsyncClient([body], log), details=True), frame)
        return frame

    assert asyncio.run(inside())["image_id"].tolist() == [IMAGE]


# -- merged ------------------------------------------------------------------------------------

def test_merged_fills_stubs_and_keeps_purged_tasks(log: TaskLog) -> None:
    purged = export_body(new_id(), "failure", message="Container not found. Container: x")
    listed = export_body(new_id(), "success")
    unseen = export_body(new_id(), "processing")
    log.record([Task.from_json(purged), Task.from_json(listed)])
    client = FakeClient([listed, unseen], log)
    frame = merged(client)
    assert_standard(frame)
    assert frame["id"].is_unique and len(frame) == 3
    by_id = frame.set_index("id")
    assert by_id.loc[purged["id"], "source"] == "log"
    assert by_id.loc[purged["id"], "message"] == "Container not found. Container: x"
    assert by_id.loc[listed["id"], "source"] == "service"
    assert by_id.loc[listed["id"], "export_location"] == f"exports/{IMAGE}.vhd"
    assert pd.isna(by_id.loc[unseen["id"], "image_id"])


def test_merged_prefers_the_service_state(log: TaskLog) -> None:
    tid = new_id()
    log.record([Task.from_json(export_body(tid, "processing", minutes=2))])
    client = FakeClient([export_body(tid, "failure", minutes=5, message="x")], log)
    frame = merged(client, log)
    assert frame["status"].tolist() == ["failure"]
    assert frame["image_id"].tolist() == [IMAGE]


# -- presentation ------------------------------------------------------------------------------

def test_style_tasks_is_stable_and_readable() -> None:
    frame = tasks_frame([Task.from_json(export_body(new_id(), "failure", message="no")),
                         Task.from_json(export_body(new_id(), "success", minutes=75.5))])
    html = style_tasks(frame).to_html()
    assert html == style_tasks(frame).to_html()  # fixed uuid: same output every run
    assert "imgtools-tasks" in html
    assert "15 min 00 s" in html and "1 h 15 min" in html
    assert "#fee2e2" in html and "#dcfce7" in html  # failure and success colours
    assert "2014-02-26 02:01:13" in html and "+00:00" not in html
    assert 'class="row_heading' not in html  # index hidden
    assert "nan" not in html.lower().replace("nan-", "")


@pytest.mark.parametrize(("delta", "text"), [
    (timedelta(seconds=42), "42 s"), (timedelta(minutes=15, seconds=37), "15 min 37 s"),
    (timedelta(hours=1, minutes=2), "1 h 02 min"), (timedelta(days=2, hours=3), "2 d 03 h"),
    (pd.NaT, "")])
def test_format_duration(delta: Any, text: str) -> None:
    assert history.format_duration(delta) == text


def test_summary_tables() -> None:
    bodies = [export_body(new_id(), "success", minutes=m) for m in (10, 20, 30, 40)]
    bodies += [export_body(new_id(), "failure", minutes=1, message="Container not found")] * 1
    bodies += [export_body(new_id(), "failure", minutes=2, message="Container not found"),
               export_body(new_id(), "failure", minutes=3, message="None"),
               export_body(new_id(), "pending", minutes=0),
               import_body(new_id(), "success")]
    result = summary(tasks_frame([Task.from_json(b) for b in bodies]))
    counts = result.counts
    assert counts.loc["export", "success"] == 4 and counts.loc["export", "failure"] == 3
    assert counts.loc["total", "total"] == 9 and counts.loc["import", "pending"] == 0
    rate = result.success_rate
    assert rate.loc["export", "finished"] == 7
    assert rate.loc["export", "success_rate"] == pytest.approx(4 / 7)
    assert rate.loc["all", "success_rate"] == pytest.approx(5 / 8)
    durations = result.durations
    assert durations.loc["export", "max"] == pd.Timedelta(minutes=40)
    assert durations.loc["import", "p50"] == pd.Timedelta(minutes=7)
    assert durations.loc["all", "count"] == 8
    failures = result.failures
    # A failure seen in full with no message is "unknown", and says the service gave none.
    assert failures["message"].tolist() == ["Container not found", "(the service gave no reason)"]
    assert failures["category"].tolist() == ["container missing", "unknown"]
    assert failures["count"].tolist() == [2, 1]
    assert result.per_day.loc[T0.date(), "total"] == 9
    assert set(result.tables) == {"counts", "success_rate", "durations", "failures", "per_day"}


def test_summary_of_nothing() -> None:
    result = summary(tasks_frame([]))
    assert result.counts.loc["total", "total"] == 0
    assert result.success_rate["success_rate"].isna().all()
    assert result.durations["p50"].isna().all() and result.failures.empty


def test_filter_tasks() -> None:
    old = dict(export_body(new_id()), created_at="2020-01-01T00:00:00Z")
    new = dict(import_body(new_id(), "failure", message="x"), created_at="2022-01-01T00:00:00Z")
    frame = tasks_frame([Task.from_json(old), Task.from_json(new)])
    assert filter_tasks(frame, since="2021-01-01")["id"].tolist() == [new["id"]]
    assert filter_tasks(frame, status="success")["id"].tolist() == [old["id"]]
    assert filter_tasks(frame, type=["import", "export"], status=["failure"])["id"].tolist() \
        == [new["id"]]
    assert_standard(filter_tasks(frame, status="processing"))


def test_log_frames_survive_separator_characters_in_values(log: TaskLog) -> None:
    # The log reads columns as joined text; a value holding the separators must still come
    # back whole (that chunk is re-read row by row).
    odd = "line one\x1eline two\x1f,\n'quoted'"
    body = export_body(new_id(), "failure", message=odd)
    plain = export_body(new_id(), "failure", message="fine")
    log.record([Task.from_json(body), Task.from_json(plain)])
    frame = history.log_frame(log)
    assert_standard(frame)
    assert sorted(frame["message"]) == sorted([odd, "fine"])


def test_log_frames_are_chronological_with_ties_by_id(log: TaskLog) -> None:
    ids = sorted(new_id() for _ in range(5))
    later = dict(export_body(new_id()), created_at="2015-01-01T00:00:00Z")
    log.record([Task.from_json(later)])
    log.record([Task.from_json(export_body(i)) for i in reversed(ids)])  # same created_at
    assert history.log_frame(log)["id"].tolist() == [*ids, later["id"]]


# -- against the emulator (real sockets, the real client) --------------------------------------

def _task_gets(emu: Any) -> int:
    return sum(r["count"] for r in emu.stats()["requests"]
               if r["route"] == "/v2/tasks/{task_id}" and r["method"] == "GET")


@pytest.fixture(scope="module")
def seeded() -> Iterator[Any]:
    from imgtools.emulator import EmulatorConfig, start_emulator

    with start_emulator(config=EmulatorConfig(seed_tasks=1500), subprocess=True) as handle:
        yield handle


def _connect(emu: Any, log: TaskLog | bool) -> Any:
    import imgtools

    return imgtools.connect(username="demo", api_key="demo-key", identity_url=emu.identity_url,
                            log=log, poll=imgtools.PollPolicy.fast(), wait_timeout=60.0)


def test_service_frame_from_the_emulator(seeded: Any, log: TaskLog) -> None:
    with _connect(seeded, log) as client:
        frame = tasks_frame(client)
        assert_standard(frame)
        assert len(frame) == 1500 and frame["id"].is_unique
        assert set(frame["source"]) == {"service"}
        assert frame["image_id"].isna().all()  # the list gives stubs only
        assert set(frame["status"].astype(str)) <= {"success", "failure"}
        assert frame["duration"].notna().all() and frame["expires_at"].notna().all()
        # ...and the listing went into the log, as stubs.
        assert len(log) == 1500 and log.complete_ids(frame["id"]) == set()
        assert len(history.events_frame(log)) == 1500


def test_details_from_the_emulator_fetch_each_task_once(seeded: Any, log: TaskLog) -> None:
    with _connect(seeded, log) as client:
        before = _task_gets(seeded)
        frame = tasks_frame(client, details=True, concurrency=6)
        assert _task_gets(seeded) - before == 1500
        exports = frame[frame["type"] == "export"]
        assert exports["image_id"].notna().all() and frame["container"].notna().all()
        # A failed import made no image; a successful one did.
        imports = frame[frame["type"] == "import"]
        assert (imports["image_id"].notna() == (imports["status"] == "success")).all()
        failed = frame[frame["status"] == "failure"]
        assert len(failed) and failed["message"].notna().all()
        succeeded = frame[(frame["status"] == "success") & (frame["type"] == "export")]
        assert (succeeded["export_location"]
                == succeeded["container"] + "/" + succeeded["image_id"] + ".vhd").all()
        assert frame[frame["status"] == "success"]["message"].isna().all()  # "" -> null
        again = tasks_frame(client, details=True)
        assert _task_gets(seeded) - before == 1500  # the log held them all in full
        pd.testing.assert_frame_equal(again, frame)


def test_merged_keeps_what_the_emulator_purged(tmp_path: Path) -> None:
    from imgtools.emulator import start_emulator
    from tests.client_support import FAST, WEB, WINDOWS

    with TaskLog(tmp_path / "audit.sqlite") as audit, \
            start_emulator(config=FAST.replace(task_ttl=1.0), subprocess=True) as emu, \
            _connect(emu, audit) as client:
        done = client.export(WEB, "backups", create_container=True)
        failed = client.begin_export(WINDOWS, "backups", preflight=False)
        with pytest.raises(Exception, match="licensing"):
            failed.wait()
        ids = {done.id, failed.id}
        # Wait (bounded) until the service has forgotten both tasks.
        deadline = 200
        while ids & set(tasks_frame(client, record=False)["id"]):
            deadline -= 1
            assert deadline, "the emulator never purged the finished tasks"
            threading.Event().wait(0.1)
        for task_id in ids:
            with pytest.raises(NotFound):
                client.get_task(task_id)
        frame = merged(client, audit)
        assert_standard(frame)
        rows = frame.set_index("id").loc[sorted(ids)]
        assert set(rows["source"]) == {"log"}
        ok, bad = rows.loc[done.id], rows.loc[failed.id]
        assert ok["status"] == "success" and ok["image_id"] == WEB
        assert ok["container"] == "backups" and ok["export_location"] == f"backups/{WEB}.vhd"
        assert bad["status"] == "failure" and "licensing" in bad["message"]
        assert bad["image_id"] == WINDOWS and pd.isna(bad["export_location"])
        events = history.events_frame(audit, done.id)
        assert list(events["status"].astype(str))[-1] == "success"


def test_the_log_and_frames_say_where_tasks_were_seen(seeded: Any, log: TaskLog) -> None:
    from urllib.parse import urlsplit

    with _connect(seeded, log) as client:
        tenant, region = client.tenant_id, client.region
        host = urlsplit(client.endpoint).netloc
        listed = tasks_frame(client)  # recorded by history's writer thread
        one = listed["id"].iloc[0]
        client.get_task(one)  # recorded by the client itself
    assert tenant and set(listed["account"]) == {tenant}
    assert region == "ORD" and set(listed["region"]) == {region}  # the login's default region
    stored = log.columns()
    assert set(stored["account"]) == {tenant}
    origins = set(map(tuple, _sqlite_rows(log, "SELECT region, account, host, emulator "
                                               "FROM tasks")))
    assert origins == {(region, tenant, host, 1)}  # a loopback endpoint: the emulator
    assert set(map(tuple, _sqlite_rows(log, "SELECT region, account, host, emulator "
                                            "FROM events"))) == origins
    assert len(history.log_frame(log, account=tenant, emulator=True)) == 1500
    assert history.log_frame(log, emulator=False).empty
    assert history.log_frame(log, account="someone-else").empty


def _sqlite_rows(log: TaskLog, query: str) -> list[tuple[Any, ...]]:
    import sqlite3

    conn = sqlite3.connect(log.path)
    try:
        return conn.execute(query).fetchall()
    finally:
        conn.close()


def test_filters_and_summaries_by_region_and_account() -> None:
    tasks = [Task.from_json(export_body(new_id(), status)) for status in
             ("success", "failure", "success")]
    frame = tasks_frame(tasks)
    frame["region"] = pd.array(["ORD", "IAD", None], dtype=STR)
    frame["account"] = pd.array(["1", "2", "2"], dtype=STR)
    assert list(filter_tasks(frame, region="ORD")["id"]) == [tasks[0].id]
    assert list(filter_tasks(frame, account=["2"], status="success")["id"]) == [tasks[2].id]
    report = summary(frame, by="region")
    assert list(report.counts.index) == ["(unknown)", "IAD", "ORD", "total"]
    assert report.counts.loc["IAD", "failure"] == 1 and report.counts.loc["total", "total"] == 3
    assert report.success_rate.loc["ORD", "succeeded"] == 1
    assert report.durations.index.name == "region"
    assert list(report.failures["region"]) == ["IAD"]
    assert summary(frame, by="account").counts.loc["2", "total"] == 2
    with pytest.raises(ValidationError):
        summary(frame, by="colour")

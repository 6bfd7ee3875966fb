"""The team audit log on a real PostgreSQL server: many writers at once, roles, an outage,
push and pull. (The log's rules themselves run on both backends in test_tasklog.py.)"""

from __future__ import annotations

import io
import json
import logging
import random
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from imgtools import history
from imgtools._models import Task
from imgtools._pglog import LogUnavailable, init_schema
from imgtools._taskfields import Origin
from imgtools._tasklog import TaskLog
from imgtools.cli import EXIT_OK, EXIT_SERVICE, main
from tests import postgres_support

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2024, 3, 1, tzinfo=UTC)
WRITER_PASSWORD = "wr1ter-Pw-5Tq8"
READER_PASSWORD = "r3ader-Pw-2Lm4"


@pytest.fixture(scope="module")
def pg() -> Iterator[postgres_support.Server]:
    postgres_support.require()
    with postgres_support.running() as server:
        yield server


def stamp(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def observations(count: int) -> list[tuple[dict[str, Any], int]]:
    """What pollers see of ``count`` exports: (task body, seconds after T0 it was seen).
    Each task is seen pending (full), processing (a list stub), then finished (full)."""
    seen: list[tuple[dict[str, Any], int]] = []
    for n in range(count):
        tid = f"00000000-0000-4000-8000-{n:012d}"
        base = {"id": tid, "type": "export", "owner": "100001", "created_at": stamp(n)}
        image = f"11111111-0000-4000-8000-{n:012d}"
        full = {"input": {"image_uuid": image, "receiving_swift_container": "team"},
                "result": None, "message": ""}
        done = "failure" if n % 5 == 0 else "success"
        final = dict(base, status=done, updated_at=stamp(n + 600), expires_at=stamp(n + 600 +
                     172800), **full)
        if done == "success":
            final["result"] = {"export_location": f"team/{image}.vhd"}
        else:
            final["message"] = "Container not found. Container: team"
        seen += [(dict(base, status="pending", updated_at=stamp(n), **full), n + 1),
                 (dict(base, status="processing", updated_at=stamp(n + 60)), n + 70),
                 (final, n + 700)]
    return seen


WRITER = textwrap.dedent("""
    import json, random, sys, time
    from datetime import UTC, datetime, timedelta
    from pathlib import Path
    from imgtools._models import Task
    from imgtools._taskfields import Origin
    from imgtools._tasklog import TaskLog

    url, seed, go = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    seen = json.loads(sys.stdin.read())
    rng = random.Random(seed)
    mine = [s for s in seen if rng.random() < 0.7]   # overlapping subsets
    rng.shuffle(mine)                                 # in random order
    t0 = datetime(2024, 3, 1, tzinfo=UTC)
    with TaskLog(url, spool=Path(go).with_name(f"spool-{seed}.sqlite")) as log:
        while not go.exists():
            time.sleep(0.005)
        for start in range(0, len(mine), 7):
            for body, at in mine[start:start + 7]:
                log.record([Task.from_json(body)], seen_at=t0 + timedelta(seconds=at),
                           origin=Origin("ORD", "100001", "team.example", False))
    print(len(mine))
""")


def table(log: TaskLog, query: str) -> list[tuple[Any, ...]]:
    return log._backend.fetchall(query)


def test_eight_writers_at_once_end_as_one_writer(pg: postgres_support.Server,
                                                 tmp_path: Path) -> None:
    seen = observations(120)
    shared = postgres_support.team_log_url(pg)
    go = tmp_path / "go"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, shared, str(seed), str(go)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                cwd=REPO) for seed in range(8)]
    for writer in writers:
        assert writer.stdin is not None
        writer.stdin.write(json.dumps(seen))
        writer.stdin.close()
    go.touch()
    for writer in writers:
        assert writer.wait(timeout=300) == 0
    # One writer, in order, of everything any of them saw: the union of the subsets.
    wrote: set[str] = set()
    for seed in range(8):
        rng = random.Random(seed)
        wrote |= {json.dumps(s) for s in seen if rng.random() < 0.7}
    single = postgres_support.team_log_url(pg)
    with TaskLog(shared, spool=tmp_path / "a.sqlite") as many, \
            TaskLog(single, spool=tmp_path / "b.sqlite") as one:
        for text in sorted(wrote, key=lambda t: json.loads(t)[1]):
            body, at = json.loads(text)
            one.record([Task.from_json(body)], seen_at=T0 + timedelta(seconds=at),
                       origin=Origin("ORD", "100001", "team.example", False))
        for query in ("SELECT * FROM tasks ORDER BY id",
                      "SELECT * FROM events ORDER BY task_id, status"):
            assert table(many, query) == table(one, query)
        assert len(many) == 120
        assert set(history.log_frame(many)["status"].astype(str)) == {"success", "failure"}


def roles(pg: postgres_support.Server) -> tuple[str, str, str]:
    """A team log and two roles on it: a writer (no DDL) and a reader (SELECT only)."""
    admin = postgres_support.team_log_url(pg)
    database = admin.rsplit("/", 1)[1]
    for statement in (
            f"CREATE ROLE writer_{database} LOGIN PASSWORD '{WRITER_PASSWORD}'",
            f"CREATE ROLE reader_{database} LOGIN PASSWORD '{READER_PASSWORD}'",
            f"GRANT SELECT, INSERT, UPDATE ON tasks, events TO writer_{database}",
            f"GRANT SELECT ON imgtools_schema TO writer_{database}",
            f"GRANT SELECT ON tasks, events, imgtools_schema TO reader_{database}"):
        pg.admin(statement, database=database)
    return (admin, pg.url(f"writer_{database}", WRITER_PASSWORD, database),
            pg.url(f"reader_{database}", READER_PASSWORD, database))


def test_a_writer_needs_no_ddl_and_a_reader_reads_everything(
        pg: postgres_support.Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    _, writer_url, reader_url = roles(pg)
    monkeypatch.setenv("IMGTOOLS_SPOOL_DIR", str(tmp_path / "spools"))
    texts: list[str] = []
    with TaskLog(writer_url, spool=tmp_path / "w.sqlite") as writer:
        for body, at in observations(10):
            writer.record([Task.from_json(body)], seen_at=T0 + timedelta(seconds=at))
        with pytest.raises(LogUnavailable) as no_ddl:
            init_schema(writer_url)
        texts += [repr(writer), str(no_ddl.value)]
    with TaskLog(reader_url, spool=tmp_path / "r.sqlite") as reader:
        frame = history.log_frame(reader, status="failure")
        assert len(reader) == 10 and len(frame) == 2
        assert reader.get(frame["id"][0]) is not None
        assert len(list(reader.tasks())) == 10
        assert len(history.events_frame(reader)) == 30
        assert reader.export(tmp_path / "out.jsonl") == 10
        with pytest.raises(LogUnavailable, match="permission denied") as refused:
            reader.record([Task.from_json(observations(11)[-1][0])])
        assert refused.value.spooled == 0 and reader.pending() == 0  # refused, not an outage
        texts += [repr(reader), str(refused.value), frame.to_csv(),
                  (tmp_path / "out.jsonl").read_text()]
    monkeypatch.setenv("IMGTOOLS_LOG", reader_url)
    out = io.StringIO()
    assert main(["audit", "--from", "log"], out=out) == EXIT_OK
    assert "== counts ==" in out.getvalue()
    assert main(["tasks", "--from", "log", "--format", "csv"], out=out) == EXIT_OK
    captured = capsys.readouterr()
    texts += [out.getvalue(), captured.out, captured.err]
    for text in texts:
        assert WRITER_PASSWORD not in text and READER_PASSWORD not in text
    assert "reader_" in repr(texts)  # the user name is shown, only the password is not


def test_an_unreachable_server_keeps_the_operation_and_sends_it_later(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An export made while the team log's server is down is created and followed; what it
    could not record waits in the local spool, and `imgtools log push` sends it."""
    import imgtools
    from imgtools.emulator import start_emulator
    from tests.client_support import FAST, WEB

    postgres_support.require()
    with postgres_support.running() as server, start_emulator(config=FAST,
                                                             subprocess=True) as emu:
        url = postgres_support.team_log_url(server)
        # The default spool of this URL, where `imgtools log push` looks too.
        monkeypatch.setenv("IMGTOOLS_SPOOL_DIR", str(tmp_path / "spools"))
        with TaskLog(url) as team, imgtools.connect(
                username="demo", api_key="demo-key", identity_url=emu.identity_url, log=team,
                poll=imgtools.PollPolicy.fast()) as client:
            server.stop()
            with caplog.at_level(logging.WARNING, logger="imgtools"):
                done = client.export(WEB, "outage", create_container=True)
            assert done.status == "success"  # the operation went on
            assert "could not record" in caplog.text
            assert postgres_support.SUPERUSER_PASSWORD not in caplog.text
            assert team.pending() == 1
            with pytest.raises(LogUnavailable) as down:
                len(team)
            assert postgres_support.SUPERUSER_PASSWORD not in str(down.value)
            server.start()
            out = io.StringIO()
            empty = tmp_path / "nothing-local.sqlite"
            TaskLog(empty).close()
            assert main(["log", "push", "--to", url, "--from", str(empty)], out=out) == EXIT_OK
            assert "1 kept while it was unreachable" in out.getvalue()
            assert postgres_support.SUPERUSER_PASSWORD not in out.getvalue()
            assert team.pending() == 0
            got = team.get(done.id)
            assert got is not None and got.status == "success" and not got.is_stub
            assert got.export_location == f"outage/{WEB}.vhd"
            # Down again: a write is kept, and the next write that succeeds sends it first.
            server.stop()
            with pytest.raises(LogUnavailable) as kept:
                team.record([Task.from_json(observations(1)[0][0])])
            assert kept.value.spooled == 1 and team.pending() == 1
            # A log opened while the server is down opens, and keeps what it is given.
            with TaskLog(url) as opened_down:
                with pytest.raises(LogUnavailable):
                    opened_down.record([Task.from_json(observations(3)[-1][0])])
                assert opened_down.pending() == 2  # the same spool: one per URL
            server.start()
            team.record([Task.from_json(observations(2)[-1][0])])
            assert team.pending() == 0 and len(team) == 4
        code = main(["log", "init", url.replace(str(server.port), "1")], out=io.StringIO())
        err = capsys.readouterr().err
        assert code == EXIT_SERVICE and "LogUnavailable" in err
        assert postgres_support.SUPERUSER_PASSWORD not in err


def test_push_and_pull_are_idempotent(pg: postgres_support.Server, tmp_path: Path) -> None:
    url = postgres_support.team_log_url(pg)
    local = tmp_path / "laptop.sqlite"
    seen = observations(30)
    with TaskLog(local) as laptop:
        for body, at in seen[:60]:
            laptop.record([Task.from_json(body)], seen_at=T0 + timedelta(seconds=at),
                          origin=Origin("DFW", "100001", "dfw.example", False))
        laptop.export(tmp_path / "laptop.jsonl")
    with TaskLog(tmp_path / "server.sqlite") as other:
        for body, at in seen[45:]:
            other.record([Task.from_json(body)], seen_at=T0 + timedelta(seconds=at + 5))
        other.export(tmp_path / "server.jsonl")

    def push(*argv: str) -> str:
        out = io.StringIO()
        assert main(["log", "push", "--to", url, *argv], out=out) == EXIT_OK
        return out.getvalue()

    assert "pushed 20 task(s)" in push("--from", str(local))
    with TaskLog(url, spool=tmp_path / "s.sqlite") as team:
        first = table(team, "SELECT * FROM tasks ORDER BY id"), \
            table(team, "SELECT * FROM events ORDER BY task_id, status")
        push("--from", str(local))
        push("--from", str(tmp_path / "laptop.jsonl"))
        assert (table(team, "SELECT * FROM tasks ORDER BY id"),
                table(team, "SELECT * FROM events ORDER BY task_id, status")) == first
        push("--from", str(tmp_path / "server.jsonl"))
        assert len(team) == 30
        both = table(team, "SELECT * FROM tasks ORDER BY id"), \
            table(team, "SELECT * FROM events ORDER BY task_id, status")
    for _ in range(2):
        out = io.StringIO()
        assert main(["log", "pull", "--from", url, "--to", str(tmp_path / "pulled.sqlite")],
                    out=out) == EXIT_OK
        assert "pulled 30 task(s)" in out.getvalue()
    with TaskLog(tmp_path / "pulled.sqlite") as pulled:
        assert (table(pulled, "SELECT * FROM tasks ORDER BY id"),
                table(pulled, "SELECT * FROM events ORDER BY task_id, status")) == both
        pd.testing.assert_frame_equal(history.log_frame(pulled), history.log_frame(
            TaskLog(url, spool=tmp_path / "t.sqlite")))

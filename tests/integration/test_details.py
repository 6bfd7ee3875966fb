"""Task details for the audit (``imgtools.details``) against the emulator over real sockets:
what is fetched, what the log already holds, what was purged, and the failures table by
category."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import imgtools
from imgtools._tasklog import TaskLog
from imgtools.details import fetch_details, fetch_details_async, has_details
from imgtools.emulator import EmulatorConfig, EmulatorHandle, start_emulator
from imgtools.history import filter_tasks, merged, summary, tasks_frame

SEEDED = 120


@pytest.fixture(scope="module")
def seeded() -> Iterator[EmulatorHandle]:
    with start_emulator(config=EmulatorConfig(seed_tasks=SEEDED, task_ttl=30 * 86400.0),
                        subprocess=False) as handle:
        yield handle


@pytest.fixture
def log(tmp_path: Path) -> Iterator[TaskLog]:
    with TaskLog(tmp_path / "audit.sqlite") as audit:
        yield audit


def _connect(emu: EmulatorHandle, log: TaskLog | bool) -> imgtools.Client:
    return imgtools.connect(username="demo", api_key="demo-key", identity_url=emu.identity_url,
                            log=log)


def _task_gets(emu: EmulatorHandle) -> int:
    return sum(r["count"] for r in emu.stats()["requests"]
               if r["route"] == "/v2/tasks/{task_id}" and r["method"] == "GET")


def test_missing_details_are_fetched_once_then_come_from_the_log(seeded: EmulatorHandle,
                                                                 log: TaskLog) -> None:
    with _connect(seeded, log) as client:
        frame = merged(client, log)
        assert not has_details(frame).any()  # the listing gives stubs only
        seen: list[tuple[int, int]] = []
        before = _task_gets(seeded)
        result = fetch_details(frame, client, log, concurrency=4,
                               progress=lambda done, total: seen.append((done, total)))
        assert _task_gets(seeded) - before == SEEDED == result.fetched
        assert seen[0] == (0, SEEDED) and seen[-1] == (SEEDED, SEEDED)
        assert has_details(result.frame).all()
        assert result.without_details == result.not_fetched == result.purged == 0
        failed = result.frame[result.frame["status"] == "failure"]
        assert len(failed) and failed["message"].notna().all()
        assert result.frame["id"].tolist() == frame["id"].tolist()  # same rows, same order

        # A second run asks nothing: the log holds every task in full now.
        again = fetch_details(merged(client, log), client, log)
        assert _task_gets(seeded) - before == SEEDED
        assert again.fetched == 0
        pd.testing.assert_frame_equal(again.frame, result.frame)
        # From a bare listing, the log fills every row.
        listed = fetch_details(tasks_frame(client), client, log)
        assert listed.fetched == 0 and listed.from_log == SEEDED
        assert _task_gets(seeded) - before == SEEDED
        assert "0 task(s) fetched" in str(again)


def test_failures_mode_fetches_only_failures_and_counts_the_rest(seeded: EmulatorHandle,
                                                                 log: TaskLog) -> None:
    with _connect(seeded, log) as client:
        frame = tasks_frame(client)
        failures = int((frame["status"] == "failure").sum())
        before = _task_gets(seeded)
        result = fetch_details(frame, client, details="failures")
        assert _task_gets(seeded) - before == failures == result.fetched
        assert result.not_fetched == SEEDED - failures
        report = summary(result.frame)
        assert report.not_fetched == SEEDED - failures and report.without_details == 0
        # Every failure has a category and its raw message; none is "no details".
        table = report.failures
        assert table["count"].sum() == failures
        # The emulator fails with the service's own wordings: every one is known.
        assert not {"no details", "unknown"} & set(table["category"])
        assert {"not owner", "licensing", "container missing"} <= set(table["category"])
        assert table["message"].str.len().min() > 10


def test_all_mode_and_the_option_in_merged_and_tasks_frame(seeded: EmulatorHandle,
                                                           log: TaskLog) -> None:
    with _connect(seeded, log) as client:
        before = _task_gets(seeded)
        first = merged(client, log, details="missing")
        assert has_details(first).all()
        assert _task_gets(seeded) - before == SEEDED
        # "all" asks again even for what the log holds in full.
        everything = tasks_frame(client, details="all")
        assert _task_gets(seeded) - before == 2 * SEEDED
        assert has_details(everything).all()
        with pytest.raises(imgtools.ValidationError, match="details must be one of"):
            merged(client, log, details="some")
        assert _task_gets(seeded) - before == 2 * SEEDED


def test_tasks_only_the_log_knew_are_counted_without_details(seeded: EmulatorHandle,
                                                             log: TaskLog) -> None:
    """A stub the log saw listed once, purged since: no details anywhere, said so."""
    with _connect(seeded, log) as client:
        listed = tasks_frame(client)
    purged = listed[listed["status"] == "failure"].iloc[:5].reset_index(drop=True)
    purged["source"] = pd.Categorical(["log"] * 5, categories=listed["source"].cat.categories)
    gone = purged.copy()
    gone["id"] = [f"00000000-0000-4000-8000-00000000000{i}" for i in range(5)]
    view = pd.concat([purged, gone], ignore_index=True)
    with _connect(seeded, log) as client:
        before = _task_gets(seeded)
        result = fetch_details(view, client, log)
        assert _task_gets(seeded) == before  # nothing listed: nothing can be fetched
    assert result.without_details == 10
    assert summary(result.frame).without_details == 10
    table = summary(result.frame).failures
    assert table["count"].sum() == 10
    assert set(table["category"]) == {"no details"}
    assert table["message"].str.contains("purged from the service").all()


def test_a_task_purged_between_listing_and_fetching(seeded: EmulatorHandle,
                                                    log: TaskLog) -> None:
    with _connect(seeded, log) as client:
        frame = filter_tasks(tasks_frame(client), status="failure").iloc[:3].copy()
    frame.loc[0, "id"] = "00000000-0000-4000-8000-0000000000ff"  # never existed: 404
    with _connect(seeded, log) as client:
        result = fetch_details(frame, client, log)
    assert result.fetched == 2 and result.purged == 1
    assert result.without_details == 1
    assert not has_details(result.frame)[0] and has_details(result.frame)[1:].all()


def test_async_client_fetches_on_the_running_loop(seeded: EmulatorHandle, log: TaskLog) -> None:
    with _connect(seeded, log) as client:
        frame = tasks_frame(client).iloc[:10]

    async def scenario() -> Any:
        async with imgtools.AsyncClient(username="demo", api_key="demo-key",
                                        identity_url=seeded.identity_url, log=log,
                                        environ={}) as aclient:
            result = await fetch_details_async(frame, aclient, concurrency=3)
            with pytest.raises(imgtools.ValidationError, match="fetch_details_async"):
                fetch_details(frame, aclient)
            return result

    result = asyncio.run(scenario())
    assert result.fetched == 10 and has_details(result.frame).all()
    assert log.complete_ids(frame["id"]) == set(frame["id"])  # recorded: next run is free


def test_cli_audit_details(seeded: EmulatorHandle, monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str]) -> None:
    import io

    from imgtools.cli import main

    monkeypatch.setenv("RAX_USERNAME", "demo")
    monkeypatch.setenv("RAX_API_KEY", "demo-key")
    monkeypatch.setenv("IMGTOOLS_IDENTITY_URL", seeded.identity_url)

    def audit(*flags: str) -> tuple[str, str]:
        out = io.StringIO()
        assert main(["audit", *flags], out=out) == 0
        return out.getvalue(), capsys.readouterr().err

    before = _task_gets(seeded)
    out, err = audit("--details", "none")
    assert _task_gets(seeded) == before
    assert "no details" in out  # failures counted, honestly unexplained
    assert f"{SEEDED} listed but not fetched" in err
    out, err = audit()  # default: every task in view the log lacks
    assert _task_gets(seeded) - before == SEEDED
    assert f"{SEEDED} task(s) fetched" in err
    assert "container missing" in out and "no details" not in out
    out, err = audit("--since", "1d", "--details", "all")
    fetched = _task_gets(seeded) - before - SEEDED
    assert 0 < fetched < SEEDED  # only the tasks in view
    out, err = audit()
    assert _task_gets(seeded) - before - SEEDED == fetched  # nothing new to fetch
    assert "0 task(s) fetched" in err


def _task_404s(emu: EmulatorHandle) -> int:
    return sum(r["count"] for r in emu.stats()["requests"]
               if r["route"] == "/v2/tasks/{task_id}" and r["status"] == 404)


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_each_task_is_fetched_from_its_own_region(seeded: EmulatorHandle, log: TaskLog,
                                                  driver: str) -> None:
    """Tasks of DFW and IAD in the frame of an ORD client: each is asked of its own region
    (through ORD, DFW's tasks do not exist: a 404, counted as purged)."""
    from imgtools._region_frames import frame_by_region

    with _connect(seeded, log) as client:
        assert client.region == "ORD"
        frame = frame_by_region(client, with_log=True, log=log)
        assert set(frame["region"]) == {"ORD", "DFW", "IAD"}
        # A few failures of each region (failures only: the other tests' fetches stay theirs).
        frame = frame.loc[frame["status"] == "failure"].groupby("region").head(3)
        assert len(frame) == 9 and not has_details(frame).any()
        before = _task_404s(seeded)
        if driver == "sync":
            result = fetch_details(frame, client, log, details="all")
        else:
            async def scenario() -> Any:
                async with imgtools.AsyncClient(username="demo", api_key="demo-key",
                                                identity_url=seeded.identity_url, log=log,
                                                environ={}) as aclient:
                    return await fetch_details_async(frame, aclient, details="all")

            result = asyncio.run(scenario())
    assert _task_404s(seeded) == before
    assert result.fetched == 9 and result.purged == 0
    assert has_details(result.frame).all()
    assert set(result.frame["region"]) == {"ORD", "DFW", "IAD"}


def test_frame_by_region_reads_the_regions_asked_for(seeded: EmulatorHandle,
                                                     log: TaskLog) -> None:
    from imgtools._region_frames import frame_by_region

    with _connect(seeded, log) as client:
        every = frame_by_region(client, with_log=True, log=log)
        one = frame_by_region(client, with_log=True, regions="DFW", log=log)
        two = frame_by_region(client, with_log=True, regions=["ORD", "IAD"], log=log)
    assert set(one["region"]) == {"DFW"} and set(two["region"]) == {"ORD", "IAD"}
    assert sorted([*one["id"], *two["id"]]) == sorted(every["id"])

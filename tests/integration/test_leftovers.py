"""``client.leftovers()`` / ``imgtools leftovers``: export manifests and segments nothing still
needs, against the emulator over sockets: finished exports, orphan segments, a running export
and an unfinished transfer protected, a dry run that deletes nothing, and --delete removing
exactly what was listed."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

import imgtools
from imgtools import Leftover, ValidationError
from imgtools._leftovers import find_leftovers, running_transfer_locations
from imgtools.cli import EXIT_BAD_INPUT, EXIT_OK, main
from imgtools.emulator import EmulatorHandle, start_emulator
from tests.client_support import DB, FAST, WEB, Recorder, fresh_container, make_client


@pytest.fixture(scope="module")
def emu(emulator_in_subprocess: EmulatorHandle) -> EmulatorHandle:
    """This module's emulator: the client tests' one, in a subprocess (tests/conftest.py)."""
    return emulator_in_subprocess


def _put(client: imgtools.Client, container: str, name: str, body: bytes = b"",
         manifest: str | None = None) -> None:
    headers = {"X-Object-Manifest": manifest} if manifest else {}
    response = client.files._send("PUT", f"/{container}/{name}", content=body, headers=headers)
    assert response.status_code == 201, response.text


def _objects(client: imgtools.Client, containers: list[str]) -> set[tuple[str, str]]:
    return {(c, o.name) for c in containers for o in client.files.objects(c)}


def _export(client: imgtools.Client, image: str, container: str) -> str:
    task = client.export(image, container, create_container=True, timeout=60)
    assert task.export_location == f"{container}/{image}.vhd"
    return task.export_location


@pytest.fixture
def account(client: imgtools.Client) -> Iterator[tuple[imgtools.Client, list[str], str]]:
    """Three containers: two finished exports (one of them in ``a``), the segments of an
    export whose manifest was deleted (``b``), segments never given a manifest and objects
    that are no export at all (``c``). Yields the client, the containers and the location of
    the export whose manifest is gone."""
    a, b, c = (fresh_container(x) for x in "abc")
    _export(client, WEB, a)
    _export(client, DB, a)
    gone = _export(client, WEB, b)
    assert client.files._send("DELETE", f"/{gone}").status_code == 204
    client.files.create_container(c)
    _put(client, c, "old.vhd-00001", b"x" * 1000)
    _put(client, c, "old.vhd-00002", b"y" * 500)
    _put(client, c, "notes.txt", b"keep me")
    _put(client, c, "empty", b"")  # zero bytes, but no manifest
    yield client, [a, b, c], gone


def test_exports_and_orphan_segments_are_listed(
        account: tuple[imgtools.Client, list[str], str]) -> None:
    client, (a, b, c), _gone = account
    report = client.leftovers(containers=[a, b, c])
    found = {(i.kind, i.container, i.manifest, i.segment_prefix): i for i in report.items}
    assert set(found) == {
        ("export", a, f"{DB}.vhd", f"{a}/{DB}.vhd-"),
        ("export", a, f"{WEB}.vhd", f"{a}/{WEB}.vhd-"),
        ("orphan segments", b, None, f"{b}/{WEB}.vhd-"),
        ("orphan segments", c, None, f"{c}/old.vhd-"),
    }
    listing = {(c_, o.name): o.bytes for c_ in (a, b, c) for o in client.files.objects(c_)}
    for item in report.items:
        assert item.segments and all(s.startswith(item.segment_prefix.partition("/")[2])
                                     for s in item.segments)
        assert item.bytes == sum(listing[obj] for obj in item.objects)
        age = item.age(report.checked_at)
        assert item.last_modified is not None and age is not None and age >= 0
    old = found[("orphan segments", c, None, f"{c}/old.vhd-")]
    assert old.segments == ("old.vhd-00001", "old.vhd-00002") and old.bytes == 1500
    listed = {obj for item in report.items for obj in item.objects}
    assert (c, "notes.txt") not in listed and (c, "empty") not in listed
    assert report.bytes == sum(i.bytes for i in report.items) > 0
    # Printable three ways, each with every leftover.
    table = report.table()
    assert table.splitlines()[0].split() == ["kind", "container", "manifest", "segments",
                                             "bytes", "last_modified", "age_days"]
    assert f"{WEB}.vhd" in table and f"{report.bytes} bytes" in table
    assert len(report.to_csv().splitlines()) == 1 + len(report.items)
    data = json.loads(report.to_json())
    assert data["bytes"] == report.bytes and len(data["leftovers"]) == len(report.items)


def test_segments_a_manifest_elsewhere_points_at_are_no_orphans(
        client: imgtools.Client) -> None:
    manifests, segments = fresh_container("m"), fresh_container("s")
    client.files.create_container(manifests)
    client.files.create_container(segments)
    _put(client, segments, "disk.vhd-00001", b"a" * 300)
    _put(client, segments, "disk.vhd-00002", b"b" * 200)
    _put(client, manifests, "disk.vhd", manifest=f"{segments}/disk.vhd-")
    assert client.leftovers(containers=[segments]).items == ()
    (item,) = client.leftovers(containers=[manifests]).items
    assert (item.kind, item.manifest, item.bytes) == ("export", "disk.vhd", 500)
    assert item.objects == ((manifests, "disk.vhd"), (segments, "disk.vhd-00001"),
                            (segments, "disk.vhd-00002"))


def test_protected_locations_are_left_out(
        account: tuple[imgtools.Client, list[str], str]) -> None:
    client, (a, b, c), gone = account
    report = client.leftovers(containers=[a, b, c], protected=[f"{a}/{WEB}.vhd", gone])
    prefixes = {i.segment_prefix for i in report.items}
    assert prefixes == {f"{a}/{DB}.vhd-", f"{c}/old.vhd-"}
    assert report.protected >= {f"{a}/{WEB}.vhd", gone}


def test_a_bad_protected_location_is_refused_before_any_request(emu: EmulatorHandle) -> None:
    recorder = Recorder()
    with make_client(emu, transport=recorder) as client:
        before = len(recorder.requests)
        with pytest.raises(ValidationError):
            client.leftovers(protected=["no-slash"])
        assert len(recorder.requests) == before


def test_dry_run_deletes_nothing_and_delete_removes_exactly_the_listing(
        account: tuple[imgtools.Client, list[str], str]) -> None:
    client, containers, _gone = account
    a = containers[0]
    before = _objects(client, containers)
    report = client.leftovers(containers=containers, protected=[f"{a}/{DB}.vhd"])
    assert _objects(client, containers) == before  # listing is a dry run
    listed = {obj for item in report.items for obj in item.objects}
    assert listed and listed < before
    result = client.delete_leftovers(report, protected=[f"{a}/{DB}.vhd"])
    assert (result.deleted, result.already_gone, result.skipped) == (len(listed), 0, ())
    assert result.bytes == report.bytes
    assert _objects(client, containers) == before - listed
    assert client.files.verify_export(f"{a}/{DB}.vhd").ok  # the protected one is whole
    assert client.leftovers(containers=containers, protected=[f"{a}/{DB}.vhd"]).items == ()


def test_delete_skips_what_became_protected(
        account: tuple[imgtools.Client, list[str], str]) -> None:
    client, containers, _gone = account
    a = containers[0]
    report = client.leftovers(containers=containers)
    before = _objects(client, containers)
    result = client.delete_leftovers(report, protected=[f"{a}/{WEB}.vhd"])
    assert [i.manifest for i in result.skipped] == [f"{WEB}.vhd"]
    kept = {(a, n) for i in result.skipped for _, n in i.objects}
    assert _objects(client, containers) == kept | (before - {o for i in report.items
                                                             for o in i.objects})


def test_a_running_export_is_never_listed(tmp_path: Path) -> None:
    # pending for an hour: the task stays unfinished for the whole test, whatever the load.
    config = dataclasses.replace(FAST, pending_delay=3600.0)
    with start_emulator(config=config, subprocess=True) as slow, make_client(slow) as client:
        container = fresh_container("run")
        task = client.begin_export(WEB, container, create_container=True).task
        assert not task.done
        # The segments an export in progress has written (its manifest comes last).
        _put(client, container, f"{WEB}.vhd-00001", b"s" * 2048)
        _put(client, container, f"{WEB}.vhd-00002", b"t" * 100)
        _put(client, container, "other.vhd-00001", b"o" * 10)
        report = client.leftovers(containers=[container])
        assert [(i.kind, i.segments) for i in report.items] == [
            ("orphan segments", ("other.vhd-00001",))]
        assert f"{container}/{WEB}.vhd" in report.protected
        assert asyncio.run(_async_leftovers(slow, container)) == report.items
        # Asked to delete a listing made as if the task were not there: still skipped.
        unprotected = find_leftovers(client.files, containers=[container])
        assert len(unprotected.items) == 2
        result = client.delete_leftovers(unprotected)
        assert [i.segment_prefix for i in result.skipped] == [f"{container}/{WEB}.vhd-"]
        assert {o.name for o in client.files.objects(container)} == {
            f"{WEB}.vhd-00001", f"{WEB}.vhd-00002"}


async def _async_leftovers(emu: EmulatorHandle, container: str) -> tuple[Leftover, ...]:
    async with imgtools.AsyncClient(username="demo", api_key="demo-key",
                                    identity_url=emu.identity_url, log=False) as aclient:
        return (await aclient.leftovers(containers=[container])).items


def _transfers_log(path: Path, rows: list[tuple[str, str | None, str, str, str]]) -> None:
    # The columns imgtools.transfer's table has (branch h-transfer) that leftovers reads.
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE transfers (id TEXT PRIMARY KEY, status TEXT NOT NULL, "
                     "export_location TEXT, target_location TEXT, source_image TEXT NOT NULL, "
                     "source_container TEXT NOT NULL, target_container TEXT NOT NULL)")
        conn.executemany("INSERT INTO transfers VALUES (?, ?, ?, NULL, ?, ?, ?)",
                         [(str(i), *row) for i, row in enumerate(rows)])
    conn.close()


def test_unfinished_transfers_in_the_log_are_protected(
        account: tuple[imgtools.Client, list[str], str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    client, (a, b, c), _gone = account
    log = tmp_path / "log.sqlite"
    monkeypatch.setenv("IMGTOOLS_LOG", str(log))
    assert running_transfer_locations() == set()  # no file
    sqlite3.connect(log).close()
    assert running_transfer_locations() == set()  # no transfers table: nothing more
    _transfers_log(log, [
        ("running", f"{a}/{WEB}.vhd", WEB, a, "target"),
        ("failed", None, WEB, b, "target"),  # resumable; its export location not yet known
        ("done", f"{a}/{DB}.vhd", DB, a, "target"),
    ])
    assert running_transfer_locations() == {f"{a}/{WEB}.vhd", f"{b}/{WEB}.vhd",
                                            f"target/{WEB}.vhd"}
    report = client.leftovers(containers=[a, b, c])
    assert {i.segment_prefix for i in report.items} == {f"{a}/{DB}.vhd-", f"{c}/old.vhd-"}


# -- the command line ---------------------------------------------------------------------------


def test_cli_lists_then_deletes(as_demo: EmulatorHandle,
                                account: tuple[imgtools.Client, list[str], str],
                                capsys: pytest.CaptureFixture[str]) -> None:
    client, containers, _gone = account
    where = [arg for c in containers for arg in ("--container", c)]
    before = _objects(client, containers)
    out = io.StringIO()
    assert main(["leftovers", *where, "--format", "json"], out=out) == EXIT_OK
    listed = json.loads(out.getvalue())["leftovers"]
    assert len(listed) == 4 and _objects(client, containers) == before
    out = io.StringIO()
    assert main(["leftovers", *where, "--format", "csv"], out=out) == EXIT_OK
    assert out.getvalue().startswith("kind,container,manifest,segments,bytes,")
    # No terminal to ask on (pytest's stdin) and no --yes: refused, before any request.
    capsys.readouterr()
    assert main(["leftovers", *where, "--delete"], out=io.StringIO()) == EXIT_BAD_INPUT
    assert "--yes" in capsys.readouterr().err
    assert _objects(client, containers) == before
    out = io.StringIO()
    assert main(["leftovers", *where, "--protect", f"{containers[0]}/{DB}.vhd", "--delete",
                 "--yes"], out=out) == EXIT_OK
    assert f"{WEB}.vhd" in out.getvalue()  # the listing is shown first
    err = capsys.readouterr().err
    assert "deleted" in err
    after = _objects(client, containers)
    assert {n for c, n in after if c == containers[0]} >= {f"{DB}.vhd", f"{DB}.vhd-00001"}
    assert {(c, n) for c, n in after if c == containers[2]} == {
        (containers[2], "notes.txt"), (containers[2], "empty")}
    assert not any(c == containers[1] for c, _ in after)
    assert main(["leftovers", *where, "--protect", "bad"], out=io.StringIO()) == EXIT_BAD_INPUT


@pytest.mark.parametrize("answer", ["n", "y"])
def test_cli_asks_on_a_terminal(as_demo: EmulatorHandle,
                                account: tuple[imgtools.Client, list[str], str],
                                monkeypatch: pytest.MonkeyPatch, answer: str) -> None:
    client, containers, _gone = account
    where = [arg for c in containers for arg in ("--container", c)]
    before = _objects(client, containers)
    asked: list[str] = []
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: asked.append(prompt) or answer)
    assert main(["leftovers", *where, "--delete"], out=io.StringIO()) == EXIT_OK
    assert len(asked) == 1 and "delete these" in asked[0]
    after = _objects(client, containers)
    if answer == "n":
        assert after == before
    else:
        assert after == {(containers[2], "notes.txt"), (containers[2], "empty")}


def test_the_transfer_modules_own_records_are_read(
        account: tuple[imgtools.Client, list[str], str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from imgtools._transfer_store import TransferRecord, TransferStore

    client, (a, b, c), _gone = account
    monkeypatch.setenv("IMGTOOLS_LOG", str(tmp_path / "log.sqlite"))
    store = TransferStore()
    store.save(TransferRecord(name="t1", source_image=WEB, source_container=a,
                              target_container="target", properties=[], cleanup="none",
                              export_location=f"{a}/{WEB}.vhd"))
    store.save(TransferRecord(name="t2", source_image=DB, source_container=a,
                              target_container="target", properties=[], cleanup="none",
                              status="done", export_location=f"{a}/{DB}.vhd"))
    assert f"{a}/{WEB}.vhd" in running_transfer_locations()
    assert f"{a}/{DB}.vhd" not in running_transfer_locations()
    report = client.leftovers(containers=[a, b, c])
    assert {i.segment_prefix for i in report.items} == {f"{a}/{DB}.vhd-", f"{b}/{WEB}.vhd-",
                                                        f"{c}/old.vhd-"}


"""Emulator life cycle: restart persistence, crash recovery, expiry, faults, seeding, CLI."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from imgtools.emulator import EmulatorHandle, start_emulator
from imgtools.emulator.__main__ import build_parser, config_from
from imgtools.emulator.config import EmulatorConfig
from imgtools.emulator.seed import seeded_image_bytes
from tests.emulator.helpers import Api, KiB, fast


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorHandle]:
    """An in-process emulator whose faults and clock these tests change."""
    with start_emulator(config=fast(task_ttl=600.0, token_ttl=3600.0, image_size=64 * KiB,
                                    segment_size=16 * KiB), subprocess=False) as handle:
        yield handle


@pytest.fixture
def api(emu: EmulatorHandle) -> Iterator[Api]:
    emu.clear_faults()
    client = Api(emu)
    yield client
    emu.clear_faults()
    client.close()


# -- restart and crash recovery --------------------------------------------------------------
def test_restart_keeps_everything(tmp_path: Path) -> None:
    with start_emulator(config=fast(), data_dir=tmp_path) as emu:
        api = Api(emu)
        container = api.container()
        api.http.put(f"{api.account}/{container}/note.txt", content=b"persist me")
        done = api.wait(api.export(emu.image_id("small"), container)["id"])
        listing = api.get(f"{api.account}/{container}?format=json").json()
        images = api.get("/v2/images").json()
        emu.kill()
        with pytest.raises(httpx.TransportError):
            api.get("/v2/tasks")
        emu.restart()
        api.http.close()
        api.http = httpx.Client(base_url=emu.url, headers={"X-Auth-Token": api.token})
        assert api.get(f"/v2/tasks/{done['id']}").json() == done  # the old token still works
        assert api.get(f"{api.account}/{container}?format=json").json() == listing
        assert api.get(f"{api.account}/{container}/note.txt").content == b"persist me"
        assert api.get("/v2/images").json() == images
        assert api.get(f"{api.account}/{container}/{emu.image_id('small')}.vhd").content == \
            api.image_bytes(emu.image_id("small"))
        api.close()


@pytest.mark.parametrize("recovery", ["resume", "fail"])
def test_task_caught_processing_by_a_crash(tmp_path: Path, recovery: str) -> None:
    # 256 KiB at 512 KiB/s: half a second of processing, long enough to kill it midway.
    config = fast(export_speed=512 * KiB, crash_recovery=recovery)
    with start_emulator(config=config, data_dir=tmp_path) as emu:
        api = Api(emu)
        container = api.container()
        task = api.export(emu.image_id("web"), container)
        deadline = time.monotonic() + 10
        while api.get(f"/v2/tasks/{task['id']}").json()["status"] != "processing":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.1)
        emu.kill()
        emu.restart()
        api.http.close()
        api.http = httpx.Client(base_url=emu.url, headers={"X-Auth-Token": api.token})
        done = api.wait(task["id"])
        if recovery == "resume":
            assert done["status"] == "success", done
            body = api.get(f"{api.account}/{container}/{emu.image_id('web')}.vhd").content
            assert body == api.image_bytes(emu.image_id("web"))
        else:
            assert done["status"] == "failure"
            assert done["message"].startswith("Task was interrupted by a service restart")
        api.close()


# -- expiry ----------------------------------------------------------------------------------
def test_finished_tasks_expire_and_are_purged(emu: EmulatorHandle, api: Api) -> None:
    container = api.container()
    done = api.wait(api.export(emu.image_id("small"), container)["id"])
    assert api.get(f"/v2/tasks/{done['id']}").status_code == 200
    emu.advance_clock(emu.config.task_ttl + 1)
    assert api.get(f"/v2/tasks/{done['id']}").status_code == 404
    assert done["id"] not in {t["id"] for t in api.get("/v2/tasks?limit=1000").json()["tasks"]}
    # The export itself stays, as on Rackspace.
    assert api.http.head(f"{api.account}/{container}/{emu.image_id('small')}.vhd"
                         ).status_code == 200
    time.sleep(1.2)  # the worker purges the row too
    assert emu.stats()["events"].get("tasks_purged", 0) >= 1


def test_tokens_expire(emu: EmulatorHandle) -> None:
    api = Api(emu)
    assert api.get("/v2/tasks").status_code == 200
    emu.advance_clock(emu.config.token_ttl + 1)
    assert api.get("/v2/tasks").status_code == 401
    assert api.get(api.account).status_code == 401
    api.close()


def test_objects_with_delete_after_expire(emu: EmulatorHandle, api: Api) -> None:
    container = api.container()
    r = api.http.put(f"{api.account}/{container}/tmp", content=b"x",
                     headers={"X-Delete-After": "60"})
    assert r.status_code == 201
    assert "x-delete-at" in api.http.head(f"{api.account}/{container}/tmp").headers
    emu.advance_clock(61)
    assert api.http.head(f"{api.account}/{container}/tmp").status_code == 404
    bad = api.http.put(f"{api.account}/{container}/tmp2", content=b"x",
                       headers={"X-Delete-After": "soon"})
    assert bad.status_code == 400


# -- faults ----------------------------------------------------------------------------------
def test_fault_503_only_on_chosen_paths(emu: EmulatorHandle, api: Api) -> None:
    emu.set_faults(error_503=1.0, paths="/v2/tasks")
    r = api.get("/v2/tasks", headers={"Accept": "application/json"})
    assert r.status_code == 503 and "unavailable" in r.json()["message"]
    assert api.get("/v2/images").status_code == 200
    assert emu.stats()["faults"]["error_503"] >= 1
    emu.set_faults(error_503=1.0, paths="", methods="POST")
    assert api.get("/v2/tasks").status_code == 200
    assert api.post_task(image_uuid=str(uuid.uuid4()),
                         receiving_swift_container="x").status_code == 503


def test_fault_seed_gives_the_same_faults_again(emu: EmulatorHandle, api: Api) -> None:
    def run(seed: int) -> list[int]:
        emu.set_faults(error_503=0.5, seed=seed)
        return [api.get("/v2/images").status_code for _ in range(24)]

    first = run(7)
    assert set(first) == {200, 503}
    assert run(7) == first  # set again: the draws start over
    assert run(8) != first


@pytest.mark.parametrize("status", [413, 429])
def test_fault_rate_limit(emu: EmulatorHandle, api: Api, status: int) -> None:
    emu.set_faults(rate_limit=2, rate_limit_status=status)
    codes = [api.get("/v2/tasks").status_code for _ in range(5)]
    assert codes[:2] == [200, 200] and status in codes
    limited = api.get("/v2/tasks")
    assert limited.status_code == status and int(limited.headers["retry-after"]) >= 1
    time.sleep(1.1)
    assert api.get("/v2/tasks").status_code == 200


def test_fault_latency(emu: EmulatorHandle, api: Api) -> None:
    emu.set_faults(latency_min=0.3, latency_max=0.3)
    started = time.monotonic()
    assert api.get("/v2/tasks").status_code == 200
    assert time.monotonic() - started >= 0.3


def test_fault_dropped_connections(emu: EmulatorHandle, api: Api) -> None:
    emu.set_faults(drop_before=1.0)
    with pytest.raises(httpx.TransportError):
        api.get("/v2/tasks")
    emu.set_faults(drop_before=0.0, drop_after=1.0, methods="POST")
    before = {t["id"] for t in api.get("/v2/tasks?limit=1000").json()["tasks"]}
    with pytest.raises(httpx.TransportError):
        api.post_task(image_uuid=str(uuid.uuid4()), receiving_swift_container="lost")
    emu.clear_faults()
    after = {t["id"] for t in api.get("/v2/tasks?limit=1000").json()["tasks"]}
    assert len(after - before) == 1  # the POST was handled; only the answer was lost
    faults = emu.stats()["faults"]
    assert faults["drop_before"] >= 1 and faults["drop_after"] >= 1


def test_fault_cut_body(emu: EmulatorHandle, api: Api) -> None:
    container = f"cut-{uuid.uuid4().hex[:8]}"
    data = bytes(range(256)) * 400
    assert api.http.put(f"{api.account}/{container}").status_code == 201
    assert api.http.put(f"{api.account}/{container}/obj", content=data).status_code == 201
    emu.set_faults(cut_body=1.0, paths=f"{api.account}/{container}/")
    with api.http.stream("GET", f"{api.account}/{container}/obj") as response:
        assert response.headers["content-length"] == str(len(data))  # the whole was promised
        got = bytearray()
        with pytest.raises(httpx.RemoteProtocolError):
            for chunk in response.iter_raw():
                got += chunk
    assert bytes(got) == data[:len(data) // 2]  # half came, then the connection closed
    ranged = api.get(f"{api.account}/{container}/obj", headers={"Range": "bytes=0-0"})
    assert ranged.content == data[:1]  # one byte is never cut
    emu.clear_faults()
    assert api.get(f"{api.account}/{container}/obj").content == data
    assert emu.stats()["faults"]["cut_body"] >= 1


def test_fault_corrupt_and_missing_segments(emu: EmulatorHandle, api: Api) -> None:
    image_id = emu.image_id("web")
    emu.set_faults(corrupt_segment=True)
    container = api.container()
    assert api.wait(api.export(image_id, container)["id"])["status"] == "success"
    listing = api.get(f"{api.account}/{container}?format=json").json()
    first = next(o for o in listing if o["name"].endswith("-00001"))
    data = api.get(f"{api.account}/{container}/{first['name']}").content
    assert hashlib.md5(data).hexdigest() != first["hash"]
    emu.set_faults(corrupt_segment=False, missing_segment=True)
    container = api.container()
    assert api.wait(api.export(image_id, container)["id"])["status"] == "success"
    body = api.get(f"{api.account}/{container}/{image_id}.vhd").content
    assert len(body) == emu.config.image_size - emu.config.segment_size


def test_fault_task_failure(emu: EmulatorHandle, api: Api) -> None:
    emu.set_faults(task_failure=1.0)
    done = api.wait(api.export(emu.image_id("web"), api.container())["id"])
    assert (done["status"], done["message"]) == ("failure",
                                                 "Unknown error occurred during image export")


def test_fault_settings_are_validated(emu: EmulatorHandle) -> None:
    r = emu.request("POST", "/_emulator/faults", {"no_such_fault": 1})
    assert r[0] == 400
    r = emu.request("POST", "/_emulator/faults", {"rate_limit_status": 500})
    assert r[0] == 400


def test_the_emulator_api_answers_loopback_clients_only(emu: EmulatorHandle) -> None:
    import asyncio

    from starlette.applications import Starlette

    from imgtools.emulator import meta

    own = ("/_emulator/stats", "/_emulator/faults", "/_emulator/clock", "/_emulator/info")
    for path in own:  # over a real socket, from loopback
        assert emu.request("GET", path)[0] == 200, path

    # Another host cannot be had over loopback sockets: the app alone, behind an ASGI
    # transport that says the client is elsewhere.
    async def from_elsewhere() -> dict[str, int]:
        transport = httpx.ASGITransport(app=Starlette(routes=meta.routes),
                                        client=("10.1.2.3", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://emu") as http:
            return {path: (await http.get(path)).status_code for path in (*own, "/versions")}

    assert asyncio.run(from_elsewhere()) == {**dict.fromkeys(own, 403), "/versions": 200}


def test_two_hundred_concurrent_exports(emu: EmulatorHandle, api: Api) -> None:
    containers = [api.container() for _ in range(67)]
    tasks = [api.export(emu.image_id(slug), c)["id"] for c in containers
             for slug in ("web", "db", "small")][:200]
    assert len(tasks) == 200
    statuses = [api.wait(t, timeout=60)["status"] for t in tasks]
    assert statuses == ["success"] * 200


# -- seeding ---------------------------------------------------------------------------------
def test_seeded_history(tmp_path: Path) -> None:
    with start_emulator(config=fast(seed_tasks=300), data_dir=tmp_path,
                        subprocess=False) as emu:
        api = Api(emu)
        pages, ids = 0, []
        url: str | None = "/v2/tasks?limit=100"
        while url:
            body = api.get(url).json()
            ids += [t["id"] for t in body["tasks"]]
            url = body.get("next")
            pages += 1
        assert len(ids) == len(set(ids)) == 300
        assert pages == 4  # three full pages, then Glance's extra empty one
        stubs = api.get("/v2/tasks?limit=1000").json()["tasks"]
        assert {t["type"] for t in stubs} == {"export", "import"}
        assert {t["status"] for t in stubs} == {"success", "failure"}
        failed = api.get(f"/v2/tasks/{next(t['id'] for t in stubs if t['status'] == 'failure')}")
        assert failed.json()["message"]
        assert len({t["created_at"][:13] for t in stubs}) > 10  # spread over many hours
        # Every tenant in every region has its own history: no task id is shared.
        histories = {("demo", emu.default_region): {t["id"] for t in stubs}}
        for user in ("demo", "other"):
            for region in emu.regions:
                if (user, region) in histories:
                    continue
                client = Api(emu, user)
                url = f"{emu.region_url(region)}/v2/tasks?limit=1000"
                seen = client.get(url).json()["tasks"]
                assert {t["owner"] for t in seen} == {emu.tenant_of(user)}
                histories[(user, region)] = {t["id"] for t in seen}
                client.close()
        assert all(len(ids) == 300 for ids in histories.values())
        assert len(set().union(*histories.values())) == 300 * len(histories)
        emu.restart()  # seeding happens once per data dir
        api.http.close()
        api.http = httpx.Client(base_url=emu.url, headers={"X-Auth-Token": api.token})
        assert len(api.get("/v2/tasks?limit=1000").json()["tasks"]) == 300
        api.close()


# -- command line ----------------------------------------------------------------------------
def test_command_line_and_environment_settings() -> None:
    parser = build_parser()
    args = parser.parse_args(["--export-speed", "1000", "--fault-error-503", "0.5",
                              "--fault-corrupt-segment", "--user", "a:k:1:admin",
                              "--region", "LON"])
    env = {"IMGTOOLS_EMULATOR_TASK_TTL": "60", "IMGTOOLS_EMULATOR_EXPORT_SPEED": "5",
           "IMGTOOLS_EMULATOR_FAULT_RATE_LIMIT": "3",
           "IMGTOOLS_EMULATOR_FAULT_MISSING_SEGMENT": "true"}
    config = config_from(args, env)
    assert config.export_speed == 1000  # the flag wins over the environment
    assert config.task_ttl == 60
    assert config.faults.error_503 == 0.5 and config.faults.rate_limit == 3
    assert config.faults.corrupt_segment and config.faults.missing_segment
    assert [u.username for u in config.users] == ["a"] and config.regions == ("LON",)
    with pytest.raises(ValueError):
        config_from(parser.parse_args(["--crash-recovery", "maybe"]), {})


def test_main_prints_urls_and_demo_credentials(tmp_path: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "imgtools.emulator", "--port", "0",
                             "--data-dir", str(tmp_path), "--image-size", "4096"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(8)]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    text = "".join(lines)
    assert "http://127.0.0.1:" in text
    assert "demo / demo-key / 100001" in text and "other / other-key / 100002" in text


def test_a_background_emulator_ends_with_its_parent(tmp_path: Path) -> None:
    """A kernel killed with SIGKILL runs no atexit: its emulator must still go away."""
    import os
    import signal
    import subprocess
    import sys

    script = (
        "import sys, time\n"
        "from imgtools.emulator import start_emulator\n"
        f"emu = start_emulator(data_dir={str(tmp_path / 'emu')!r})\n"
        "print(emu.pid, emu.url, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              text=True)
    assert parent.stdout is not None
    child_pid, url = parent.stdout.readline().split()
    assert httpx.get(url + "/versions").status_code == 200
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(int(child_pid), 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        os.kill(int(child_pid), signal.SIGKILL)
        raise AssertionError("the emulator outlived its parent by 30 s")
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/versions")


@pytest.mark.parametrize("all_regions", [True, False])
def test_the_start_up_allowance_covers_the_images_seeded(tmp_path: Path,
                                                         all_regions: bool) -> None:
    # The ready timeout grows with seeded_image_bytes: it must not be short of what a first
    # start really writes (a 1 GiB image_size seeds about 6 GiB and once timed out at 30 s).
    config = EmulatorConfig(image_size=1024 * KiB, seed_all_regions=all_regions, seed_tasks=0)
    with start_emulator(config=config, data_dir=tmp_path, subprocess=False):
        written = sum(f.stat().st_size for f in tmp_path.rglob("*")
                      if f.is_file() and f.parent.name == "images")
    estimate = seeded_image_bytes(config)
    assert written > 0
    # An upper bound (the other regions' images are up to a third smaller), never far off.
    assert 0.75 * estimate <= written <= estimate

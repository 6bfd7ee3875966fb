"""Regions in the client, against the emulator's three regions (ORD, DFW, IAD) over sockets:
the region and tenant after login, one login for every region (``in_region``), region
isolation seen through the client, ServiceNet, and what a bare token can and cannot tell."""

from __future__ import annotations

import pytest

import imgtools
from imgtools import MissingSetting, NotExportable, NotFound, UnknownRegion
from imgtools.emulator import EmulatorHandle
from tests.client_support import DB, DEMO, Recorder, fresh_container, make_client


@pytest.fixture(scope="module")
def emu(emulator_in_subprocess: EmulatorHandle) -> EmulatorHandle:
    """This module's emulator: the client tests' one, in a subprocess (tests/conftest.py)."""
    return emulator_in_subprocess



def test_login_knows_the_region_and_the_tenant(emu: EmulatorHandle) -> None:
    with make_client(emu) as c:
        # No region asked for: the user's default region, the catalog's first.
        assert (c.region, c.tenant_id) == ("ORD", DEMO)
        assert c.regions == ("ORD", "DFW", "IAD")
        assert c.endpoint == emu.image_endpoint
    with make_client(emu, region="iad") as c:
        assert c.region == "IAD"  # as the catalog spells it
        assert c.endpoint == emu.image_endpoint_for("IAD")
        assert c.storage_url == emu.storage_url(DEMO, "IAD")
        assert "region='IAD'" in repr(c)


def test_an_unknown_region_names_the_catalog_regions_before_any_service_request(
        emu: EmulatorHandle) -> None:
    recorder = Recorder()
    with pytest.raises(UnknownRegion) as info:
        make_client(emu, region="LON", transport=recorder)
    assert info.value.regions == ("ORD", "DFW", "IAD")
    assert "ORD, DFW, IAD" in str(info.value)
    # Only the login went out: nothing to Cloud Images or Cloud Files.
    assert [r.url.path for r in recorder.requests] == ["/v2.0/tokens"]
    with make_client(emu, transport=(recorder := Recorder())) as c:
        sent = len(recorder.requests)
        with pytest.raises(UnknownRegion, match="LON"):
            c.in_region("LON")
        assert len(recorder.requests) == sent


def test_in_region_shares_the_login(emu: EmulatorHandle, tmp_path: object) -> None:
    log = imgtools.TaskLog(f"{tmp_path}/audit.sqlite")
    with make_client(emu, log=log, transport=(recorder := Recorder())) as ord_client:
        logins = sum(r.url.path == "/v2.0/tokens" for r in recorder.requests)
        dfw = ord_client.in_region("DFW")
        try:
            assert (dfw.region, dfw.tenant_id) == ("DFW", DEMO)
            assert dfw.endpoint == emu.image_endpoint_for("DFW")
            assert dfw.storage_url == emu.storage_url(DEMO, "DFW")
            assert dfw.log is ord_client.log and dfw.stats is ord_client.stats
            image = dfw.get_image(emu.image_id("db", region="DFW"))
            assert image.owner == DEMO
            # No second login for the second region: the same token went to DFW's endpoint.
            assert sum(r.url.path == "/v2.0/tokens" for r in recorder.requests) == logins
            tokens = {r.headers["X-Auth-Token"] for r in recorder.requests
                      if "X-Auth-Token" in r.headers}
            assert len(tokens) == 1
            # The token expires: one region renews it, and the other uses the renewed one.
            emu.advance_clock(25 * 3600)
            dfw.get_image(emu.image_id("db", region="DFW"))
            ord_client.get_image(emu.image_id("db"))
            assert ord_client.stats.reauths == 1
            assert sum(r.url.path == "/v2.0/tokens" for r in recorder.requests) == logins + 1
            # A task seen in DFW lands in the one log.
            task = dfw.begin_export(emu.image_id("db", region="DFW"), fresh_container(),
                                    create_container=True)
            assert log.get(task.id) is not None
        finally:
            dfw.close()
        ord_client.get_image(emu.image_id("db"))  # closing the twin left the original usable


def test_another_regions_resources_do_not_exist_through_the_client(emu: EmulatorHandle) -> None:
    container = fresh_container()
    with make_client(emu) as ord_client:
        export = ord_client.export(DB, container, create_container=True)
        assert export.export_location is not None
        dfw = ord_client.in_region("DFW")
        with dfw:
            with pytest.raises(NotFound):
                dfw.get_image(DB)
            with pytest.raises(NotFound):
                dfw.get_task(export.id)
            with pytest.raises(NotFound):
                dfw.resume(export.id)
            result = dfw.wait_all([export.id], timeout=5)
            assert isinstance(result.errors[export.id], NotFound)
            with pytest.raises(NotExportable, match="no such image"):
                dfw.begin_export(DB, container)
            assert all(t.id != export.id for t in dfw.tasks())
            assert not dfw.files.container_exists(container)
            with pytest.raises(imgtools.ImportSourceNotFound, match="DFW"):
                dfw.begin_import(export.export_location, name="elsewhere")
        # ...and each stays visible where it is.
        assert ord_client.get_task(export.id).id == export.id
        assert ord_client.files.container_exists(container)


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_servicenet_uses_the_internal_url(emu: EmulatorHandle, how: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    options: dict[str, object] = {}
    if how == "argument":
        options["servicenet"] = True
    else:
        monkeypatch.setenv("RAX_SERVICENET", "1")
    before = emu.stats()
    with make_client(emu, region="DFW", **options) as c:
        assert c.servicenet
        assert c.storage_url == emu.storage_url(DEMO, "DFW", servicenet=True)
        assert c.storage_url != emu.storage_url(DEMO, "DFW")
        container = fresh_container("snet")
        assert c.files.create_container(container)
        assert c.files.container_exists(container)
        iad = c.in_region("IAD")
        with iad:
            assert iad.storage_url == emu.storage_url(DEMO, "IAD", servicenet=True)
            assert not iad.files.container_exists(container)
    served = emu.stats()["events"].get("servicenet_requests", 0)
    assert served >= before["events"].get("servicenet_requests", 0) + 3
    with make_client(emu, region="DFW", servicenet=False) as public:
        assert public.storage_url == emu.storage_url(DEMO, "DFW")
        assert public.files.container_exists(container)  # the same account, another network


def test_a_bare_token_derives_what_it_can(emu: EmulatorHandle) -> None:
    token = emu.token()
    storage = emu.storage_url(DEMO, "DFW")
    with imgtools.connect(endpoint=emu.image_endpoint_for("DFW"), token=token,
                          files_endpoint=storage, log=False) as c:
        assert c.tenant_id == DEMO  # from MossoCloudFS_100001
        assert c.region is None  # an endpoint does not say which region it is
        assert c.regions == ()
        assert c.get_image(emu.image_id("db", region="DFW")).owner == DEMO
        with pytest.raises(MissingSetting) as info:
            c.in_region("IAD")
        assert info.value.setting == "region" and "RAX_USERNAME" in str(info.value)
    with imgtools.connect(endpoint=emu.image_endpoint_for("DFW"), token=token,
                          files_endpoint=storage, region="dfw", log=False) as c:
        assert c.region == "DFW"
    # A storage URL that does not name the numeric tenant: unknown, unless given.
    with imgtools.connect(endpoint=emu.image_endpoint, token=token, log=False,
                          files_endpoint="http://127.0.0.1:1/v1/MossoCloudFS_0f3c-aa") as c:
        assert c.tenant_id is None
    with imgtools.connect(endpoint=emu.image_endpoint, token=token, tenant_id=DEMO,
                          log=False) as c:
        assert c.tenant_id == DEMO
    # Cloud Files needs its storage URL: an import says so before any request.
    with imgtools.connect(endpoint=emu.image_endpoint, token=token, log=False,
                          transport=(recorder := Recorder())) as c:
        with pytest.raises(MissingSetting) as no_files:
            c.begin_import("imports/disk.vhd", name="n")
        assert no_files.value.setting == "files_endpoint"
        assert "FILES_ENDPOINT" in str(no_files.value)
        assert recorder.requests == []
    # ServiceNet needs the catalog's internalURL, which a bare token has not got.
    with pytest.raises(MissingSetting) as missing:
        imgtools.connect(endpoint=emu.image_endpoint, token=token, servicenet=True, log=False)
    assert missing.value.setting == "files_endpoint"


def test_the_cli_says_what_a_bare_token_cannot_do(emu: EmulatorHandle) -> None:
    with imgtools.connect(endpoint=emu.image_endpoint, token=emu.token(), log=False) as c:
        from imgtools._region_frames import frame_by_region

        with pytest.raises(MissingSetting, match="--region all"):
            frame_by_region(c, with_log=False)


@pytest.mark.anyio
async def test_async_regions(emu: EmulatorHandle) -> None:
    client = await imgtools.connect_async(username="demo", api_key="demo-key",
                                          identity_url=emu.identity_url, region="DFW",
                                          log=False, poll=imgtools.PollPolicy.fast())
    async with client:
        assert (client.region, client.tenant_id) == ("DFW", DEMO)
        iad = client.in_region("IAD")
        async with iad:
            assert iad.endpoint == emu.image_endpoint_for("IAD")
            image = await iad.get_image(emu.image_id("db", region="IAD"))
            assert image.owner == DEMO
            with pytest.raises(NotFound):
                await iad.get_image(emu.image_id("db", region="DFW"))
        with pytest.raises(UnknownRegion):
            client.in_region("SYD")


def test_in_region_before_an_async_login_says_to_open_first(emu: EmulatorHandle) -> None:
    client = imgtools.AsyncClient(username="demo", api_key="demo-key",
                                  identity_url=emu.identity_url, log=False)
    with pytest.raises(imgtools.ConfigurationError, match="open"):
        client.in_region("DFW")

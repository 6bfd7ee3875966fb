"""Import tasks through the client, against the emulator over sockets: a VHD in one region's
Cloud Files becomes an image of that region only; local validation and the preflight refuse
before any POST; each failure the service reports gets its category, its text kept; a lost
POST ends in the task or ``ImportNotConfirmed``, never a second import; a token that expires
mid-wait is renewed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

import imgtools
from imgtools import (
    ImportFailed,
    ImportFailure,
    ImportInProgress,
    ImportNotConfirmed,
    ImportSourceNotFound,
    ImportTask,
    ImportTooLarge,
    NotFound,
    TaskStatus,
    ValidationError,
)
from imgtools.emulator import EmulatorHandle, start_emulator
from imgtools.emulator import vhd as vhd_format
from tests.client_support import (
    DEMO,
    FAST,
    Recorder,
    clear_faults,
    fresh_container,
    make_client,
    tasks_created,
)


@pytest.fixture(scope="module")
def emu(emulator_in_subprocess: EmulatorHandle) -> EmulatorHandle:
    """This module's emulator: the client tests' one, in a subprocess (tests/conftest.py)."""
    return emulator_in_subprocess


DISK = 4096


def fixed_vhd(*, disk_size: int = DISK, disk_type: int = vhd_format.FIXED,
              disk_uuid: uuid.UUID | None = None) -> bytes:
    """A fixed VHD (its disk, then the footer); the footer's fields as given."""
    footer = vhd_format.make_footer(disk_size, disk_uuid or uuid.uuid4(), disk_type)
    return bytes(min(disk_size, DISK)) + footer


def upload(emu: EmulatorHandle, container: str, name: str, data: bytes, *,
           region: str | None = None, headers: dict[str, str] | None = None) -> str:
    """PUT an object into the demo user's Cloud Files of ``region``; its location."""
    base = emu.storage_url(DEMO, region)
    with httpx.Client(headers={"X-Auth-Token": emu.token()}) as http:
        http.put(f"{base}/{container}").raise_for_status()
        http.put(f"{base}/{container}/{name}", content=data,
                 headers=headers or {}).raise_for_status()
    return f"{container}/{name}"


def test_an_import_makes_an_image_in_its_region_only(emu: EmulatorHandle) -> None:
    dfw_db = emu.image_id("db", region="DFW")
    with make_client(emu, region="DFW") as dfw:
        export = dfw.export(dfw_db, fresh_container(), create_container=True)
        assert export.export_location is not None
        # The export is a DLO manifest: the preflight adds up its segments.
        handle = dfw.begin_import(export.export_location, name="db-copy")
        assert isinstance(handle, ImportTask) and handle.image_id is None
        assert handle.location == export.export_location
        task = handle.wait()
        assert task.status is TaskStatus.SUCCESS and task.type == "import"
        assert handle.image_id == task.image_id == task.result["image_id"]  # type: ignore[index]
        image = dfw.get_image(handle.image_id)
        assert (image.name, image.owner, image.status) == ("db-copy", DEMO, "active")
        assert image.size == dfw.files.head_object(*export.export_location.split("/", 1)).bytes
        assert dfw.resume(task.id).image_id == image.id  # resume gives an ImportTask
        for region in ("ORD", "IAD"):
            with dfw.in_region(region) as elsewhere, pytest.raises(NotFound):
                elsewhere.get_image(image.id)


def test_a_plain_object_imports_and_import_waits_for_it(client: imgtools.Client,
                                                        emu: EmulatorHandle) -> None:
    location = upload(emu, fresh_container(), "disk.vhd", fixed_vhd())
    task = client.import_(location, name="plain")
    assert task.status is TaskStatus.SUCCESS
    assert task.image_id is not None and client.get_image(task.image_id).name == "plain"


@pytest.mark.parametrize(("location", "name", "fmt", "field"), [
    ("no-slash", "n", "vhd", "location"),
    ("a.b/disk.vhd", "n", "vhd", "location"),  # the container rules of exports
    ("/disk.vhd", "n", "vhd", "location"),
    ("imports/", "n", "vhd", "location"),
    ("imports/" + "x" * 1025, "n", "vhd", "location"),
    ("imports/disk.vhd", "", "vhd", "name"),
    ("imports/disk.vhd", 7, "vhd", "name"),
    ("imports/disk.vhd", "x" * 256, "vhd", "name"),
    ("imports/disk.vhd", "n", "raw", "format"),
    ("imports/disk.vhd", "n", "qcow2", "format"),
])
def test_bad_arguments_are_refused_before_any_request(emu: EmulatorHandle, location: str,
                                                      name: object, fmt: str,
                                                      field: str) -> None:
    with make_client(emu, transport=(recorder := Recorder())) as c:
        sent = len(recorder.requests)
        with pytest.raises(ValidationError) as info:
            c.begin_import(location, name=name, format=fmt)  # type: ignore[arg-type]
        assert field in (info.value.field or "")
        assert len(recorder.requests) == sent


def test_the_preflight_refuses_a_missing_object(client: imgtools.Client,
                                                emu: EmulatorHandle) -> None:
    before = tasks_created(emu)
    with pytest.raises(ImportSourceNotFound) as info:
        client.begin_import(f"{fresh_container()}/nothing.vhd", name="n")
    assert info.value.reason == "object not found" and "ORD" in str(info.value)
    assert tasks_created(emu) == before


def test_the_preflight_refuses_an_object_over_the_limit(client: imgtools.Client,
                                                        emu: EmulatorHandle,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # The emulator stores no 160 GB object: a lower limit checks the same comparison.
    assert imgtools.IMPORT_SIZE_LIMIT == 160 * 1024**3
    monkeypatch.setattr("imgtools._imports.IMPORT_SIZE_LIMIT", 3000)
    container = fresh_container()
    plain = upload(emu, container, "big.vhd", fixed_vhd())
    # A DLO: a zero-byte manifest whose two segments add up to 3200 bytes.
    upload(emu, container, "dlo.vhd-00001", bytes(1600))
    upload(emu, container, "dlo.vhd-00002", bytes(1600))
    dlo = upload(emu, container, "dlo.vhd", b"",
                 headers={"X-Object-Manifest": f"{container}/dlo.vhd-"})
    before = tasks_created(emu)
    with pytest.raises(ImportTooLarge) as info:
        client.begin_import(plain, name="n")
    assert (info.value.size, info.value.limit) == (DISK + 512, 3000)
    with pytest.raises(ImportTooLarge) as info:
        client.begin_import(dlo, name="n")
    assert info.value.size == 3200
    assert tasks_created(emu) == before


@pytest.fixture(scope="module")
def slow_emu() -> Iterator[EmulatorHandle]:
    """Tasks stay pending until the clock is moved on."""
    with start_emulator(config=FAST.replace(pending_delay=3600.0), subprocess=True) as handle:
        yield handle


def test_no_second_import_of_an_object_while_one_is_pending(slow_emu: EmulatorHandle) -> None:
    location = upload(slow_emu, fresh_container(), "disk.vhd", fixed_vhd())
    with make_client(slow_emu) as c:
        first = c.begin_import(location, name="first")
        assert first.status is TaskStatus.PENDING
        before = tasks_created(slow_emu)
        for name in ("second", "first"):  # another name; the same import asked again
            with pytest.raises(ImportInProgress) as info:
                c.begin_import(location, name=name)
            assert info.value.task_id == first.id
        # A new process asking for the very same import gets the live task, not another.
        with make_client(slow_emu) as other:
            again = other.begin_import(location, name="first")
            assert again.id == first.id
        assert tasks_created(slow_emu) == before
        slow_emu.advance_clock(3700)
        assert first.wait().status is TaskStatus.SUCCESS


def test_a_token_that_expires_mid_wait_is_renewed(slow_emu: EmulatorHandle) -> None:
    location = upload(slow_emu, fresh_container(), "disk.vhd", fixed_vhd(), region="IAD")
    with make_client(slow_emu, region="IAD") as c:
        handle = c.begin_import(location, name="late")
        seen: list[TaskStatus] = []

        def expire_once(task: imgtools.Task) -> None:
            if not seen:
                # A day passes after the first poll: the task finishes and the token expires.
                slow_emu.advance_clock(25 * 3600)
            seen.append(task.status)

        final = handle.wait(on_update=expire_once)
        assert final.status is TaskStatus.SUCCESS and len(seen) >= 2
        assert c.stats.reauths == 1
        assert c.get_image(handle.image_id or "").name == "late"


@pytest.mark.parametrize(("data", "failure", "code"), [
    (b"not a disk at all" * 100, ImportFailure.NOT_VHD, "396"),
    (fixed_vhd(disk_type=vhd_format.DIFFERENCING), ImportFailure.HAS_PARENT, "721"),
    (fixed_vhd(disk_type=5), ImportFailure.UNSUPPORTED_DISK_TYPE, "523"),
    (fixed_vhd(disk_size=41 * 1000**3), ImportFailure.VIRTUAL_SIZE_TOO_LARGE, "413"),
    (fixed_vhd(disk_uuid=uuid.UUID(int=0)), ImportFailure.ZERO_UUID, "614"),
])
def test_each_vhd_refusal_has_its_category(client: imgtools.Client, emu: EmulatorHandle,
                                           data: bytes, failure: ImportFailure,
                                           code: str) -> None:
    location = upload(emu, fresh_container(), "disk.vhd", data)
    with pytest.raises(ImportFailed) as info:
        client.import_(location, name="refused")
    assert (info.value.failure, info.value.code) == (failure, code)
    assert info.value.message == f"Image cannot be imported. Error code: '{code}'"
    assert isinstance(info.value, imgtools.TaskFailed)


def test_an_object_gone_before_the_task_ran(client: imgtools.Client) -> None:
    with pytest.raises(ImportFailed) as info:
        client.import_(f"{fresh_container()}/gone.vhd", name="n", preflight=False)
    assert info.value.failure is ImportFailure.SOURCE_NOT_FOUND and info.value.code is None
    assert "Image not found for import" in (info.value.message or "")


def test_properties_other_than_name_fail_as_bad_properties(client: imgtools.Client,
                                                           emu: EmulatorHandle) -> None:
    # The client never sends them; a task made by another tool is followed the same way.
    location = upload(emu, fresh_container(), "disk.vhd", fixed_vhd())
    with httpx.Client(headers={"X-Auth-Token": emu.token()}) as http:
        made = http.post(f"{emu.image_endpoint}/tasks", json={
            "type": "import", "input": {"import_from": location,
                                        "image_properties": {"name": "n", "os_type": "x"}}})
    made.raise_for_status()
    handle = client.resume(made.json()["id"])
    assert isinstance(handle, ImportTask)
    with pytest.raises(ImportFailed) as info:
        handle.wait()
    assert info.value.failure is ImportFailure.BAD_PROPERTIES
    # wait_all leaves failures in the result; raise_for_failures gives the same category.
    result = client.wait_all([handle])
    with pytest.raises(ImportFailed) as again:
        result.raise_for_failures()
    assert again.value.failure is ImportFailure.BAD_PROPERTIES


def test_the_services_own_trouble_is_a_service_error(client: imgtools.Client,
                                                     emu: EmulatorHandle) -> None:
    location = upload(emu, fresh_container(), "disk.vhd", fixed_vhd())
    emu.set_faults(task_failure=1.0, seed=3)
    try:
        with pytest.raises(ImportFailed) as info:
            client.import_(location, name="unlucky")
    finally:
        clear_faults(emu)
    assert info.value.failure is ImportFailure.SERVICE_ERROR
    assert info.value.message == "Unknown error occurred during image import"


@pytest.mark.parametrize(("message", "failure", "code"), [
    # Documented codes the emulator cannot produce with small objects.
    ("Image cannot be imported. Error code: '609'", ImportFailure.FILE_TOO_LARGE, "609"),
    ("Image cannot be imported. Error code: '111'", ImportFailure.INVALID_VHD, "111"),
    ("Error: Image not found for import. Possible invalid location",
     ImportFailure.SOURCE_NOT_FOUND, None),
    ("Invalid location: ftp://x", ImportFailure.BAD_LOCATION, None),
    ("something new", ImportFailure.OTHER, None),
    (None, ImportFailure.OTHER, None),
])
def test_categories_by_message(message: str | None, failure: ImportFailure,
                               code: str | None) -> None:
    assert ImportFailure.of(message) == (failure, code)


def test_a_lost_answer_gives_the_task_and_no_second_import(client: imgtools.Client,
                                                           emu: EmulatorHandle) -> None:
    location = upload(emu, fresh_container(), "disk.vhd", fixed_vhd())
    before = tasks_created(emu)
    emu.set_faults(drop_after=1.0, paths="/v2/tasks", methods="POST")
    try:
        handle = client.begin_import(location, name="once")
    finally:
        clear_faults(emu)
    assert tasks_created(emu) == before + 1
    assert handle.task is not None and handle.location == location
    assert handle.wait().status is TaskStatus.SUCCESS


def test_an_unconfirmed_import_is_found_later_and_never_repeated(emu: EmulatorHandle) -> None:
    location = upload(emu, fresh_container(), "disk.vhd", fixed_vhd())
    before = tasks_created(emu)
    with make_client(emu, retries=1) as c:
        # Every answer on /v2/tasks is lost: the POST's and the listings looking for it.
        emu.set_faults(paths="/v2/tasks", drop_after=1.0)
        try:
            with pytest.raises(ImportNotConfirmed) as info:
                c.begin_import(location, name="maybe", preflight=False)
        finally:
            clear_faults(emu)
        error = info.value
        assert tasks_created(emu) == before + 1
        assert (error.location, error.name, error.task_type) == (location, "maybe", "import")
        found = error.lookup()
        assert isinstance(found, ImportTask) and found.location == location
        again = c.begin_import(location, name="maybe")
        assert again.id == found.id and tasks_created(emu) == before + 1


def test_a_post_that_never_arrived_is_not_confirmed_then_made_once(emu: EmulatorHandle) -> None:
    location = upload(emu, fresh_container(), "disk.vhd", fixed_vhd())
    before = tasks_created(emu)
    with make_client(emu, retries=1) as c:
        emu.set_faults(drop_before=1.0, paths="/v2/tasks", methods="POST")
        try:
            with pytest.raises(ImportNotConfirmed) as info:
                c.begin_import(location, name="late")
        finally:
            clear_faults(emu)
        assert tasks_created(emu) == before and info.value.lookup() is None
        task = c.begin_import(location, name="late").wait()
        assert task.status is TaskStatus.SUCCESS and tasks_created(emu) == before + 1


@pytest.mark.anyio
async def test_async_import(emu: EmulatorHandle) -> None:
    location = upload(emu, fresh_container(), "disk.vhd", fixed_vhd(), region="DFW")
    client = await imgtools.connect_async(username="demo", api_key="demo-key",
                                          identity_url=emu.identity_url, region="DFW",
                                          log=False, poll=imgtools.PollPolicy.fast())
    async with client:
        handle = await client.begin_import(location, name="async")
        assert isinstance(handle, imgtools.AsyncImportTask)
        task = await handle.wait()
        assert handle.image_id == task.image_id is not None
        assert (await client.get_image(task.image_id)).name == "async"
        resumed = await client.resume(task.id)
        assert isinstance(resumed, imgtools.AsyncImportTask)
        with pytest.raises(ImportSourceNotFound):
            await client.import_(f"{fresh_container()}/none.vhd", name="x")
        bad = upload(emu, fresh_container(), "bad.vhd", b"x" * 1024, region="DFW")
        with pytest.raises(ImportFailed) as info:
            await client.import_(bad, name="bad")
        assert info.value.failure is ImportFailure.NOT_VHD

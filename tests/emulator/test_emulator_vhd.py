"""The emulator's images are real VHDs: ``qemu-img`` reads an exported object, and converts
it, and imports refuse broken VHDs with Rackspace's error codes in their wire form.

``qemu-img`` (Debian's qemu-utils) is required, not optional: .ci/run installs it.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from imgtools.emulator import EmulatorHandle
from imgtools.emulator.vhd import DIFFERENCING, FIXED, make_footer
from tests.emulator.helpers import Api


@pytest.fixture(scope="module")
def emu(emulator_in_process: EmulatorHandle) -> EmulatorHandle:
    """This module's emulator: the emulator tests' one, in this process (tests/conftest.py)."""
    return emulator_in_process



def _qemu_img(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("qemu-img")
    assert tool is not None, "qemu-img is required (Debian: apt-get install qemu-utils)"
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=60)


def _disk_of(vhd: bytes) -> bytes:
    """The virtual disk of a dynamic VHD, read through its block allocation table."""
    assert vhd[:8] == b"conectix" and vhd[-512:] == vhd[:512]
    size, = struct.unpack_from(">Q", vhd, 48)
    table, _version, entries, block = struct.unpack_from(">QIII", vhd, 512 + 16)
    bitmap = max(512, -(-block // 512 // 8 // 512) * 512)
    out = bytearray()
    for index in range(entries):
        sector, = struct.unpack_from(">I", vhd, table + 4 * index)
        start = sector * 512 + bitmap
        out += vhd[start:start + block]
    return bytes(out[:size])


@pytest.mark.parametrize("region_index", [0, 1], ids=["default region", "second region"])
def test_an_exported_object_is_a_vhd_qemu_img_reads_and_converts(
        emu: EmulatorHandle, tmp_path: Path, region_index: int) -> None:
    region = emu.regions[region_index]
    api = Api(emu)
    api.http.base_url = emu.region_url(region)  # type: ignore[assignment]
    try:
        image_id = emu.image_id("web", region=region)
        container = api.container()
        assert api.wait(api.export(image_id, container)["id"])["status"] == "success"
        exported = api.get(f"{api.account}/{container}/{image_id}.vhd").content
    finally:
        api.close()
    source = tmp_path / "export.vhd"
    source.write_bytes(exported)
    info = _qemu_img("info", "--output=json", str(source))
    assert info.returncode == 0 and info.stderr == "", info.stderr
    details: dict[str, Any] = json.loads(info.stdout)
    disk = _disk_of(exported)
    assert details["format"] == "vpc" and details["virtual-size"] == len(disk) > 0
    raw = tmp_path / "disk.raw"
    converted = _qemu_img("convert", "-f", "vpc", "-O", "raw", str(source), str(raw))
    assert converted.returncode == 0, converted.stderr
    assert raw.read_bytes() == disk
    qcow2 = tmp_path / "disk.qcow2"
    assert _qemu_img("convert", "-O", "qcow2", str(source), str(qcow2)).returncode == 0
    check = _qemu_img("check", "--output=json", str(qcow2))
    assert check.returncode == 0, check.stdout + check.stderr
    assert json.loads(check.stdout)["check-errors"] == 0


def _vhd(disk_type: int = FIXED, disk_uuid: uuid.UUID | None = None,
         size: int = 64 * 1024, footer_size: int | None = None) -> bytes:
    disk = bytes(range(256)) * (size // 256)
    the_uuid = disk_uuid if disk_uuid is not None else uuid.uuid4()
    return disk + make_footer(footer_size or size, the_uuid, disk_type)


@pytest.mark.parametrize("body, code", [
    (b"not a vhd" * 100, "396"),
    (_vhd(DIFFERENCING), "721"),
    (_vhd(5), "523"),
    (_vhd(FIXED, footer_size=41 * 1000**3), "413"),
    (_vhd(FIXED, uuid.UUID(int=0)), "614"),
])
def test_imports_refuse_broken_vhds_with_rackspaces_codes(api: Api, container: str,
                                                          body: bytes, code: str) -> None:
    assert api.http.put(f"{api.account}/{container}/in.vhd", content=body).status_code == 201
    r = api.post_task("import", import_from=f"{container}/in.vhd", import_from_format="vhd",
                      image_properties={"name": "broken"})
    assert r.status_code == 201
    done = api.wait(r.json()["id"])
    assert done["status"] == "failure"
    assert done["message"] == f"Image cannot be imported. Error code: '{code}'"


def test_a_fixed_vhd_imports_and_reads_back(api: Api, container: str, tmp_path: Path) -> None:
    body = _vhd(FIXED, size=128 * 1024)
    assert api.http.put(f"{api.account}/{container}/fixed.vhd", content=body).status_code == 201
    r = api.post_task("import", import_from=f"{container}/fixed.vhd", import_from_format="vhd",
                      image_properties={"name": "fixed"})
    done = api.wait(r.json()["id"])
    assert done["status"] == "success", done["message"]
    data = api.image_bytes(done["result"]["image_id"])
    assert data == body
    path = tmp_path / "fixed.vhd"
    path.write_bytes(data)
    info = _qemu_img("info", "-f", "vpc", "--output=json", str(path))
    assert info.returncode == 0 and info.stderr == "", info.stderr
    assert json.loads(info.stdout)["virtual-size"] == 128 * 1024

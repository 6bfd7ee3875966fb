"""``download_export(..., convert=...)`` and ``imgtools download --convert`` against the
emulator (whose exports are real dynamic VHDs), with the real qemu-img."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import imgtools
from imgtools import ConfigurationError, ConversionError, Task
from imgtools._convert import convert_vhd
from imgtools.cli import EXIT_BAD_INPUT, EXIT_OK, EXIT_SERVICE, main
from imgtools.emulator import EmulatorHandle
from tests.client_support import WEB, AsyncRecorder, Recorder, fresh_container, make_client


@pytest.fixture(scope="module")
def emu(emulator_in_subprocess: EmulatorHandle) -> EmulatorHandle:
    """This module's emulator: the client tests' one, in a subprocess (tests/conftest.py)."""
    return emulator_in_subprocess


QEMU_IMG = shutil.which("qemu-img")
assert QEMU_IMG is not None, "qemu-img is required (Debian: apt-get install qemu-utils)"


def _qemu_img(*args: str) -> subprocess.CompletedProcess[str]:
    assert QEMU_IMG is not None
    return subprocess.run([QEMU_IMG, *args], capture_output=True, text=True, timeout=60,
                          check=False)


def _export(client: imgtools.Client) -> Task:
    return client.export(WEB, fresh_container("cv"), create_container=True, timeout=60)


def _image_md5(client: imgtools.Client) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    for chunk in client.image_file(WEB):
        digest.update(chunk)
    return digest.hexdigest()


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def _without_qemu_img(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def test_raw_is_the_virtual_disk_qemu_img_itself_reads(client: imgtools.Client,
                                                       tmp_path: Path) -> None:
    task = _export(client)
    dest = tmp_path / "web.vhd"
    result = client.download_export(task, dest, progress=False, convert="raw")
    assert result.path == dest and result.converted == tmp_path / "web.raw"
    assert _md5(dest) == _image_md5(client)  # the VHD is kept, as downloaded
    reference = tmp_path / "reference.raw"
    done = _qemu_img("convert", "-f", "vpc", "-O", "raw", str(dest), str(reference))
    assert done.returncode == 0, done.stderr
    assert result.converted.read_bytes() == reference.read_bytes()
    info = json.loads(_qemu_img("info", "--output=json", str(dest)).stdout)
    assert result.converted.stat().st_size == info["virtual-size"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reference.raw", "web.raw", "web.vhd"]


def test_qcow2_passes_check_and_holds_the_same_disk(client: imgtools.Client,
                                                    tmp_path: Path) -> None:
    task = _export(client)
    result = client.download_export(task, tmp_path / "disk", progress=False, convert="qcow2")
    assert result.converted == tmp_path / "disk.qcow2"
    check = _qemu_img("check", "--output=json", str(result.converted))
    assert check.returncode == 0, check.stdout + check.stderr
    assert json.loads(check.stdout)["check-errors"] == 0
    info = json.loads(_qemu_img("info", "--output=json", str(result.converted)).stdout)
    assert info["format"] == "qcow2"
    same = _qemu_img("compare", "-f", "vpc", "-F", "qcow2", str(result.path),
                     str(result.converted))
    assert same.returncode == 0, same.stdout + same.stderr


def test_async_client_converts_too(emu: EmulatorHandle, tmp_path: Path) -> None:
    import asyncio

    async def go() -> Path | None:
        async with imgtools.AsyncClient(username="demo", api_key="demo-key",
                                        identity_url=emu.identity_url, log=False,
                                        poll=imgtools.PollPolicy.fast()) as aclient:
            task = await aclient.export(WEB, fresh_container("acv"), create_container=True,
                                        timeout=60)
            result = await aclient.download_export(task, tmp_path / "a.vhd", convert="raw")
            return result.converted

    converted = asyncio.run(go())
    assert converted == tmp_path / "a.raw"
    info = json.loads(_qemu_img("info", "--output=json", str(tmp_path / "a.vhd")).stdout)
    assert converted.stat().st_size == info["virtual-size"]


def test_no_qemu_img_is_a_configuration_error_before_any_request(
        emu: EmulatorHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = Recorder()
    with make_client(emu, transport=recorder) as client:
        task = _export(client)
        _without_qemu_img(monkeypatch, tmp_path)
        before = len(recorder.requests)
        with pytest.raises(ConfigurationError, match="qemu-img"):
            client.download_export(task, tmp_path / "x.vhd", progress=False, convert="qcow2")
        with pytest.raises(ConfigurationError, match="qemu-img"):
            client.files.download_export(task.export_location or "", tmp_path / "y.vhd",
                                         convert="raw")
        assert len(recorder.requests) == before
    assert not (tmp_path / "x.vhd").exists() and not (tmp_path / "y.vhd").exists()


def test_async_no_qemu_img_sends_nothing(emu: EmulatorHandle, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    recorder = AsyncRecorder()

    async def go() -> None:
        async with imgtools.AsyncClient(username="demo", api_key="demo-key",
                                        identity_url=emu.identity_url, log=False,
                                        transport=recorder) as aclient:
            _without_qemu_img(monkeypatch, tmp_path)
            before = len(recorder.requests)
            with pytest.raises(ConfigurationError, match="qemu-img"):
                await aclient.download_export("0" * 8 + "-0000-4000-8000-" + "0" * 12,
                                              tmp_path / "z.vhd", convert="raw")
            assert len(recorder.requests) == before

    asyncio.run(go())


def test_unknown_format_is_a_validation_error(client: imgtools.Client, tmp_path: Path) -> None:
    with pytest.raises(imgtools.ValidationError, match="convert"):
        client.download_export("any", tmp_path / "x.vhd", convert="vmdk")


def _failing_qemu_img(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # qemu-img as installed, except that ``convert`` fails as it does on a full disk: a
    # failure the emulator cannot cause, since the VHD it serves is valid.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "qemu-img"
    tool.write_text(f'#!/bin/sh\nif [ "$1" = convert ]; then\n'
                    f'  echo "qemu-img: error while writing sector 0: No space left on device"'
                    f' >&2\n  exit 1\nfi\nexec {QEMU_IMG} "$@"\n')
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")


def test_failed_conversion_keeps_the_vhd(client: imgtools.Client, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    task = _export(client)
    _failing_qemu_img(tmp_path, monkeypatch)
    dest = tmp_path / "out" / "web.vhd"
    with pytest.raises(ConversionError, match="No space left") as caught:
        client.download_export(task, dest, progress=False, convert="raw")
    assert caught.value.path == str(dest)
    assert _md5(dest) == _image_md5(client)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["web.vhd"]


def test_damaged_vhd_is_a_conversion_error(tmp_path: Path) -> None:
    vhd = tmp_path / "bad.vhd"
    vhd.write_bytes(b"not a vhd" * 1000)
    with pytest.raises(ConversionError) as caught:
        convert_vhd(vhd, "qcow2")
    assert caught.value.path == str(vhd) and vhd.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.vhd"]


# -- the command line ---------------------------------------------------------------------------


def test_cli_download_convert(as_demo: EmulatorHandle, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    with make_client(as_demo) as client:
        task = _export(client)
    out = io.StringIO()
    code = main(["download", task.id, str(tmp_path / "web.vhd"), "--no-progress",
                 "--convert", "qcow2"], out=out)
    assert code == EXIT_OK, capsys.readouterr().err
    assert f"{tmp_path / 'web.qcow2'}: qcow2" in out.getvalue()
    assert _qemu_img("check", str(tmp_path / "web.qcow2")).returncode == 0


def test_cli_convert_errors(as_demo: EmulatorHandle, tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str]) -> None:
    with make_client(as_demo) as client:
        task = _export(client)
    code = main(["download", task.id, str(tmp_path / "a.vhd"), "--convert", "vmdk"],
                out=io.StringIO())
    assert code == EXIT_BAD_INPUT
    _failing_qemu_img(tmp_path, monkeypatch)
    code = main(["download", task.id, str(tmp_path / "a.vhd"), "--no-progress",
                 "--convert", "raw"], out=io.StringIO())
    err = capsys.readouterr().err
    assert code == EXIT_SERVICE and "ConversionError" in err and "a.vhd" in err
    assert (tmp_path / "a.vhd").exists() and not (tmp_path / "a.raw").exists()
    _without_qemu_img(monkeypatch, tmp_path)
    code = main(["download", task.id, str(tmp_path / "b.vhd"), "--convert", "raw"],
                out=io.StringIO())
    assert code == EXIT_BAD_INPUT and "qemu-img" in capsys.readouterr().err
    assert not (tmp_path / "b.vhd").exists()

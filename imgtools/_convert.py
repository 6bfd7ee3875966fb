"""Turning a downloaded export (a dynamic VHD) into a raw or qcow2 disk with ``qemu-img``.

The converted file is written beside the destination under a temporary name, checked
(``qemu-img info``: the format asked for and the VHD's virtual size; ``qemu-img check`` for
qcow2), and only then renamed into place, so its name never points at half a disk. When the
conversion fails the VHD stays where it is and nothing is left at the converted name.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, get_args

from imgtools._exceptions import ConfigurationError, ConversionError, ValidationError

__all__ = ["CONVERT_FORMATS", "ConvertFormat", "Converted", "check_convert", "convert_vhd",
           "converted_path", "find_qemu_img"]

ConvertFormat = Literal["qcow2", "raw"]
#: The formats ``download_export(convert=...)`` produces.
CONVERT_FORMATS: Final[tuple[str, ...]] = get_args(ConvertFormat)
#: The format of an export, as qemu-img names it.
SOURCE_FORMAT: Final = "vpc"
#: Seconds one ``qemu-img info``/``check`` may take (they read headers and tables only).
INSPECT_TIMEOUT: Final = 300.0
#: Seconds the conversion itself may take; ``None``: as long as the disk needs.
CONVERT_TIMEOUT: Final[float | None] = None
#: Added to the destination's name while the converted file is being written.
TEMP_SUFFIX: Final = ".converting"
#: How Debian and most distributions package qemu-img, named in the error when it is absent.
QEMU_IMG_PACKAGE: Final = "qemu-utils"


@dataclass(frozen=True, slots=True)
class Converted:
    """A finished, checked conversion: the file, its format and its virtual size (bytes)."""

    path: Path
    format: str
    virtual_size: int


def find_qemu_img() -> str:
    """The path of ``qemu-img`` on ``PATH``; ``ConfigurationError`` when it is not there."""
    tool = shutil.which("qemu-img")
    if tool is None:
        raise ConfigurationError(
            "converting a download needs qemu-img, which is not on PATH (Debian/Ubuntu: "
            f"apt-get install {QEMU_IMG_PACKAGE}; macOS: brew install qemu)")
    return tool


def check_convert(convert: str | None) -> str | None:
    """Validate a ``convert=`` option before anything is downloaded: ``None`` (no conversion)
    or one of ``CONVERT_FORMATS`` with ``qemu-img`` present. Returns qemu-img's path."""
    if convert is None:
        return None
    if convert not in CONVERT_FORMATS:
        raise ValidationError(
            f"convert must be one of {', '.join(CONVERT_FORMATS)} or None, got {convert!r}",
            field="convert", problems=("unknown format",))
    return find_qemu_img()


def converted_path(vhd: Path, fmt: str) -> Path:
    """``disk.vhd`` -> ``disk.qcow2``; a name without ``.vhd`` gets the format appended."""
    if vhd.suffix.lower() == ".vhd":
        return vhd.with_suffix("." + fmt)
    return vhd.with_name(f"{vhd.name}.{fmt}")


def _run(args: list[str], *, timeout: float | None, vhd: Path,
         what: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        raise ConversionError(f"{what} took longer than {timeout} s; {vhd} is kept",
                              path=str(vhd)) from None
    except OSError as exc:
        raise ConversionError(f"{what} could not run ({exc}); {vhd} is kept",
                              path=str(vhd)) from None


def _info(tool: str, path: Path, fmt: str, vhd: Path) -> dict[str, Any]:
    done = _run([tool, "info", "--output=json", "-f", fmt, str(path)], timeout=INSPECT_TIMEOUT,
                vhd=vhd, what=f"qemu-img info of {path.name}")
    if done.returncode != 0:
        raise ConversionError(f"qemu-img cannot read {path} as {fmt}: "
                              f"{done.stderr.strip() or done.returncode}; {vhd} is kept",
                              path=str(vhd))
    try:
        data = json.loads(done.stdout)
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("virtual-size"), int):
        raise ConversionError(f"qemu-img info of {path} gave no virtual size; {vhd} is kept",
                              path=str(vhd))
    return data


def convert_vhd(vhd: str | os.PathLike[str], fmt: str, *,
                dest: str | os.PathLike[str] | None = None,
                qemu_img: str | None = None) -> Converted:
    """Convert the VHD at ``vhd`` to ``fmt`` (``raw`` or ``qcow2``) at ``dest`` (default:
    ``converted_path(vhd, fmt)``), checked before it gets its name. The VHD is left as it is.

    ``ConfigurationError`` without qemu-img; ``ConversionError`` (``.path``: the VHD) when the
    VHD cannot be read or converted, or the result is not the format and size it should be.
    """
    tool = qemu_img or check_convert(fmt)
    assert tool is not None  # check_convert returns a path for every format
    source = Path(vhd)
    target = Path(dest) if dest is not None else converted_path(source, fmt)
    size = _info(tool, source, SOURCE_FORMAT, source)["virtual-size"]
    temp = target.with_name(target.name + TEMP_SUFFIX)
    try:
        done = _run([tool, "convert", "-f", SOURCE_FORMAT, "-O", fmt, str(source), str(temp)],
                    timeout=CONVERT_TIMEOUT, vhd=source, what="qemu-img convert")
        if done.returncode != 0:
            raise ConversionError(f"qemu-img convert of {source} to {fmt} failed: "
                                  f"{done.stderr.strip() or done.returncode}; the VHD is kept",
                                  path=str(source))
        info = _info(tool, temp, fmt, source)
        if info.get("format") != fmt or info["virtual-size"] != size:
            raise ConversionError(
                f"qemu-img made a {info.get('format')} disk of {info['virtual-size']} bytes, "
                f"not {fmt} of {size} bytes (the VHD's virtual size); the VHD is kept",
                path=str(source))
        if fmt == "qcow2":
            checked = _run([tool, "check", "-f", fmt, str(temp)], timeout=INSPECT_TIMEOUT,
                           vhd=source, what="qemu-img check")
            if checked.returncode != 0:
                raise ConversionError(
                    f"qemu-img check of the converted disk failed "
                    f"({(checked.stdout + checked.stderr).strip()}); the VHD is kept",
                    path=str(source))
        os.replace(temp, target)
    finally:
        with contextlib.suppress(OSError):  # best effort: not ours if it is not a file
            temp.unlink()
    return Converted(path=target, format=fmt, virtual_size=size)

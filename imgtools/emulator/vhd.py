"""A minimal VHD footer: seeded images end with one, imports check it (Rackspace error codes)."""

from __future__ import annotations

import struct
import uuid

__all__ = ["FOOTER_SIZE", "VhdProblem", "check_footer", "make_footer"]

FOOTER_SIZE = 512
COOKIE = b"conectix"
FIXED, DYNAMIC, DIFFERENCING = 2, 3, 4
MAX_IMPORT_SIZE = 40 * 1000**3  # Rackspace's 40 GB import limit


class VhdProblem(ValueError):
    """Why an import is refused; ``code`` is the Rackspace error code (``'396'``...)."""

    def __init__(self, code: str) -> None:
        super().__init__(f"Image cannot be imported. Error code: '{code}'")
        self.code = code


def make_footer(disk_size: int, disk_uuid: uuid.UUID, disk_type: int = FIXED) -> bytes:
    """The 512-byte footer of a fixed (or dynamic) VHD of ``disk_size`` bytes."""
    body = bytearray(FOOTER_SIZE)
    struct.pack_into(">8sIIQI4sI4sQQIII16sB", body, 0, COOKIE, 2, 0x00010000,
                     0xFFFFFFFFFFFFFFFF, 0, b"imgt", 0x00010000, b"Wi2k", disk_size, disk_size,
                     0, disk_type, 0, disk_uuid.bytes, 0)
    checksum = (~sum(body)) & 0xFFFFFFFF
    struct.pack_into(">I", body, 64, checksum)
    return bytes(body)


def check_footer(footer: bytes, total_size: int) -> None:
    """Raise ``VhdProblem`` unless ``footer`` (the last 512 bytes) is an importable VHD's."""
    if len(footer) < FOOTER_SIZE or footer[:8] != COOKIE:
        raise VhdProblem("396")
    current_size, = struct.unpack_from(">Q", footer, 48)
    disk_type, = struct.unpack_from(">I", footer, 60)
    disk_uuid = footer[68:84]
    if disk_type == DIFFERENCING:
        raise VhdProblem("721")
    if disk_type not in (FIXED, DYNAMIC):
        raise VhdProblem("523")
    if current_size > MAX_IMPORT_SIZE:
        raise VhdProblem("413")
    if total_size > MAX_IMPORT_SIZE:
        raise VhdProblem("609")
    if disk_uuid == bytes(16):
        raise VhdProblem("614")

"""VHD images: seeded images are dynamic VHDs that ``qemu-img`` opens; imports check the
footer and refuse with Rackspace's error codes.

A dynamic VHD (the kind XenServer, and so Rackspace, writes): a copy of the footer, the
dynamic header, the block allocation table (BAT), the blocks (a sector bitmap, then the
data), and the footer at the end. The creator application is ``tap``, XenServer's, for which
readers take the disk size from the footer rather than from the CHS geometry.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from collections.abc import Callable, Iterator

__all__ = ["BLOCK_SIZE", "FOOTER_SIZE", "Fill", "VhdProblem", "check_footer", "dynamic_vhd",
           "make_footer", "seeded_fill", "seeded_vhd", "vhd_pieces"]

FOOTER_SIZE = 512
HEADER_SIZE = 1024
SECTOR = 512
COOKIE = b"conectix"
HEADER_COOKIE = b"cxsparse"
FIXED, DYNAMIC, DIFFERENCING = 2, 3, 4
#: Blocks of the seeded images. Real VHDs use 2 MiB; small blocks keep small demo images
#: (a few hundred KiB) mostly data, and any power of two is valid (smaller images get
#: smaller blocks).
BLOCK_SIZE = 64 * 1024
MAX_IMPORT_SIZE = 40 * 1000**3  # Rackspace's 40 GB import limit
#: 2000-01-01T00:00:00Z, the VHD epoch.
VHD_EPOCH = 946684800
_NO_OFFSET = 0xFFFFFFFFFFFFFFFF
_UNUSED = 0xFFFFFFFF


class VhdProblem(ValueError):
    """Why an import is refused; ``code`` is the Rackspace error code (``'396'``...)."""

    def __init__(self, code: str) -> None:
        super().__init__(f"Image cannot be imported. Error code: '{code}'")
        self.code = code


def _checksum(data: bytearray, at: int) -> None:
    struct.pack_into(">I", data, at, (~sum(data)) & 0xFFFFFFFF)


def geometry(disk_size: int) -> int:
    """The CHS geometry field of the VHD specification (appendix: CHS calculation)."""
    sectors = min(disk_size // SECTOR, 65535 * 16 * 255)
    if sectors >= 65535 * 16 * 63:
        per_track, heads = 255, 16
        cylinder_heads = sectors // per_track
    else:
        per_track = 17
        cylinder_heads = sectors // per_track
        heads = max(4, (cylinder_heads + 1023) // 1024)
        if cylinder_heads >= heads * 1024 or heads > 16:
            per_track, heads = 31, 16
            cylinder_heads = sectors // per_track
        if cylinder_heads >= heads * 1024:
            per_track, heads = 63, 16
            cylinder_heads = sectors // per_track
    return ((cylinder_heads // heads) << 16) | (heads << 8) | per_track


def make_footer(disk_size: int, disk_uuid: uuid.UUID, disk_type: int = FIXED, *,
                timestamp: int = 0) -> bytes:
    """The 512-byte footer of a fixed, dynamic (or, for tests, any type of) VHD whose disk
    holds ``disk_size`` bytes; a dynamic disk's header follows the footer copy at 512."""
    body = bytearray(FOOTER_SIZE)
    data_offset = _NO_OFFSET if disk_type == FIXED else FOOTER_SIZE
    struct.pack_into(">8sIIQI4sI4sQQIII16sB", body, 0, COOKIE, 2, 0x00010000, data_offset,
                     timestamp, b"tap\0", 0x00010003, b"Wi2k", disk_size, disk_size,
                     geometry(disk_size), disk_type, 0, disk_uuid.bytes, 0)
    _checksum(body, 64)
    return bytes(body)


def _dynamic_header(table_offset: int, entries: int, block_size: int) -> bytes:
    header = bytearray(HEADER_SIZE)
    struct.pack_into(">8sQQIIII", header, 0, HEADER_COOKIE, _NO_OFFSET, table_offset,
                     0x00010000, entries, block_size, 0)
    _checksum(header, 36)
    return bytes(header)


def _bitmap_size(block_size: int) -> int:
    """A block's sector bitmap: one bit per sector, padded to whole sectors."""
    return -(-block_size // SECTOR // 8 // SECTOR) * SECTOR


def _layout(total: int, block_size: int) -> tuple[int, int]:
    """``(blocks, table bytes)``: the most whole blocks a ``total``-byte file can hold."""
    per_block = _bitmap_size(block_size) + block_size
    fixed = FOOTER_SIZE + HEADER_SIZE + FOOTER_SIZE
    blocks = max(0, (total - fixed - SECTOR) // per_block)
    while blocks:
        table = -(-4 * blocks // SECTOR) * SECTOR
        if fixed + table + blocks * per_block <= total:
            return blocks, table
        blocks -= 1
    return 0, SECTOR


def _block_size(total: int) -> int:
    """``BLOCK_SIZE``, or a smaller power of two for a small image (at least 8 blocks)."""
    size = BLOCK_SIZE
    while size > SECTOR and _layout(total, size)[0] < 8:
        size //= 2
    return size


#: The smallest dynamic VHD with data: footer copy, header, table, one 512-byte block and its
#: bitmap, footer. Smaller images are fixed VHDs.
MIN_DYNAMIC_SIZE = FOOTER_SIZE + HEADER_SIZE + SECTOR + 2 * SECTOR + FOOTER_SIZE

#: ``fill(index, size)``: the ``size`` data bytes of block ``index`` (index 0 and the whole disk
#: for a fixed VHD).
Fill = Callable[[int, int], bytes]


def seeded_fill(key: str) -> Fill:
    """Deterministic incompressible bytes per block (SHAKE-128: several times faster than
    ``random.randbytes``, and any block can be made without the ones before it)."""
    def fill(index: int, size: int) -> bytes:
        return hashlib.shake_128(f"{key}:{index}".encode()).digest(size)
    return fill


def vhd_pieces(total: int, disk_uuid: uuid.UUID, fill: Fill, timestamp: int = 0
               ) -> Iterator[bytes]:
    """The bytes of a VHD of exactly ``total`` bytes (at least 1024), in pieces (so a large
    image never sits whole in memory): dynamic, or fixed when too small for a dynamic one
    (qemu-img then reads it only if ``total`` is whole sectors)."""
    if total < MIN_DYNAMIC_SIZE:
        # The disk is whole sectors; a few bytes over them lie unused before the footer.
        disk = (total - FOOTER_SIZE) // SECTOR * SECTOR
        yield fill(0, total - FOOTER_SIZE)
        yield make_footer(disk, disk_uuid, FIXED, timestamp=timestamp)
        return
    yield from _dynamic_pieces(total, disk_uuid, fill, timestamp)


def _dynamic_pieces(total: int, disk_uuid: uuid.UUID, fill: Fill, timestamp: int
                    ) -> Iterator[bytes]:
    block_size = _block_size(total)
    blocks, table = _layout(total, block_size)
    if blocks == 0:
        raise ValueError(f"a dynamic VHD with data needs more than {total} bytes")
    bitmap = _bitmap_size(block_size)
    used_bits = block_size // SECTOR // 8
    footer = make_footer(blocks * block_size, disk_uuid, DYNAMIC, timestamp=timestamp)
    table_offset = FOOTER_SIZE + HEADER_SIZE
    first_block = table_offset + table
    bat = bytearray(b"\xff" * table)
    for index in range(blocks):
        struct.pack_into(">I", bat, 4 * index,
                         (first_block + index * (bitmap + block_size)) // SECTOR)
    yield footer + _dynamic_header(table_offset, blocks, block_size) + bytes(bat)
    full_bitmap = b"\xff" * used_bits + bytes(bitmap - used_bits)
    for index in range(blocks):
        yield full_bitmap + fill(index, block_size)
    yield bytes(total - first_block - blocks * (bitmap + block_size) - FOOTER_SIZE) + footer


def seeded_vhd(total: int, disk_uuid: uuid.UUID, fill: Fill, timestamp: int = 0) -> bytes:
    """``vhd_pieces`` joined: the whole VHD."""
    data = b"".join(vhd_pieces(total, disk_uuid, fill, timestamp))
    assert len(data) == total
    return data


def dynamic_vhd(total: int, disk_uuid: uuid.UUID, fill: Fill, timestamp: int = 0) -> bytes:
    """A dynamic VHD of exactly ``total`` bytes whose disk is as many whole blocks of
    ``fill``'s bytes as fit; any room left over lies unused before the footer."""
    data = b"".join(_dynamic_pieces(total, disk_uuid, fill, timestamp))
    assert len(data) == total
    return data


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

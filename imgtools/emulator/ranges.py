"""HTTP ``Range`` parsing and file streaming (image downloads and Swift objects)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

__all__ = ["CHUNK", "UNSATISFIABLE", "iter_file", "parse_range"]

CHUNK = 1024 * 1024
UNSATISFIABLE = "unsatisfiable"


def parse_range(header: str | None, size: int) -> list[tuple[int, int]] | str | None:
    """Byte ranges as inclusive ``(first, last)`` pairs clipped to ``size``.

    ``None`` means serve the whole body (no header, or one Swift would ignore as malformed);
    ``UNSATISFIABLE`` means 416.
    """
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or not spec.strip():
        return None
    wanted: list[tuple[int, int]] = []
    for part in spec.split(","):
        first_text, dash, last_text = part.strip().partition("-")
        if not dash:
            return None
        first_text, last_text = first_text.strip(), last_text.strip()
        try:
            if not first_text:
                suffix = int(last_text)  # bytes=-N: the last N bytes
                if suffix < 0:
                    return None
                if suffix == 0:
                    continue
                wanted.append((max(0, size - suffix), size - 1))
                continue
            first = int(first_text)
            last = int(last_text) if last_text else size - 1
        except ValueError:
            return None
        if first < 0 or (last_text and last < first):
            return None  # malformed: Swift ignores the header
        if first >= size:
            continue  # unsatisfiable part
        wanted.append((first, min(last, size - 1)))
    if not wanted:
        return UNSATISFIABLE
    return wanted


def iter_file(path: Path, start: int = 0, length: int | None = None) -> Iterator[bytes]:
    """Read ``length`` bytes from ``start`` in chunks (a short file just ends early)."""
    with open(path, "rb") as handle:
        handle.seek(start)
        remaining = length
        while remaining is None or remaining > 0:
            size = CHUNK if remaining is None else min(CHUNK, remaining)
            chunk = handle.read(size)
            if not chunk:
                return
            if remaining is not None:
                remaining -= len(chunk)
            yield chunk

"""The emulator's object writer: bytes, ETag, and the page-cache advice on large objects."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest

from imgtools.emulator import objects
from imgtools.emulator.objects import DROP_CACHE_EVERY, DROP_CACHE_WINDOW, ObjectWriter
from imgtools.emulator.store import Store

MiB = 1024 * 1024


def _chunks(total: int, size: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    while total > 0:
        n = min(size, total)
        out.append(rng.randbytes(n))
        total -= n
    return out


@pytest.fixture
def advice(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, int]]:
    """Every ``posix_fadvise`` the writer makes, passed on to the real one."""
    calls: list[tuple[int, int, int]] = []
    real = os.posix_fadvise

    def record(fd: int, offset: int, length: int, advice: int) -> None:
        calls.append((offset, length, advice))
        real(fd, offset, length, advice)

    monkeypatch.setattr(objects.os, "posix_fadvise", record)
    return calls


def test_a_large_object_is_advised_out_of_the_cache_as_it_is_written(
        tmp_path: Path, advice: list[tuple[int, int, int]]) -> None:
    total = 3 * DROP_CACHE_WINDOW // 2 + 3 * MiB  # past the window, not a multiple of anything
    chunks = _chunks(total, MiB, seed=20261201)
    writer = ObjectWriter(Store(tmp_path))
    for chunk in chunks:
        writer.write(chunk)
    row = writer.commit("acct", "c", "big", 0.0)

    data = b"".join(chunks)
    assert row.size == total
    assert row.etag == hashlib.md5(data).hexdigest()
    assert writer.path.read_bytes() == data
    assert advice, f"no advice for an object of {total} bytes"
    assert {a for _, _, a in advice} == {os.POSIX_FADV_DONTNEED}
    # One advice per DROP_CACHE_EVERY bytes, each reaching back one window and up to what
    # was written then: every written byte but the last few MiB is advised at least once.
    assert len(advice) == total // DROP_CACHE_EVERY
    covered_to = 0
    for offset, length, _ in advice:
        assert offset <= covered_to
        assert offset >= covered_to - DROP_CACHE_WINDOW - DROP_CACHE_EVERY
        covered_to = offset + length
    assert total - covered_to < DROP_CACHE_EVERY


def test_a_small_object_stays_in_the_cache(tmp_path: Path,
                                           advice: list[tuple[int, int, int]]) -> None:
    chunks = _chunks(DROP_CACHE_EVERY - 1, 64 * 1024, seed=7)
    writer = ObjectWriter(Store(tmp_path))
    writer.write_all(chunks)
    row = writer.commit("acct", "c", "small", 0.0)
    assert row.etag == hashlib.md5(b"".join(chunks)).hexdigest()
    assert advice == []


def test_a_failing_advice_never_fails_the_write(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(fd: int, offset: int, length: int, advice: int) -> None:
        raise OSError(22, "Invalid argument")  # as on a file system that takes no advice

    monkeypatch.setattr(objects.os, "posix_fadvise", refuse)
    chunks = _chunks(2 * DROP_CACHE_EVERY + 5, MiB, seed=11)
    writer = ObjectWriter(Store(tmp_path))
    writer.write_all(chunks)
    row = writer.commit("acct", "c", "obj", 0.0)
    assert row.size == 2 * DROP_CACHE_EVERY + 5
    assert writer.path.read_bytes() == b"".join(chunks)

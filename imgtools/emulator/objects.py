"""Object-level Cloud Files logic shared by the Swift routes and the task handlers:
writing objects from bytes, and Dynamic Large Object (DLO) resolution."""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from imgtools.emulator.store import ObjectRow, Store

__all__ = ["Dlo", "ObjectWriter", "resolve_dlo"]

#: Swift's container listing page; a DLO with more segments gets no Content-Length/ETag.
LISTING_LIMIT = 10000
#: Bytes written between two advices to drop what is already on disk from the page cache.
#: Swift's object server also drops what it has written as it goes (``drop_buffer_cache``
#: after each ``mb_per_sync``), so that large uploads do not push everything else out of
#: memory. It can also save CPU: on this VM, filling pages the kernel has not used lately
#: cost about 2.5 CPU-s per GiB written, against 0.6 when it recycles pages it has just
#: written back. Under ``perf``, three 1 GiB PUT loads into new containers (none deleted) spent
#: 34% of the emulator's CPU copying into the page cache before, 5% after; where objects are
#: deleted as fast as they come (``benchmarks/transfer.py`` clears each round's copy) the
#: kernel recycles their pages anyway and the CPU is the same. Objects smaller than this are
#: never advised, as Swift keeps small ones cached (``keep_cache_size``).
DROP_CACHE_EVERY = 8 * 1024 * 1024
#: How far back each advice reaches: pages still dirty at one advice are written back soon
#: after (the advice starts that) and dropped by one of the next.
DROP_CACHE_WINDOW = 64 * 1024 * 1024


class ObjectWriter:
    """Write an object's bytes incrementally, hashing as it goes, then commit it."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.path = store.new_object_file()
        self._handle = open(self.path, "wb")  # noqa: SIM115 - closed in commit/abort
        self._md5 = hashlib.md5()
        self.size = 0
        self._advised = 0  # bytes up to which the page cache was last advised

    def write(self, data: bytes) -> None:
        self._handle.write(data)
        self._md5.update(data)
        self.size += len(data)
        if self.size - self._advised >= DROP_CACHE_EVERY:
            self._drop_cache()

    def _drop_cache(self) -> None:
        """Advise the kernel to drop this file's written-back pages (dirty ones are sent to
        disk by the advice, and dropped by a later one)."""
        self._handle.flush()
        start = max(0, self._advised - DROP_CACHE_WINDOW)
        with contextlib.suppress(OSError, AttributeError):  # an advice: never worth failing
            os.posix_fadvise(self._handle.fileno(), start, self.size - start,
                             os.POSIX_FADV_DONTNEED)
        self._advised = self.size

    def write_all(self, chunks: list[bytes]) -> None:
        """``write`` each of ``chunks``: one call for a worker thread (the MD5 and the file
        write release the GIL, so the event loop keeps reading the socket meanwhile)."""
        for data in chunks:
            self.write(data)

    @property
    def etag(self) -> str:
        return self._md5.hexdigest()

    def commit(self, account: str, container: str, name: str, now: float, *,
               content_type: str = "application/octet-stream", manifest: str | None = None,
               meta: dict[str, str] | None = None, delete_at: float | None = None) -> ObjectRow:
        self._handle.close()
        row = ObjectRow(account, container, name, self.size, self.etag, content_type, now,
                        manifest, dict(meta or {}), delete_at, self.store.relative(self.path))
        self.store.put_object(row)
        return row

    def abort(self) -> None:
        self._handle.close()
        self.path.unlink(missing_ok=True)


@dataclass(frozen=True, slots=True)
class Dlo:
    """The segments a manifest stands for, in name order."""

    segments: list[ObjectRow]
    complete: bool  # the first listing page held every segment

    @property
    def size(self) -> int:
        return sum(s.size for s in self.segments)

    @property
    def etag(self) -> str:
        # Swift: quoted MD5 of the concatenated segment ETags, not of the content.
        joined = "".join(s.etag for s in self.segments)
        return '"' + hashlib.md5(joined.encode()).hexdigest() + '"'

    def paths(self, store: Store) -> list[tuple[Path, int]]:
        return [(store.object_path(s), s.size) for s in self.segments]


def resolve_dlo(store: Store, account: str, manifest: str, now: float) -> Dlo:
    """List ``<container>/<prefix>`` as Swift's DLO middleware does (paged by marker)."""
    container, _, prefix = manifest.partition("/")
    segments: list[ObjectRow] = []
    marker = ""
    complete = True
    while True:
        page = store.list_objects(account, container, now, prefix=prefix, marker=marker,
                                  limit=LISTING_LIMIT)
        segments.extend(page)
        if len(page) < LISTING_LIMIT:
            break
        complete = False
        marker = page[-1].name
    return Dlo(segments, complete)

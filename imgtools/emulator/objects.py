"""Object-level Cloud Files logic shared by the Swift routes and the task handlers:
writing objects from bytes, and Dynamic Large Object (DLO) resolution."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from imgtools.emulator.store import ObjectRow, Store

__all__ = ["Dlo", "ObjectWriter", "resolve_dlo"]

#: Swift's container listing page; a DLO with more segments gets no Content-Length/ETag.
LISTING_LIMIT = 10000


class ObjectWriter:
    """Write an object's bytes incrementally, hashing as it goes, then commit it."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.path = store.new_object_file()
        self._handle = open(self.path, "wb")  # noqa: SIM115 - closed in commit/abort
        self._md5 = hashlib.md5()
        self.size = 0

    def write(self, data: bytes) -> None:
        self._handle.write(data)
        self._md5.update(data)
        self.size += len(data)

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

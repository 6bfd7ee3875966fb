"""Persistent state: SQLite metadata (WAL) plus object and image bytes as files in the data dir.

One connection guarded by a lock serves the HTTP routes and the task worker; every query is
short (indexed, no ORM), so the lock is never held for long. Rows are plain tuples turned into
JSON-ready dicts by the route modules.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ImageRow", "ObjectRow", "Store", "TaskRow", "TokenRow"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY, username TEXT NOT NULL, tenant_id TEXT NOT NULL,
    roles TEXT NOT NULL, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY, owner TEXT, name TEXT, status TEXT NOT NULL, visibility TEXT NOT NULL,
    size INTEGER, checksum TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL,
    props TEXT NOT NULL, tags TEXT NOT NULL, file TEXT);
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, type TEXT NOT NULL, status TEXT NOT NULL,
    input TEXT, result TEXT, message TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL, updated_at REAL NOT NULL, expires_at REAL);
-- One index per list order a client asks for, each ending in created_at, id (the tie-breakers).
CREATE INDEX IF NOT EXISTS tasks_by_created ON tasks(owner, created_at, id);
CREATE INDEX IF NOT EXISTS tasks_by_status ON tasks(owner, status, created_at, id);
CREATE INDEX IF NOT EXISTS tasks_by_type ON tasks(owner, type, created_at, id);
CREATE INDEX IF NOT EXISTS tasks_by_updated ON tasks(owner, updated_at, created_at, id);
CREATE INDEX IF NOT EXISTS tasks_by_id ON tasks(owner, id);
-- The worker's queue: only unfinished tasks, so history never weighs on it.
CREATE INDEX IF NOT EXISTS tasks_work ON tasks(status, created_at)
    WHERE status IN ('pending', 'processing');
CREATE INDEX IF NOT EXISTS tasks_expiry ON tasks(expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS containers (
    account TEXT NOT NULL, name TEXT NOT NULL, created REAL NOT NULL, meta TEXT NOT NULL,
    PRIMARY KEY (account, name)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS objects (
    account TEXT NOT NULL, container TEXT NOT NULL, name TEXT NOT NULL, size INTEGER NOT NULL,
    etag TEXT NOT NULL, content_type TEXT NOT NULL, created REAL NOT NULL, manifest TEXT,
    meta TEXT NOT NULL, delete_at REAL, file TEXT NOT NULL,
    PRIMARY KEY (account, container, name)) WITHOUT ROWID;
"""

TASK_COLUMNS = "id, owner, type, status, input, result, message, created_at, updated_at, expires_at"
_LIVE = "(expires_at IS NULL OR expires_at > ?)"
# Glance's "2014-02-26T02:01:13Z", formatted by SQLite (whole seconds, as clock.iso_z).
# Truncate as iso_z does: SQLite would round 13.9996 s up to 14 s, Python shows 13.
_ISO = "strftime('%Y-%m-%dT%H:%M:%SZ', CAST({} AS INTEGER), 'unixepoch')"
_STUB = ("'id', id, 'type', type, 'status', status, 'owner', owner, "
         f"'created_at', {_ISO.format('created_at')}, 'updated_at', {_ISO.format('updated_at')}, "
         "'self', '/v2/tasks/' || id, 'schema', '/v2/schemas/task'")


@dataclass(frozen=True, slots=True)
class TokenRow:
    id: str
    username: str
    tenant_id: str
    roles: tuple[str, ...]
    expires: float


@dataclass(frozen=True, slots=True)
class ImageRow:
    id: str
    owner: str | None
    name: str | None
    status: str
    visibility: str
    size: int | None
    checksum: str | None
    created_at: float
    updated_at: float
    props: dict[str, Any]
    tags: list[str]
    file: str | None


@dataclass(frozen=True, slots=True)
class TaskRow:
    id: str
    owner: str
    type: str
    status: str
    input: Any
    result: Any
    message: str
    created_at: float
    updated_at: float
    expires_at: float | None

    @classmethod
    def from_tuple(cls, row: Sequence[Any]) -> TaskRow:
        return cls(row[0], row[1], row[2], row[3],
                   None if row[4] is None else json.loads(row[4]),
                   None if row[5] is None else json.loads(row[5]),
                   row[6], row[7], row[8], row[9])


@dataclass(frozen=True, slots=True)
class ObjectRow:
    account: str
    container: str
    name: str
    size: int
    etag: str
    content_type: str
    created: float
    manifest: str | None
    meta: dict[str, str]
    delete_at: float | None
    file: str


_OBJECT_COLUMNS = ("account, container, name, size, etag, content_type, created, manifest, meta, "
                   "delete_at, file")


def _object(row: Sequence[Any]) -> ObjectRow:
    return ObjectRow(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7],
                     json.loads(row[8]), row[9], row[10])


class Store:
    """All emulator state below ``data_dir``: ``state.sqlite``, ``objects/``, ``images/``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.objects_dir = self.data_dir / "objects"
        self.images_dir = self.data_dir / "images"
        for path in (self.data_dir, self.objects_dir, self.images_dir):
            path.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.data_dir / "state.sqlite", check_same_thread=False,
                                   isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL is durable across process crashes in WAL mode (only an OS crash can lose
        # the last commits), which is what kill/restart tests exercise.
        self._db.execute("PRAGMA synchronous=NORMAL")
        # 64 MiB of page cache: inserting 100,000 tasks touches seven indexes in random order.
        self._db.execute("PRAGMA cache_size=-65536")
        self._db.executescript(_SCHEMA)
        self._token_cache: dict[str, TokenRow] = {}

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _all(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _one(self, sql: str, args: Sequence[Any] = ()) -> Any:
        with self._lock:
            return self._db.execute(sql, args).fetchone()

    def _run(self, sql: str, args: Sequence[Any] = ()) -> int:
        with self._lock:
            return self._db.execute(sql, args).rowcount

    # -- meta -------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self._one("SELECT value FROM meta WHERE key = ?", (key,))
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._run("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # -- tokens -----------------------------------------------------------------------------
    def add_token(self, token: TokenRow) -> None:
        self._run("INSERT INTO tokens (id, username, tenant_id, roles, expires) VALUES (?,?,?,?,?)",
                  (token.id, token.username, token.tenant_id, ",".join(token.roles),
                   token.expires))
        self._token_cache[token.id] = token

    def get_token(self, token_id: str) -> TokenRow | None:
        cached = self._token_cache.get(token_id)
        if cached is not None:
            return cached
        row = self._one("SELECT id, username, tenant_id, roles, expires FROM tokens WHERE id = ?",
                        (token_id,))
        if row is None:
            return None
        token = TokenRow(row[0], row[1], row[2], tuple(r for r in row[3].split(",") if r), row[4])
        self._token_cache[token_id] = token
        return token

    def purge_tokens(self, now: float) -> None:
        self._run("DELETE FROM tokens WHERE expires <= ?", (now,))
        for key in [k for k, t in self._token_cache.items() if t.expires <= now]:
            self._token_cache.pop(key, None)

    # -- images -----------------------------------------------------------------------------
    def put_image(self, image: ImageRow) -> None:
        self._run(
            "INSERT OR REPLACE INTO images (id, owner, name, status, visibility, size, checksum,"
            " created_at, updated_at, props, tags, file) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (image.id, image.owner, image.name, image.status, image.visibility, image.size,
             image.checksum, image.created_at, image.updated_at, json.dumps(image.props),
             json.dumps(image.tags), image.file))

    def get_image(self, image_id: str) -> ImageRow | None:
        row = self._one("SELECT id, owner, name, status, visibility, size, checksum, created_at,"
                        " updated_at, props, tags, file FROM images WHERE id = ?", (image_id,))
        return None if row is None else self._image(row)

    def visible_images(self, tenant: str) -> list[ImageRow]:
        """The tenant's own images plus every public one (the image list is small)."""
        rows = self._all("SELECT id, owner, name, status, visibility, size, checksum, created_at,"
                         " updated_at, props, tags, file FROM images"
                         " WHERE owner = ? OR visibility = 'public'", (tenant,))
        return [self._image(r) for r in rows]

    @staticmethod
    def _image(row: Sequence[Any]) -> ImageRow:
        return ImageRow(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8],
                        json.loads(row[9]), json.loads(row[10]), row[11])

    def image_path(self, image_id: str) -> Path:
        return self.images_dir / image_id

    # -- tasks ------------------------------------------------------------------------------
    def insert_task(self, task: TaskRow) -> None:
        self.insert_tasks([task])

    def insert_tasks(self, tasks: Sequence[TaskRow]) -> None:
        rows = [(t.id, t.owner, t.type, t.status,
                 None if t.input is None else json.dumps(t.input),
                 None if t.result is None else json.dumps(t.result),
                 t.message, t.created_at, t.updated_at, t.expires_at) for t in tasks]
        with self.transaction() as db:
            db.executemany(f"INSERT INTO tasks ({TASK_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                           rows)

    def get_task(self, task_id: str, owner: str | None, now: float) -> TaskRow | None:
        """A live task; another tenant's task is ``None`` just like a missing one."""
        if owner is None:
            row = self._one(f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?", (task_id,))
        else:
            row = self._one(f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = ? AND owner = ?"
                            f" AND {_LIVE}", (task_id, owner, now))
        return None if row is None else TaskRow.from_tuple(row)

    def list_task_stubs(self, owner: str, now: float, *, filters: dict[str, str],
                        sort_key: str, sort_dir: str, limit: int,
                        marker: TaskRow | None) -> list[tuple[str, str]]:
        """One page of list stubs as ``(id, stub JSON text)``, in keyset order: ``sort_key``,
        then ``created_at``, then ``id``, all in ``sort_dir``.

        SQLite formats the timestamps and the JSON itself: building 1000 stubs in Python
        costs several times the query.
        """
        keys = [sort_key] + [k for k in ("created_at", "id") if k != sort_key]
        # Ordering by a column the filter pins is a no-op, and dropping it lets SQLite walk
        # the (owner, status|type, created_at, id) index instead of sorting every match.
        keys = [k for k in keys if k not in filters] or ["created_at", "id"]
        # expires_at is NULL until a task finishes; sort those as 0 so the keyset stays total.
        cols = ["IFNULL(expires_at, 0)" if k == "expires_at" else k for k in keys]
        where = ["owner = ?", _LIVE]
        args: list[Any] = [owner, now]
        for name, value in filters.items():
            where.append(f"{name} = ?")
            args.append(value)
        if marker is not None:
            op = "<" if sort_dir == "desc" else ">"
            values = [getattr(marker, k) if k != "expires_at" else (marker.expires_at or 0)
                      for k in keys]
            where.append(f"({', '.join(cols)}) {op} ({', '.join('?' * len(cols))})")
            args.extend(values)
        order = ", ".join(f"{c} {sort_dir.upper()}" for c in cols)
        sql = (f"SELECT id, CASE WHEN expires_at IS NULL THEN json_object({_STUB})"
               f" ELSE json_object({_STUB}, 'expires_at', {_ISO.format('expires_at')}) END"
               f" FROM tasks WHERE {' AND '.join(where)} ORDER BY {order} LIMIT ?")
        args.append(limit)
        return self._all(sql, args)

    def tasks_with_status(self, status: str) -> list[TaskRow]:
        rows = self._all(f"SELECT {TASK_COLUMNS} FROM tasks WHERE status = ? AND status IN"
                         " ('pending', 'processing') ORDER BY created_at", (status,))
        return [TaskRow.from_tuple(r) for r in rows]

    def due_pending(self, created_before: float, limit: int) -> list[TaskRow]:
        # The IN term repeats the partial index's WHERE so SQLite may use that index.
        rows = self._all(f"SELECT {TASK_COLUMNS} FROM tasks WHERE status = 'pending'"
                         " AND status IN ('pending', 'processing')"
                         " AND created_at <= ? ORDER BY created_at LIMIT ?",
                         (created_before, limit))
        return [TaskRow.from_tuple(r) for r in rows]

    def update_task(self, task_id: str, *, status: str, now: float, result: Any = None,
                    message: str | None = None, expires_at: float | None = None) -> None:
        self._run("UPDATE tasks SET status = ?, updated_at = ?, result = ?,"
                  " message = COALESCE(?, message), expires_at = ? WHERE id = ?",
                  (status, now, None if result is None else json.dumps(result), message,
                   expires_at, task_id))

    def purge_tasks(self, now: float) -> int:
        return self._run("DELETE FROM tasks WHERE expires_at IS NOT NULL AND expires_at <= ?",
                         (now,))

    def count_tasks(self, owner: str | None = None) -> int:
        if owner is None:
            return int(self._one("SELECT COUNT(*) FROM tasks")[0])
        return int(self._one("SELECT COUNT(*) FROM tasks WHERE owner = ?", (owner,))[0])

    # -- containers -------------------------------------------------------------------------
    def create_container(self, account: str, name: str, now: float,
                         meta: dict[str, str]) -> bool:
        """True when created, False when it already existed (metadata merged)."""
        with self.transaction() as db:
            row = db.execute("SELECT meta FROM containers WHERE account = ? AND name = ?",
                             (account, name)).fetchone()
            if row is None:
                db.execute("INSERT INTO containers (account, name, created, meta) VALUES (?,?,?,?)",
                           (account, name, now, json.dumps(meta)))
                return True
            merged = {**json.loads(row[0]), **meta}
            db.execute("UPDATE containers SET meta = ? WHERE account = ? AND name = ?",
                       (json.dumps({k: v for k, v in merged.items() if v}), account, name))
            return False

    def get_container(self, account: str, name: str) -> tuple[float, dict[str, str]] | None:
        row = self._one("SELECT created, meta FROM containers WHERE account = ? AND name = ?",
                        (account, name))
        return None if row is None else (row[0], json.loads(row[1]))

    def container_usage(self, account: str, name: str, now: float) -> tuple[int, int]:
        row = self._one("SELECT COUNT(*), IFNULL(SUM(size), 0) FROM objects WHERE account = ?"
                        " AND container = ? AND (delete_at IS NULL OR delete_at > ?)",
                        (account, name, now))
        return int(row[0]), int(row[1])

    def list_containers(self, account: str, now: float, *, prefix: str = "", marker: str = "",
                        end_marker: str = "", limit: int = 10000) -> list[tuple[str, int, int,
                                                                               float]]:
        where, args = self._name_window("name", prefix, marker, end_marker)
        rows = self._all(
            "SELECT c.name, c.created, (SELECT COUNT(*) FROM objects o WHERE o.account = c.account"
            " AND o.container = c.name AND (o.delete_at IS NULL OR o.delete_at > ?)),"
            " (SELECT IFNULL(SUM(size), 0) FROM objects o WHERE o.account = c.account"
            " AND o.container = c.name AND (o.delete_at IS NULL OR o.delete_at > ?))"
            f" FROM containers c WHERE c.account = ?{where} ORDER BY c.name LIMIT ?",
            [now, now, account, *args, limit])
        return [(r[0], int(r[2]), int(r[3]), r[1]) for r in rows]

    def account_usage(self, account: str, now: float) -> tuple[int, int, int]:
        containers = self._one("SELECT COUNT(*) FROM containers WHERE account = ?", (account,))
        objects = self._one("SELECT COUNT(*), IFNULL(SUM(size), 0) FROM objects WHERE account = ?"
                            " AND (delete_at IS NULL OR delete_at > ?)", (account, now))
        return int(containers[0]), int(objects[0]), int(objects[1])

    def delete_container(self, account: str, name: str) -> None:
        self._run("DELETE FROM containers WHERE account = ? AND name = ?", (account, name))

    # -- objects ----------------------------------------------------------------------------
    @staticmethod
    def _name_window(col: str, prefix: str, marker: str, end_marker: str) -> tuple[str, list[Any]]:
        where, args = "", []
        if prefix:
            # A range on the primary key rather than LIKE, which would treat % and _ specially.
            where += f" AND {col} >= ? AND {col} < ?"
            args += [prefix, prefix + "\U0010ffff"]
        if marker:
            where += f" AND {col} > ?"
            args.append(marker)
        if end_marker:
            where += f" AND {col} < ?"
            args.append(end_marker)
        return where, args

    def new_object_file(self) -> Path:
        """A fresh path for object bytes (written first, then committed by ``put_object``)."""
        name = uuid.uuid4().hex
        folder = self.objects_dir / name[:2]
        folder.mkdir(exist_ok=True)
        return folder / name

    def put_object(self, obj: ObjectRow) -> None:
        """Commit an object whose bytes are already in ``obj.file``; replaces any older one."""
        with self.transaction() as db:
            old = db.execute("SELECT file FROM objects WHERE account = ? AND container = ?"
                             " AND name = ?", (obj.account, obj.container, obj.name)).fetchone()
            db.execute(f"INSERT OR REPLACE INTO objects ({_OBJECT_COLUMNS})"
                       " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                       (obj.account, obj.container, obj.name, obj.size, obj.etag,
                        obj.content_type, obj.created, obj.manifest, json.dumps(obj.meta),
                        obj.delete_at, obj.file))
        if old is not None and old[0] != obj.file:
            self._unlink(old[0])

    def get_object(self, account: str, container: str, name: str, now: float) -> ObjectRow | None:
        row = self._one(f"SELECT {_OBJECT_COLUMNS} FROM objects WHERE account = ?"
                        " AND container = ? AND name = ? AND (delete_at IS NULL OR delete_at > ?)",
                        (account, container, name, now))
        return None if row is None else _object(row)

    def list_objects(self, account: str, container: str, now: float, *, prefix: str = "",
                     marker: str = "", end_marker: str = "", limit: int = 10000) -> list[ObjectRow]:
        where, args = self._name_window("name", prefix, marker, end_marker)
        rows = self._all(f"SELECT {_OBJECT_COLUMNS} FROM objects WHERE account = ?"
                         " AND container = ? AND (delete_at IS NULL OR delete_at > ?)"
                         f"{where} ORDER BY name LIMIT ?",
                         [account, container, now, *args, limit])
        return [_object(r) for r in rows]

    def delete_object(self, account: str, container: str, name: str) -> bool:
        with self.transaction() as db:
            row = db.execute("SELECT file FROM objects WHERE account = ? AND container = ?"
                             " AND name = ?", (account, container, name)).fetchone()
            if row is None:
                return False
            db.execute("DELETE FROM objects WHERE account = ? AND container = ? AND name = ?",
                       (account, container, name))
        self._unlink(row[0])
        return True

    def purge_objects(self, now: float) -> None:
        rows = self._all("SELECT account, container, name FROM objects"
                         " WHERE delete_at IS NOT NULL AND delete_at <= ?", (now,))
        for account, container, name in rows:
            self.delete_object(account, container, name)

    def _unlink(self, file: str) -> None:
        with suppress(FileNotFoundError):
            (self.objects_dir / file).unlink()

    def object_path(self, obj: ObjectRow) -> Path:
        return self.objects_dir / obj.file

    def relative(self, path: Path) -> str:
        return os.path.relpath(path, self.objects_dir)

"""Where transfers are remembered: two tables in the audit log's SQLite file.

``transfers`` holds one row per transfer (its lineage: source region, account, image and
export task; the copy's figures; the import task; the target region, account and image) and
``transfer_steps`` one row per step run (start, end, outcome). A row is written as each step
starts and ends, so a transfer interrupted anywhere (an error, Ctrl-C, a killed process) is
found again with the last step it completed.

The audit log's own module (``_tasklog.py``) is not touched: this one opens the same file
with ``sqlite3`` and creates its tables when missing. No pandas here (storage never imports
it); ``imgtools.transfer.transfers_frame`` builds the DataFrame.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["STEP_OUTCOMES", "StepRow", "TransferRecord", "TransferStore"]

#: What a step row's ``outcome`` is: running (started, not ended: interrupted if nobody runs
#: it), done, reused (an earlier export taken as it was), failed.
STEP_OUTCOMES = ("running", "done", "reused", "failed")
#: Seconds a writer waits for another one's lock on the shared file.
_BUSY_TIMEOUT = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS transfers (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    status TEXT NOT NULL,
    step TEXT,
    error TEXT,
    name TEXT NOT NULL,
    source_region TEXT, source_account TEXT, source_image TEXT NOT NULL,
    source_container TEXT NOT NULL,
    export_task TEXT, export_location TEXT, export_reused INTEGER NOT NULL DEFAULT 0,
    copy_bytes INTEGER, copy_copied_bytes INTEGER NOT NULL DEFAULT 0,
    copy_segments INTEGER, copy_retries INTEGER NOT NULL DEFAULT 0,
    copy_seconds REAL NOT NULL DEFAULT 0, copy_md5 TEXT, servicenet INTEGER NOT NULL DEFAULT 0,
    target_region TEXT, target_account TEXT, target_container TEXT NOT NULL,
    target_location TEXT, import_task TEXT, target_image TEXT,
    properties TEXT NOT NULL, cleanup TEXT NOT NULL, cleaned TEXT
);
CREATE INDEX IF NOT EXISTS transfers_source_image ON transfers (source_image);
CREATE INDEX IF NOT EXISTS transfers_target_image ON transfers (target_image);
CREATE TABLE IF NOT EXISTS transfer_steps (
    transfer_id TEXT NOT NULL,
    step TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    outcome TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS transfer_steps_id ON transfer_steps (transfer_id);
"""


@dataclass
class TransferRecord:
    """One transfer's row; ``properties`` is the list of source keys to re-apply."""

    name: str
    source_image: str
    source_container: str
    target_container: str
    properties: list[str]
    cleanup: str
    source_region: str | None = None
    source_account: str | None = None
    target_region: str | None = None
    target_account: str | None = None
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    status: str = "running"
    step: str | None = None
    error: str | None = None
    export_task: str | None = None
    export_location: str | None = None
    export_reused: bool = False
    copy_bytes: int | None = None
    copy_copied_bytes: int = 0
    copy_segments: int | None = None
    copy_retries: int = 0
    copy_seconds: float = 0.0
    copy_md5: str | None = None
    servicenet: bool = False
    target_location: str | None = None
    import_task: str | None = None
    target_image: str | None = None
    cleaned: str | None = None

    def row(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["properties"] = json.dumps(self.properties)
        values["export_reused"] = int(self.export_reused)
        values["servicenet"] = int(self.servicenet)
        return values

    @classmethod
    def _from_row(cls, row: sqlite3.Row) -> TransferRecord:
        values = dict(row)
        values["properties"] = json.loads(values["properties"])
        values["export_reused"] = bool(values["export_reused"])
        values["servicenet"] = bool(values["servicenet"])
        return cls(**values)


@dataclass(frozen=True, slots=True)
class StepRow:
    """One run of one step (a resumed step has a row per run)."""

    transfer_id: str
    step: str
    started_at: float
    ended_at: float | None
    outcome: str
    detail: str | None


_COLUMNS = tuple(f.name for f in dataclasses.fields(TransferRecord))


class TransferStore:
    """The transfers tables in the SQLite file at ``path`` (the audit log's by default)."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        if path is None:
            from imgtools._tasklog import default_log_path

            path = default_log_path()
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # One short connection per write: several processes (and the audit log) share the file.
        db = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT)
        db.row_factory = sqlite3.Row
        try:
            with db:
                yield db
        finally:
            db.close()

    def save(self, record: TransferRecord) -> None:
        """Insert or update the transfer's row."""
        record.updated_at = time.time()
        marks = ", ".join("?" for _ in _COLUMNS)
        values = record.row()
        with self._connect() as db:
            db.execute(f"INSERT OR REPLACE INTO transfers ({', '.join(_COLUMNS)}) "
                       f"VALUES ({marks})", [values[c] for c in _COLUMNS])

    def get(self, transfer_id: str) -> TransferRecord | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM transfers WHERE id = ?", (transfer_id,)).fetchone()
        return None if row is None else TransferRecord._from_row(row)

    def records(self, *, source_image: str | None = None, target_image: str | None = None
                ) -> list[TransferRecord]:
        """Transfers, oldest first; optionally those of one source or target image."""
        sql, args = "SELECT * FROM transfers", []
        if source_image is not None:
            sql, args = sql + " WHERE source_image = ?", [source_image]
        elif target_image is not None:
            sql, args = sql + " WHERE target_image = ?", [target_image]
        with self._connect() as db:
            rows = db.execute(sql + " ORDER BY created_at, id", args).fetchall()
        return [TransferRecord._from_row(r) for r in rows]

    def step_started(self, transfer_id: str, step: str) -> float:
        now = time.time()
        with self._connect() as db:
            db.execute("INSERT INTO transfer_steps (transfer_id, step, started_at, outcome) "
                       "VALUES (?, ?, ?, 'running')", (transfer_id, step, now))
        return now

    def step_ended(self, transfer_id: str, step: str, started_at: float, outcome: str,
                   detail: str | None = None) -> None:
        with self._connect() as db:
            db.execute("UPDATE transfer_steps SET ended_at = ?, outcome = ?, detail = ? "
                       "WHERE transfer_id = ? AND step = ? AND started_at = ?",
                       (time.time(), outcome, detail, transfer_id, step, started_at))

    def steps(self, transfer_id: str | None = None) -> list[StepRow]:
        sql, args = "SELECT * FROM transfer_steps", []
        if transfer_id is not None:
            sql, args = sql + " WHERE transfer_id = ?", [transfer_id]
        with self._connect() as db:
            rows = db.execute(sql + " ORDER BY started_at", args).fetchall()
        return [StepRow(**dict(r)) for r in rows]

    def first_start(self, transfer_id: str, step: str) -> float | None:
        """When the step was first started (the earliest a task it posted can be from)."""
        with self._connect() as db:
            row = db.execute("SELECT MIN(started_at) FROM transfer_steps WHERE transfer_id = ? "
                             "AND step = ?", (transfer_id, step)).fetchone()
        return None if row is None or row[0] is None else float(row[0])

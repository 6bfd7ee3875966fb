"""Transfers as typed DataFrames (the lineage table): kept apart from the store, which never
imports pandas."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from imgtools._transfer_store import StepRow, TransferRecord

__all__ = ["TRANSFER_COLUMNS", "steps_frame", "transfers_frame"]

#: Columns and their dtypes, in order.
TRANSFER_COLUMNS: dict[str, str] = {
    "id": "string", "status": "string", "step": "string", "name": "string",
    "source_region": "string", "source_account": "string", "source_image": "string",
    "export_task": "string", "export_location": "string", "export_reused": "boolean",
    "copy_bytes": "Int64", "copy_copied_bytes": "Int64", "copy_segments": "Int64",
    "copy_retries": "Int64", "copy_seconds": "Float64", "copy_md5": "string",
    "servicenet": "boolean", "import_task": "string", "target_region": "string",
    "target_account": "string", "target_image": "string", "target_location": "string",
    "cleanup": "string", "cleaned": "string", "error": "string",
    "created_at": "datetime64[ns, UTC]", "updated_at": "datetime64[ns, UTC]",
    "started_at": "datetime64[ns, UTC]", "ended_at": "datetime64[ns, UTC]",
    "duration": "Float64",
}
STEP_COLUMNS: dict[str, str] = {
    "transfer_id": "string", "step": "string", "outcome": "string", "detail": "string",
    "started_at": "datetime64[ns, UTC]", "ended_at": "datetime64[ns, UTC]",
    "duration": "Float64",
}


def _times(values: list[float | None]) -> pd.Series:
    return pd.to_datetime(pd.Series(values, dtype="Float64").astype("float64"), unit="s",
                          utc=True)


def steps_frame(steps: Sequence[StepRow]) -> pd.DataFrame:
    """One row per step run."""
    data = {
        "transfer_id": [s.transfer_id for s in steps], "step": [s.step for s in steps],
        "outcome": [s.outcome for s in steps], "detail": [s.detail for s in steps],
    }
    frame = pd.DataFrame(data)
    frame["started_at"] = _times([s.started_at for s in steps])
    frame["ended_at"] = _times([s.ended_at for s in steps])
    frame["duration"] = pd.Series(
        [None if s.ended_at is None else s.ended_at - s.started_at for s in steps],
        dtype="Float64")
    return frame.astype({k: v for k, v in STEP_COLUMNS.items()})[list(STEP_COLUMNS)]


def transfers_frame(records: Sequence[TransferRecord], steps: Sequence[StepRow]
                    ) -> pd.DataFrame:
    """One row per transfer: its lineage, copy figures, state, first start and last end."""
    spans: dict[str, tuple[float | None, float | None]] = {}
    for s in steps:
        begun, last = spans.get(s.transfer_id, (s.started_at, s.ended_at))
        begun = s.started_at if begun is None else min(begun, s.started_at)
        if s.ended_at is not None:
            last = s.ended_at if last is None else max(last, s.ended_at)
        spans[s.transfer_id] = (begun, last)
    rows = []
    for r in records:
        first, final = spans.get(r.id, (None, None))
        row = {k: getattr(r, k) for k in TRANSFER_COLUMNS
               if k not in ("started_at", "ended_at", "duration", "created_at", "updated_at")}
        rows.append(row | {"_created": r.created_at, "_updated": r.updated_at,
                           "_first": first, "_last": final})
    frame = pd.DataFrame(rows, columns=[*[k for k in TRANSFER_COLUMNS if k not in (
        "started_at", "ended_at", "duration", "created_at", "updated_at")],
        "_created", "_updated", "_first", "_last"])
    frame["created_at"] = _times(list(frame["_created"]))
    frame["updated_at"] = _times(list(frame["_updated"]))
    frame["started_at"] = _times(list(frame["_first"]))
    frame["ended_at"] = _times(list(frame["_last"]))
    frame["duration"] = (frame["ended_at"] - frame["started_at"]).dt.total_seconds()
    return frame.astype(TRANSFER_COLUMNS)[list(TRANSFER_COLUMNS)]

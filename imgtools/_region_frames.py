"""Tasks frames across every region of a login (the CLI's ``--region all``).

One login serves every region (``Client.in_region``); each region's task list is read through
its own endpoint and its rows get a ``region`` column. With the audit log merged in, a task the
service lists keeps its region; a task only the log holds keeps the region the log recorded
(null for tasks logged before the log knew regions).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import pandas as pd

from imgtools._exceptions import MissingSetting
from imgtools._tasklog import TaskLog
from imgtools.history import merged, tasks_frame

if TYPE_CHECKING:
    from imgtools._client import Client

__all__ = ["audit_frame", "frame_by_region", "region_counts"]


def frame_by_region(client: Client, *, with_log: bool,
                    regions: str | Iterable[str] | None = None,
                    log: TaskLog | None = None) -> pd.DataFrame:
    """Every region's tasks in one frame with a ``region`` column, oldest first; with
    ``with_log``, also the tasks only the audit log still holds (with the region the log
    recorded, if any). ``regions``: only these (one name or several; default every region
    of the login); ``log``: the audit log merged in (default: the client's)."""
    named = regions is not None and regions != "all"
    if regions is None or regions == "all":
        regions = client.regions
    else:
        regions = (regions,) if isinstance(regions, str) else tuple(regions)
    if not regions:
        raise MissingSetting("--region all needs the service catalog, which a bare token does "
                             "not have: log in with username + API key (RAX_USERNAME and "
                             "RAX_API_KEY), or name one region", setting="region")
    frames: list[pd.DataFrame] = []
    only_logged: pd.DataFrame | None = None
    for region in regions:
        twin = client.in_region(region)
        try:
            frame = merged(twin, log) if with_log else tasks_frame(twin)
        finally:
            twin.close()
        if with_log:
            logged = frame["source"] == "log"
            only_logged = frame.loc[logged]  # the same log behind every region
            frame = frame.loc[~logged]
        frames.append(frame.assign(region=region))
    both = pd.concat(frames, ignore_index=True)
    if only_logged is not None and len(only_logged):
        rest = only_logged.loc[~only_logged["id"].isin(both["id"])]
        if named:  # tasks of the regions not asked for stay out
            rest = rest.loc[rest["region"].isin(regions).fillna(False).astype(bool)]
        both = pd.concat([both, rest], ignore_index=True)
    both["region"] = both["region"].astype("string")
    return both.sort_values(["created_at", "id"], kind="stable").reset_index(drop=True)


def audit_frame(client: Client, *, regions: str | Iterable[str] = "all",
                log: TaskLog | None = None) -> pd.DataFrame:
    """The audit's tasks frame (``imgtools.audit_frame``; notebook 03 and the task browser):
    the tasks of every region of ``client``'s login (``regions``: one name or several
    instead), each region's list read through its own endpoint, merged with the audit log
    ``log`` (default: the client's) as ``merged`` does, with a ``region`` column. A task only
    the log holds keeps the region the log recorded. A bare token has no catalog, so no other
    region to name: ``"all"`` then reads the client's own endpoint alone."""
    if regions == "all" and not client.regions:
        return merged(client, log)
    return frame_by_region(client, with_log=True, regions=regions, log=log)


def region_counts(frame: pd.DataFrame) -> pd.DataFrame:
    """Tasks per region (rows; ``?`` for unknown) and status (columns), with totals."""
    region = frame["region"].fillna("?")
    counts = pd.crosstab(region, frame["status"].astype(str))
    counts["total"] = counts.sum(axis=1)
    counts.loc["total"] = counts.sum(axis=0)
    counts.index.name, counts.columns.name = "region", "status"
    return counts

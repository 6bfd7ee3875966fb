"""Tasks as compact tables for people: short ids (the full id on hover), dates and durations
that never wrap, failures as category + message, columns empty across the whole view left
out, and a width that fits a JupyterLab output (the message column takes what is left and
ends in "…", the full text on hover).

``display_frame`` builds the cells (HTML-escaped text in ``<span title=...>``) for the rows
asked for only, so a view of 100,000 tasks costs only what is shown; ``compact_table`` wraps
them in a pandas ``Styler`` for a notebook, and ``TaskBrowser`` puts them in its grid.
"""

from __future__ import annotations

import html
from typing import Any, Final, cast

import numpy as np
import pandas as pd

from imgtools.details import has_details
from imgtools.failures import categorize_all

__all__ = [
    "DISPLAY_COLUMNS",
    "SHORT_ID",
    "TABLE_STYLES",
    "compact_table",
    "display_frame",
    "failures_table",
    "short_id",
]

#: Characters of a UUID shown in tables (the full id is on hover and in the details).
SHORT_ID: Final = 8
#: Column headers of ``display_frame``, in order.
DISPLAY_COLUMNS: Final = ("id", "type", "status", "region", "account", "created", "duration",
                          "image", "container", "failure")
_TIME_FORMAT: Final = "%Y-%m-%d %H:%M"

#: The table rules (scoped to the table by the Styler): no wrapping anywhere; the failure
#: column fills the rest and is cut with an ellipsis (``max-width: 0`` + ``width: 100%`` is
#: what lets a cell shrink below its text). JupyterLab lays tables out ``fixed``; ours are
#: ``auto``, as wide as the output and no wider.
TABLE_STYLES: Final = [
    {"selector": "", "props": "table-layout: auto; width: 100%; max-width: 100%; "
                              "margin-left: 0"},
    {"selector": "th, td", "props": "white-space: nowrap; font-variant-numeric: tabular-nums; "
                                    "text-align: left"},
    {"selector": "td.imgtools-failure",
     "props": "max-width: 0; width: 100%; overflow: hidden; text-overflow: ellipsis; "
              "text-align: left"},
]

def short_id(value: Any) -> str:
    """The first ``SHORT_ID`` characters of an id; ``""`` for null."""
    return "" if value is None or pd.isna(value) else str(value)[:SHORT_ID]


def _titled(short: str, full: str) -> str:
    if not full:
        return ""
    return f'<span title="{html.escape(full)}">{html.escape(short)}</span>'


def _duration(value: Any) -> str:
    from imgtools.history import format_duration

    return format_duration(value)


def _texts(column: pd.Series) -> list[str]:
    """A text column's cells, escaped; ``""`` for null."""
    return [html.escape(v) if isinstance(v, str) else "" for v in column.astype(object)]


def display_frame(frame: pd.DataFrame, *, hide_empty: bool = True,
                  rows: list[int] | slice | None = None) -> pd.DataFrame:
    """The cells of a compact tasks table for ``frame`` (a tasks frame), as HTML strings.

    ``rows``: the positions to build (default all). ``hide_empty``: leave out columns empty
    in every row built. ``failure`` is ``<category> · <message>`` for failed tasks (a failed
    task whose details are unknown says so), empty otherwise."""
    part = frame.iloc[rows] if rows is not None else frame
    n = len(part)
    ids = part["id"].astype(object).to_numpy()
    status = part["status"].astype(str).to_numpy()
    created = part["created_at"].dt.strftime(_TIME_FORMAT).astype(object).fillna("").to_numpy()
    images = part["image_id"].astype(object).to_numpy()
    failed = status == "failure"
    known = has_details(part)
    message = part["message"].astype(object).to_numpy()
    categories = categorize_all(m if k else None for m, k in zip(message, known, strict=True))
    failure = np.full(n, "", dtype=object)
    for i in np.flatnonzero(failed):
        text = message[i] if isinstance(message[i], str) else (
            "the service gave no reason" if known[i] else "no details: purged or not fetched")
        label = f"{categories[i]} · {text}" if known[i] and isinstance(message[i], str) \
            else f"{'unknown' if known[i] else 'no details'} · {text}"
        failure[i] = f'<span title="{html.escape(label)}">{html.escape(label)}</span>'
    cells = pd.DataFrame({
        "id": [_titled(short_id(i), str(i)) for i in ids],
        "type": part["type"].astype(str).to_numpy(),
        "status": status,
        "region": _texts(part["region"]),
        "account": _texts(part["account"]),
        "created": created,
        "duration": [_duration(d) for d in part["duration"]],
        "image": [_titled(short_id(i), str(i)) if isinstance(i, str) else "" for i in images],
        "container": _texts(part["container"]),
        "failure": failure,
    }, index=pd.RangeIndex(n))
    if hide_empty and n:
        cells = cells.loc[:, [c for c in cells.columns if (cells[c] != "").any()]]
    return cells


def compact_table(frame: pd.DataFrame, *, hide_empty: bool = True) -> Any:
    """A pandas ``Styler`` of ``display_frame(frame)``: status colours, no index, no
    wrapping, as wide as the output and no wider; a fixed uuid keeps notebook outputs stable."""
    from imgtools.history import STATUS_STYLES

    cells = display_frame(frame, hide_empty=hide_empty)

    def status_css(value: Any) -> str:
        return STATUS_STYLES.get(str(value), "")

    styler = (cells.style.set_uuid("imgtools-compact").hide(axis="index")
              .set_table_attributes('class="imgtools-compact"')
              .set_table_styles(cast(Any, TABLE_STYLES)))
    if "status" in cells:
        styler = styler.map(status_css, subset=["status"])
    if "failure" in cells:
        styler = styler.set_td_classes(pd.DataFrame(
            {c: ["imgtools-failure" if c == "failure" else ""] * len(cells)
             for c in cells.columns}, index=cells.index))
    return styler


def failures_table(failures: pd.DataFrame) -> Any:
    """A pandas ``Styler`` of ``Summary.failures``: type, category, the raw message (cut to
    the output's width, in full on hover), count, first and last, never wrapped."""
    cells = pd.DataFrame({
        "type": failures["type"].astype(str),
        "category": failures["category"].astype(str),
        "count": failures["count"].astype("int64"),
        # Days only: the message needs the room more than the minutes.
        "first": failures["first"].dt.strftime("%Y-%m-%d"),
        "last": failures["last"].dt.strftime("%Y-%m-%d"),
        "wordings": failures["messages"].astype("int64"),
        "message (most frequent)": [f'<span title="{html.escape(m)}">{html.escape(m)}</span>'
                    for m in failures["message"].astype(str)],
    })
    styler = (cells.style.set_uuid("imgtools-failures").hide(axis="index")
              .set_table_attributes('class="imgtools-compact imgtools-failures"')
              .set_table_styles(cast(Any, TABLE_STYLES)))
    if len(cells):
        styler = styler.set_td_classes(pd.DataFrame(
            {c: ["imgtools-failure" if c.startswith("message") else ""] * len(cells)
             for c in cells.columns}, index=cells.index))
    return styler

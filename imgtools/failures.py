"""Failure messages sorted into categories an auditor can act on.

The service's wording has changed over the years (``docs``: the reference's "Export failure
messages seen in sources"), so a category is recognised by one table of patterns, ``PATTERNS``,
tried in order; the first that matches wins. The raw message is always kept beside its
category: the table sorts, it never rewrites.

=====================  ====================================================================
category               what to do
=====================  ====================================================================
``not owner``          export only images your tenant owns (not public or shared ones)
``licensing``          Windows / Red Hat images cannot leave the cloud: nothing to retry
``container missing``  create the Cloud Files container first (or ``create_container=True``)
``object exists``      the export is already there: delete it or use another container
``image not found``    the image (or the import's object) is gone or misnamed
``import validation``  the VHD was refused; ``code`` says why (``IMPORT_CODES``)
``bad input``          a property the service does not accept
``service error``      the service failed on its own: retry later, then open a ticket
``unknown``            a message no pattern knows (read it; add a pattern)
``no details``         no message known: purged from the service and never seen in full
=====================  ====================================================================
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import numpy as np
import pandas as pd

__all__ = [
    "CATEGORIES",
    "IMPORT_CODES",
    "NO_DETAILS",
    "PATTERNS",
    "UNKNOWN",
    "Category",
    "categorize",
    "categorize_all",
    "failure_table",
]

UNKNOWN: Final = "unknown"
#: The category of a failure whose message is unknown: no details anywhere.
NO_DETAILS: Final = "no details"


@dataclass(frozen=True, slots=True)
class Category:
    """A category, and for import validation failures the service's error code."""

    name: str
    code: str | None = None

    def __str__(self) -> str:
        return self.name if self.code is None else f"{self.name} {self.code}"


#: (category, pattern) in the order they are tried; case-insensitive, searched anywhere.
PATTERNS: Final[tuple[tuple[str, re.Pattern[str]], ...]] = tuple(
    (name, re.compile(pattern, re.IGNORECASE)) for name, pattern in (
        # "An image may only be exported by the image owner." (2013, 2015)
        ("not owner", r"only be exported by the image owner|not the (image )?owner"),
        # "The export of Windows based images is not allowed. ... License Agreement." (2013);
        # "Image cannot be exported due to licensing or billing restrictions (...)" (2015)
        ("licensing", r"licens|billing restriction|windows based images|red ?hat|rhel"),
        # "Container not found. Container: X" (2015); "container 'X' does not exist" (pyrax)
        ("container missing", r"container not found|container \S+ does not exist|"
                              r"no such container"),
        # "Swift already has an object with id '...vhd' in container '...'" (2013-2014);
        # "Object already exists in user's container. Container/Object: ..." (2015)
        ("object exists", r"already has an object|object already exists|already exists"),
        # "Image cannot be imported. Error code: '396'" (wire form, see openstacksdk)
        ("import validation", r"cannot be imported\.? error code"),
        # "Requested image for export was not found: <uuid>" (2015);
        # "Image not found for import. Possible invalid location" (docs, cloudcafe)
        ("image not found", r"image for export was not found|image not found"),
        # "Unsupported element in image_properties, please consult the documentation."
        ("bad input", r"unsupported element|invalid (input|property)"),
        # "Unknown error occurred during image export" / "... during execution"
        ("service error", r"unknown error occurred|internal (server )?error"),
    ))

#: Every category, in the order a report lists them.
CATEGORIES: Final = (*(name for name, _ in PATTERNS), UNKNOWN, NO_DETAILS)

#: Documented import validation codes (``message``: ``Image cannot be imported. Error code:
#: '396'``) and what they mean.
IMPORT_CODES: Final = {
    "111": "unspecified VHD validation problem",
    "396": "not a valid VHD",
    "413": "virtual size over the import limit",
    "523": "only fixed or dynamic disks are accepted",
    "609": "physical size over the import limit",
    "614": "the VHD's internal UUID is all zeros",
    "721": "the VHD has a parent disk",
}

_CODE: Final = re.compile(r"error code:?\s*'?(\d+)'?", re.IGNORECASE)
_EMPTY: Final = ("", "none", "null")


def categorize(message: str | None) -> Category:
    """The category of one failure message (``no details`` when there is none)."""
    if not isinstance(message, str) or message.strip().lower() in _EMPTY:  # None, NaN
        return Category(NO_DETAILS)
    for name, pattern in PATTERNS:
        if pattern.search(message):
            if name == "import validation":
                code = _CODE.search(message)
                return Category(name, code.group(1) if code else None)
            return Category(name)
    return Category(UNKNOWN)


def categorize_all(messages: Iterable[str | None]) -> list[str]:
    """``str(categorize(m))`` for each message; each distinct text is matched once."""
    seen: dict[str | None, str] = {}
    out: list[str] = []
    for message in messages:
        if message not in seen:
            seen[message] = str(categorize(message))
        out.append(seen[message])
    return out


#: What the failures table says in place of a message it does not have.
NO_REASON: Final = "(the service gave no reason)"
PURGED: Final = "(no details: purged from the service, never seen in full here)"
NOT_FETCHED: Final = "(no details: not fetched)"


def failure_table(frame: pd.DataFrame, *, by: str = "type",
                  keys: pd.Series | None = None) -> pd.DataFrame:
    """Failed tasks of a tasks frame grouped by ``by`` (a column, or ``keys`` aligned with the
    frame when given) and category, most frequent first: ``type`` (or ``by``), ``category``,
    ``count``, ``first``, ``last``, ``messages`` (how many different raw messages) and
    ``message`` (the most frequent raw message, as the service wrote it).

    A failure whose details are unknown is counted as ``no details``, with why (purged and
    never seen in full, or listed but not fetched), never as an empty message."""
    from imgtools.details import has_details

    failed_rows = (frame["status"].astype(str) == "failure").to_numpy()
    failed = frame.loc[failed_rows, ["message", "created_at", "source"]].copy()
    failed[by] = (frame[by] if keys is None else keys).astype(str).to_numpy()[failed_rows]
    known = has_details(frame)[failed_rows]
    listed = (failed["source"].astype(str) == "service").to_numpy()
    message = failed["message"].astype(object).to_numpy(copy=True)
    message[known & pd.isna(message)] = NO_REASON
    message[~known] = np.where(listed[~known], NOT_FETCHED, PURGED)
    categories = categorize_all(None if not k else m for k, m in zip(known, message,
                                                                     strict=True))
    failed["category"] = [UNKNOWN if m == NO_REASON else c
                          for c, m in zip(categories, message, strict=True)]
    failed["message"] = message
    if not len(failed):
        return pd.DataFrame({by: pd.Series(dtype=object), "category": pd.Series(dtype=object),
                             "count": pd.Series(dtype="int64"),
                             "first": pd.Series(dtype=frame["created_at"].dtype),
                             "last": pd.Series(dtype=frame["created_at"].dtype),
                             "messages": pd.Series(dtype="int64"),
                             "message": pd.Series(dtype=object)})
    # One row per category: wordings differ only by the container or image they name.
    grouped = failed.groupby([by, "category"], observed=True)
    table = pd.DataFrame(grouped["created_at"].agg(count="count", first="min", last="max"))
    table["messages"] = grouped["message"].nunique()
    table["message"] = grouped["message"].agg(lambda m: m.value_counts().index[0])
    table = (pd.DataFrame(table).reset_index()
             .sort_values(["count", "last"], ascending=[False, False], kind="stable")
             .reset_index(drop=True))
    table["count"] = table["count"].astype("int64")
    table["messages"] = table["messages"].astype("int64")
    table[by] = table[by].astype(str)
    return table

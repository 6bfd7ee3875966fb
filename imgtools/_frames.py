"""The task frame: its columns and dtypes, and how frames are built from tasks, service pages
and audit-log columns. Below ``history`` (which reads sources and summarises) and ``details``
(which fills rows), so both build frames the same way without importing each other.

Every frame has the same columns and dtypes, also when empty (see ``COLUMNS``):

=================  =========================================================================
``id``             string (pandas ``str``)
``type``           categorical: ``export``, ``import`` (then any other type seen, sorted)
``status``         categorical in lifecycle order: ``pending``, ``processing``, ``success``,
                   ``failure``
``owner``          string (tenant id)
``created_at``     ``datetime64[us, UTC]``; ``updated_at`` and ``expires_at`` likewise
``duration``       ``timedelta64[us]``: ``updated_at - created_at`` for finished tasks, else NaT
``image_id``       export: ``input.image_uuid``; import: ``result.image_id``
``container``      export: ``input.receiving_swift_container``; import: the container of
                   ``input.import_from``
``export_location`` ``result.export_location`` (``<container>/<uuid>.vhd``)
``message``        string; null when the service sent ``"None"`` or ``""``
``source``         categorical: ``service`` (the service said so now) or ``log`` (only the
                   audit log still knows)
``region``         string: the region the task was seen in (null when unknown)
``account``        string: the account (tenant) it was seen through
=================  =========================================================================

"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import chain
from typing import TYPE_CHECKING, Any, Final, cast

import msgspec
import numpy as np
import numpy.typing as npt
import pandas as pd

from imgtools import _taskfields as fields
from imgtools._exceptions import ResponseError
from imgtools._models import Task
from imgtools._taskfields import Origin
from imgtools._times import EPOCH as _EPOCH_US
from imgtools._times import ONE_US as _ONE_US

if TYPE_CHECKING:
    from imgtools._tasklog import TaskLog

COLUMNS: Final = ("id", "type", "status", "owner", "created_at", "updated_at", "expires_at",
                  "duration", "image_id", "container", "export_location", "message", "source",
                  "region", "account")
TYPE_CATEGORIES: Final = ("export", "import")
STATUS_CATEGORIES: Final = ("pending", "processing", "success", "failure")
SOURCE_CATEGORIES: Final = ("service", "log")

# pandas' default string dtype (NaN for missing), so our frames match what users build.
_STR: Final = pd.StringDtype(na_value=np.nan)
_TIME: Final = pd.DatetimeTZDtype(unit="us", tz="UTC")
_NAT: Final = np.iinfo(np.int64).min  # datetime64's NaT, as an integer

_ObjArray = npt.NDArray[np.object_]
_IntArray = npt.NDArray[np.int64]
_NO_STRINGS: Final[list[str]] = []


# -- building frames ---------------------------------------------------------------------------

def _categorical(values: Sequence[Any] | _ObjArray, fixed: Sequence[str]) -> Any:
    """A categorical with ``fixed`` categories first, so empty frames and ``value_counts``
    keep a stable shape; a value outside them is kept (appended, sorted), never turned null."""
    # Factorise the object array once (a C hash pass; ``pd.Categorical(list)`` infers and
    # sorts first, twice the cost), then map its few uniques onto the fixed order.
    codes, uniques = pd.factorize(np.asarray(values, dtype=object), use_na_sentinel=True)
    seen = [str(u) for u in uniques]
    categories = [*fixed, *sorted(set(seen).difference(fixed))]
    position = {c: i for i, c in enumerate(categories)}
    recode = np.array([position[c] for c in seen] + [-1], dtype=np.int32)  # -1 (null) last
    return pd.Categorical.from_codes(recode[codes], categories=pd.Index(categories))


def _strings(values: Sequence[Any] | _ObjArray | None, count: int = 0
             ) -> pd.api.extensions.ExtensionArray:
    """A string column of ``values``; ``None``: ``count`` nulls (list stubs have no image,
    container, location or message: no per-element conversion for them)."""
    if values is None:
        return pd.array(_NO_STRINGS, dtype=_STR).take(np.full(count, -1), allow_fill=True)
    return pd.array(np.asarray(values, dtype=object), dtype=_STR)


def _times(micros: _IntArray) -> pd.DatetimeIndex:
    # int64 microseconds (NaT as int64 min) reinterpreted, not parsed.
    return pd.DatetimeIndex(micros.view("M8[us]")).tz_localize("UTC")


def _assemble(
    *, ids: Sequence[Any] | _ObjArray, types: Sequence[Any] | _ObjArray,
    statuses: Sequence[Any] | _ObjArray, owners: Sequence[Any] | _ObjArray,
    created: _IntArray, updated: _IntArray, expires: _IntArray,
    image_ids: Sequence[Any] | _ObjArray | None, containers: Sequence[Any] | _ObjArray | None,
    locations: Sequence[Any] | _ObjArray | None, messages: Sequence[Any] | _ObjArray | None,
    source: str | Sequence[str] | _ObjArray,
    regions: str | Sequence[Any] | _ObjArray | None = None,
    accounts: str | Sequence[Any] | _ObjArray | None = None,
) -> pd.DataFrame:
    """The standard frame from whole columns; times are int64 epoch microseconds; a text
    column given as ``None`` is all null."""
    count = len(ids)
    status = _categorical(statuses, STATUS_CATEGORIES)
    finished = np.isin(status.codes, (2, 3))  # success, failure
    duration = np.where(finished & (updated != _NAT) & (created != _NAT),
                        updated - created, _NAT)
    message = None if messages is None else _messages(np.asarray(messages, dtype=object))
    if isinstance(source, str):
        code = SOURCE_CATEGORIES.index(source)
        source_col = pd.Categorical.from_codes(np.full(count, code, dtype=np.int8),
                                               categories=pd.Index(list(SOURCE_CATEGORIES)))
    else:
        source_col = _categorical(source, SOURCE_CATEGORIES)
    frame = pd.DataFrame({
        "id": _strings(ids),
        "type": _categorical(types, TYPE_CATEGORIES),
        "status": status,
        "owner": _strings(owners),
        "created_at": _times(created),
        "updated_at": _times(updated),
        "expires_at": _times(expires),
        "duration": pd.TimedeltaIndex(duration.view("m8[us]")),
        "image_id": _strings(image_ids, count),
        "container": _strings(containers, count),
        "export_location": _strings(locations, count),
        "message": _strings(message, count),
        "source": source_col,
        "region": _constant_or(regions, count),
        "account": _constant_or(accounts, count),
    }, copy=False)
    return frame


def _constant_or(values: str | Sequence[Any] | _ObjArray | None, count: int
                 ) -> pd.api.extensions.ExtensionArray:
    """A string column: ``values`` itself, or one value (``None``: null) repeated."""
    if values is None:
        return _strings(None, count)
    if isinstance(values, str):
        column = np.empty(count, dtype=object)
        column[:] = values
        return _strings(column)
    return _strings(values)


def empty_frame() -> pd.DataFrame:
    """A tasks frame with no rows and every column typed."""
    none: list[Any] = []
    no_times = np.empty(0, dtype=np.int64)
    return _assemble(ids=none, types=none, statuses=none, owners=none, created=no_times,
                     updated=no_times, expires=no_times, image_ids=none, containers=none,
                     locations=none, messages=none, source="service")


def _frame_from_tasks(tasks: Sequence[Task], source: str = "service",
                      origin: Origin | None = None) -> pd.DataFrame:
    """The standard frame from ``Task`` objects: one list comprehension per column."""
    n = len(tasks)
    epoch = _EPOCH_US
    return _assemble(
        ids=[t.id for t in tasks],
        types=[t.type for t in tasks],
        statuses=[t.status.value for t in tasks],
        owners=[t.owner for t in tasks],
        created=np.fromiter(((t.created_at - epoch) // _ONE_US for t in tasks), np.int64, n),
        updated=np.fromiter(((t.updated_at - epoch) // _ONE_US for t in tasks), np.int64, n),
        expires=np.fromiter((_NAT if t.expires_at is None else (t.expires_at - epoch) // _ONE_US
                             for t in tasks), np.int64, n),
        image_ids=[t.image_id for t in tasks],
        containers=[t.container for t in tasks],
        locations=[t.export_location for t in tasks],
        messages=[t.message for t in tasks],
        source=source,
        regions=None if origin is None else origin.region,
        accounts=_accounts(origin, [t.owner for t in tasks]),
    )


def _accounts(origin: Origin | None, owners: list[Any]) -> Sequence[Any] | str:
    """The account column: the client's tenant, else each task's owner (the tenant it ran
    in), as the log stores it."""
    if origin is not None and origin.account is not None:
        return origin.account
    return [None if o is None else str(o) for o in owners]


def _parse_iso(values: list[Any]) -> _IntArray:
    """ISO 8601 texts (the service's ``...Z`` form, or with offset/fraction) to int64 us;
    ``None`` to NaT. One vectorised parse."""
    if not values:
        return np.empty(0, dtype=np.int64)
    parsed = pd.to_datetime(np.asarray(values, dtype=object), utc=True, format="ISO8601")
    return np.asarray(parsed.as_unit("us").asi8, dtype=np.int64)


class _Stub(msgspec.Struct, gc=False):
    """What a frame takes of a listed task; the service's other fields are skipped unread."""

    id: Any = None
    type: Any = None
    status: Any = None
    owner: Any = None
    created_at: Any = None
    updated_at: Any = None
    expires_at: Any = None
    input: Any = msgspec.UNSET  # present (even null) makes a full body, as for a dict
    result: Any = msgspec.UNSET


class _StubPage(msgspec.Struct, gc=False):
    tasks: list[_Stub]
    next: Any = None


_STUB_PAGE: Final = msgspec.json.Decoder(_StubPage)


def decode_stub_page(content: bytes) -> dict[str, Any] | None:
    """A listing page of plain list stubs as ``{"tasks": [stubs], "next": link}``, the stubs
    decoded straight into the few fields a frame takes (``_Stub``: no dict, no string for
    ``self``/``schema``, less than half the work of ``json.loads``); ``None`` for anything
    else (damaged, or full bodies with ``input``/``result``): decode that as JSON, where
    every check and error of an ordinary listing applies."""
    try:
        page = _STUB_PAGE.decode(content)
    except msgspec.MsgspecError:
        return None
    unset = msgspec.UNSET
    if any(stub.input is not unset or stub.result is not unset for stub in page.tasks):
        return None
    return {"tasks": page.tasks, "next": page.next}


@dataclass(frozen=True, slots=True)
class ListedPage:
    """One listing page: its task bodies as the service sent them and the stub columns of the
    frame taken from them (made where the page is decoded: while the next one is on its way).
    ``detail``: some body has ``input`` or ``result`` (not a list stub)."""

    items: Sequence[Mapping[str, Any]]
    ids: list[Any]
    types: list[Any]
    statuses: list[Any]
    owners: list[Any]
    created: _IntArray
    updated: _IntArray
    expires: _IntArray
    detail: bool


def listed_page(items: Sequence[Mapping[str, Any]] | Sequence[_Stub], *, keep: bool = True
                ) -> ListedPage:
    """A page's bodies (or ``decode_stub_page``'s stubs) and their stub columns, times parsed
    (int64 epoch us). ``keep=False`` lets go of list stubs once their columns are taken (a
    frame needs no more of them), so they are freed here, beside the decoding, not all at
    once when the frame is done."""
    if items and isinstance(items[0], _Stub):
        stubs = cast(Sequence[_Stub], items)
        return _page_of(
            (), ids=[t.id for t in stubs], types=[t.type for t in stubs],
            statuses=[t.status for t in stubs],
            owners=[None if (o := t.owner) is None else str(o) for t in stubs],
            created=[t.created_at for t in stubs], updated=[t.updated_at for t in stubs],
            expires=[t.expires_at for t in stubs], detail=False)
    if not all(isinstance(d, Mapping) for d in items):
        raise ResponseError("a listed task is not a JSON object")
    items = cast(Sequence[Mapping[str, Any]], items)
    detail = any("input" in d or "result" in d for d in items)
    return _page_of(
        items if keep or detail else (), ids=[d.get("id") for d in items],
        types=[d.get("type") for d in items], statuses=[d.get("status") for d in items],
        owners=[None if (o := d.get("owner")) is None else str(o) for d in items],
        created=[d.get("created_at") for d in items],
        updated=[d.get("updated_at") for d in items],
        expires=[d.get("expires_at") for d in items], detail=detail)


def _page_of(items: Sequence[Mapping[str, Any]], *, ids: list[Any], types: list[Any],
             statuses: list[Any], owners: list[Any], created: list[Any], updated: list[Any],
             expires: list[Any], detail: bool) -> ListedPage:
    """A ``ListedPage`` of these columns, its times parsed (a bad one is a ``ResponseError``)."""
    try:
        return ListedPage(items=items, ids=ids, types=types, statuses=statuses, owners=owners,
                          created=_parse_iso(created), updated=_parse_iso(updated),
                          expires=_parse_iso(expires), detail=detail)
    except (ValueError, TypeError) as error:  # pandas' parse errors are ValueErrors
        why = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ResponseError(f"a listed task has a time that is not ISO 8601: {why}") from None


def _joined(pages: Sequence[ListedPage], name: str) -> list[Any]:
    if len(pages) == 1:
        return cast(list[Any], getattr(pages[0], name))
    return list(chain.from_iterable(getattr(page, name) for page in pages))


def _joined_times(pages: Sequence[ListedPage], name: str) -> _IntArray:
    if not pages:
        return np.empty(0, dtype=np.int64)
    return np.concatenate([getattr(page, name) for page in pages])


def _frame_from_items(items: Sequence[Mapping[str, Any]], source: str = "service",
                      origin: Origin | None = None, record_in: TaskLog | None = None,
                      seen_at: datetime | None = None) -> pd.DataFrame:
    """The standard frame straight from task bodies as the service sent them (list stubs or
    full bodies), without building ``Task`` objects (see ``_frame_from_pages``)."""
    return _frame_from_pages([listed_page(items)], source, origin, record_in, seen_at)


def _frame_from_pages(pages: Sequence[ListedPage], source: str = "service",
                      origin: Origin | None = None, record_in: TaskLog | None = None,
                      seen_at: datetime | None = None) -> pd.DataFrame:
    """The standard frame from listed pages: the fast path for big listings.

    ``record_in``: a log to record the bodies in too, on its writer thread, from the columns
    parsed here (so recording a listing costs no second parse)."""
    has_detail = any(page.detail for page in pages)
    items: list[Mapping[str, Any]] = []
    image_ids: list[Any] | None = None  # list stubs: all null
    containers = locations = messages = None
    if has_detail:
        items = [d for page in pages for d in page.items]
        image_ids = [fields.image_id(d.get("input"), d.get("result")) for d in items]
        containers = [fields.container(d.get("input")) for d in items]
        locations = [fields.export_location(d.get("result")) for d in items]
        messages = [d.get("message") for d in items]
    owners = _joined(pages, "owners")
    ids = _joined(pages, "ids")
    types = _joined(pages, "types")
    statuses = _joined(pages, "statuses")
    created = _joined_times(pages, "created")
    updated = _joined_times(pages, "updated")
    expires = _joined_times(pages, "expires")
    stubs = {"id": ids, "type": types, "status": statuses, "owner": owners,
             "created_at": created, "updated_at": updated, "expires_at": expires}
    frame = _assemble(
        ids=ids, types=types, statuses=statuses, owners=owners,
        created=created, updated=updated, expires=expires,
        image_ids=image_ids, containers=containers, locations=locations, messages=messages,
        source=source, regions=None if origin is None else origin.region,
        accounts=_accounts(origin, owners),
    )
    if record_in is not None and ids:
        # Queued once the frame is built, so the writer does not compete with building it.
        if has_detail:
            record_in.record_bodies_later(items, seen_at=seen_at, origin=origin)
        else:
            record_in.record_stubs_later(stubs, seen_at=seen_at, origin=origin)
    return frame


def _shared(values: _ObjArray) -> _ObjArray:
    """The same strings, with repeats sharing one object: owner, container and message take
    a handful of values, and a million copies of each would cost ~60 MB per column."""
    if len(values) == 0:
        return values
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    table = np.empty(len(uniques) + 1, dtype=object)  # code -1 (null) -> the last slot, None
    table[:-1] = np.asarray(uniques, dtype=object)
    return cast(_ObjArray, table[codes])


def _messages(values: _ObjArray) -> _ObjArray:
    """Messages with the service's "None" / "" / blanks as null, repeats sharing one object.

    Failure messages repeat, so the check runs once per distinct text, not once per row."""
    if len(values) == 0:
        return values
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    table = np.empty(len(uniques) + 1, dtype=object)
    table[:-1] = [fields.message(u) for u in uniques]
    return cast(_ObjArray, table[codes])


def _chronological(created: _IntArray, ids: _ObjArray) -> Any:
    """Row order oldest ``created_at`` first, ties (whole-second stamps are common) by id,
    so two logs holding the same tasks give identical frames. ``slice(None)`` if in order."""
    order: Any = np.argsort(created, kind="stable")
    ranked = created[order]
    tied = np.zeros(len(order), dtype=bool)
    same = ranked[1:] == ranked[:-1]
    tied[1:] |= same
    tied[:-1] |= same
    if tied.any():
        # Re-sort only the tied rows by (created_at, id); their slots stay where they are.
        slots = np.flatnonzero(tied)
        sub = pd.DataFrame({"c": ranked[slots], "i": ids[order[slots]]})
        order[slots] = order[slots][sub.sort_values(["c", "i"], kind="stable").index]
    if bool((order[1:] > order[:-1]).all()):
        return slice(None)  # already in order: skip the copies
    return order


def _frame_from_log_columns(columns: Mapping[str, Any]) -> pd.DataFrame:
    """The standard frame from ``TaskLog.columns()``, oldest ``created_at`` first
    (ties by id)."""
    created = np.asarray(columns["created_at"], dtype=np.int64)
    order = _chronological(created, np.asarray(columns["id"], dtype=object))

    def text(name: str, share: bool = False) -> _ObjArray:
        values = np.asarray(columns[name], dtype=object)[order]
        return _shared(values) if share else values

    def ints(name: str) -> _IntArray:
        return cast(_IntArray, np.asarray(columns[name], dtype=np.int64)[order])

    return _assemble(ids=text("id"), types=text("type"), statuses=text("status"),
                     owners=text("owner", True), created=created[order],
                     updated=ints("updated_at"), expires=ints("expires_at"),
                     image_ids=text("image_id"), containers=text("container", True),
                     locations=text("export_location"), messages=text("message"),
                     source="log", regions=text("region", True),
                     accounts=text("account", True))



def _conform(frame: pd.DataFrame) -> pd.DataFrame:
    """Column order and dtypes of the standard frame, after concat/merge may have widened them."""
    out = frame.loc[:, list(COLUMNS)].copy()
    for column, fixed in (("type", TYPE_CATEGORIES), ("status", STATUS_CATEGORIES),
                          ("source", SOURCE_CATEGORIES)):
        if not isinstance(out[column].dtype, pd.CategoricalDtype) or \
                list(out[column].cat.categories[:len(fixed)]) != list(fixed):
            out[column] = _categorical(out[column].astype(object).to_numpy(), fixed)
    for column in ("id", "owner", "image_id", "container", "export_location", "message",
                   "region", "account"):
        if out[column].dtype != _STR:
            out[column] = out[column].astype(_STR)
    for column in ("created_at", "updated_at", "expires_at"):
        if out[column].dtype != _TIME:
            out[column] = pd.to_datetime(out[column], utc=True).dt.as_unit("us")
    if out["duration"].dtype != np.dtype("m8[us]"):
        out["duration"] = pd.to_timedelta(out["duration"]).dt.as_unit("us")
    return out.reset_index(drop=True)

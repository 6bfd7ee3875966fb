"""Compact task tables: short ids with the full id on hover, no wrapping, empty columns left
out, failures as category and message, text escaped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from imgtools._models import Task
from imgtools.failures import failure_table
from imgtools.history import summary, tasks_frame
from imgtools.tables import DISPLAY_COLUMNS, compact_table, display_frame, failures_table, short_id

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
IMAGE = "e0bcff09-561a-5a56-9755-4c624ef3b6f5"


def _body(n: int, status: str, *, message: Any = "", stub: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": f"{n:08x}-1111-4222-8333-444455556666", "type": "export", "status": status,
        "owner": "100001", "created_at": (T0 + timedelta(hours=n)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "updated_at": (T0 + timedelta(hours=n, minutes=11, seconds=51))
        .strftime("%Y-%m-%dT%H:%M:%SZ")}
    if not stub:
        body.update(input={"image_uuid": IMAGE, "receiving_swift_container": "backups"},
                    result=None, message=message)
    return body


def _frame(*bodies: dict[str, Any]) -> pd.DataFrame:
    return tasks_frame([Task.from_json(b) for b in bodies])


def test_display_frame_is_short_and_keeps_the_full_id_on_hover() -> None:
    frame = _frame(_body(1, "success"), _body(2, "failure",
                                              message="Container not found. Container: <b>"))
    cells = display_frame(frame)
    assert cells["id"][0] == ('<span title="00000001-1111-4222-8333-444455556666">00000001'
                              "</span>")
    assert cells["image"][0] == f'<span title="{IMAGE}">{short_id(IMAGE)}</span>'
    assert cells["created"][0] == "2026-11-01 13:00" and cells["duration"][0] == "11 min 51 s"
    assert cells["failure"][0] == ""
    assert "container missing · Container not found. Container: &lt;b&gt;" in \
        cells["failure"][1]  # categorised, and escaped
    assert "<b>" not in cells["failure"][1]


def test_columns_empty_in_every_row_are_left_out() -> None:
    stubs = _frame(_body(1, "success", stub=True), _body(2, "success", stub=True))
    # No region known (tasks built from bodies), the account from the tasks' owner.
    assert list(display_frame(stubs).columns) == ["id", "type", "status", "account", "created",
                                                  "duration"]
    assert tuple(display_frame(stubs, hide_empty=False).columns) == DISPLAY_COLUMNS
    failed_stub = _frame(_body(3, "failure", stub=True))
    assert "no details" in display_frame(failed_stub)["failure"][0]


def test_compact_table_never_wraps_and_fits_the_output() -> None:
    frame = _frame(_body(1, "success"), _body(2, "failure", message="boom"))
    page = compact_table(frame).to_html()
    assert page == compact_table(frame).to_html()  # stable uuid: notebook outputs stay put
    assert "white-space: nowrap" in page and "table-layout: auto" in page
    assert "text-overflow: ellipsis" in page and 'class="imgtools-compact"' in page
    assert "#fee2e2" in page and "#dcfce7" in page


def test_failures_table_by_category_with_the_raw_message() -> None:
    frame = _frame(*(_body(i, "failure", message=f"Container not found. Container: c{i % 2}")
                     for i in range(5)),
                   _body(9, "failure", message="An image may only be exported by the image "
                                                "owner."),
                   _body(10, "failure", stub=True))
    table = failure_table(frame)
    assert table["category"].tolist() == ["container missing", "no details", "not owner"]
    assert table["count"].tolist() == [5, 1, 1]
    assert table["messages"].tolist() == [2, 1, 1]
    assert table["message"][0] == "Container not found. Container: c0"  # the most frequent
    assert table["message"][1] == "(no details: not fetched)"  # listed: could be fetched
    assert summary(frame).without_details == 0 and summary(frame).not_fetched == 1
    page = failures_table(table).to_html()
    assert "container missing" in page and 'title="Container not found. Container: c0"' in page

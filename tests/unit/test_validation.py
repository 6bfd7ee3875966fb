"""Local argument checks: every broken rule is named, and the value comes back normalised."""

from __future__ import annotations

from typing import Any

import pytest

from imgtools import TaskStatus, ValidationError
from imgtools._validation import (
    validate_container,
    validate_export_args,
    validate_image_id,
    validate_page_size,
    validate_sort_dir,
    validate_task_id,
    validate_task_sort_key,
    validate_task_status,
    validate_task_type,
    validate_timeout,
)

UUID = "ca5e7f11-5d57-4dd7-8ace-03ab647fe6c6"


def test_image_id_is_returned_lower_case() -> None:
    assert validate_image_id(UUID.upper()) == UUID
    assert validate_task_id(UUID) == UUID


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "is empty"),
        (None, "must be a string"),
        (12345, "must be a string"),
        (" " + UUID, "whitespace"),
        (UUID + "\n", "whitespace"),
        ("ca5e7f115d574dd78ace03ab647fe6c6", "not a UUID"),
        ("{" + UUID + "}", "not a UUID"),
        ("urn:uuid:" + UUID, "not a UUID"),
        (UUID[:-1] + "g", "not a UUID"),
        ("../" + UUID, "not a UUID"),
    ],
)
def test_bad_image_ids(value: Any, problem: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_image_id(value)
    assert info.value.field == "image_id"
    assert any(problem in p for p in info.value.problems)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("name", ["exports", "a", "x" * 256, "é" * 128, "my exports",
                                  "ünïcode-名前", "under_score-dash"])
def test_good_containers(name: str) -> None:
    assert validate_container(name) == name


@pytest.mark.parametrize(
    ("value", "problems"),
    [
        ("", ["is empty"]),
        (None, ["must be a string"]),
        (b"exports", ["must be a string"]),
        ("x" * 257, ["257 bytes"]),
        ("é" * 129, ["258 bytes"]),
        ("a/b", ["slash"]),
        ("a?b", ["question mark"]),
        ("a.b", ["dot"]),
        ("a\x00b", ["U+0000"]),
        ("a\tb", ["U+0009"]),
        ("a\x7fb", ["U+007F"]),
        ("a\x85b", ["U+0085"]),
        ("   ", ["only whitespace"]),
        (" exports", ["leading or trailing whitespace"]),
        ("a\ud800b", ["lone surrogate"]),
        # Several rules at once: each is named.
        ("../etc?\n" + "x" * 300, ["bytes", "slash", "question mark", "dot", "U+000A"]),
    ],
)
def test_bad_containers_name_every_problem(value: Any, problems: list[str]) -> None:
    with pytest.raises(ValidationError) as info:
        validate_container(value)
    err = info.value
    assert err.field == "container"
    for expected in problems:
        assert any(expected in p for p in err.problems), (expected, err.problems)
    assert len(err.problems) == len(problems)
    for p in err.problems:
        assert p in str(err)


def test_export_args_reports_both_arguments() -> None:
    with pytest.raises(ValidationError) as info:
        validate_export_args("nope", "a/b")
    err = info.value
    assert err.field == "image_id, container"
    assert any(p.startswith("image_id:") for p in err.problems)
    assert any(p.startswith("container:") and "slash" in p for p in err.problems)
    assert validate_export_args(UUID.upper(), "exports") == (UUID, "exports")


@pytest.mark.parametrize("value", [0, -1, 1001, 2.5, "10", True, None])
def test_bad_page_sizes(value: Any) -> None:
    with pytest.raises(ValidationError) as info:
        validate_page_size(value)
    assert info.value.field == "page_size"


@pytest.mark.parametrize("value", [1, 25, 1000])
def test_good_page_sizes(value: int) -> None:
    assert validate_page_size(value) == value


def test_task_filters() -> None:
    assert validate_task_status("pending") is TaskStatus.PENDING
    assert validate_task_status(TaskStatus.FAILURE) is TaskStatus.FAILURE
    assert validate_task_type("export") == "export"
    assert validate_task_sort_key("created_at") == "created_at"
    assert validate_sort_dir("asc") == "asc"
    for check, bad in [(validate_task_status, "bogus"), (validate_task_type, "copy"),
                       (validate_task_sort_key, "name"), (validate_sort_dir, "sideways")]:
        with pytest.raises(ValidationError) as info:
            check(bad)
        assert repr(bad) in str(info.value)


@pytest.mark.parametrize("value", [-1, float("nan"), float("inf"), "10", True])
def test_bad_timeouts(value: Any) -> None:
    with pytest.raises(ValidationError):
        validate_timeout(value)


def test_good_timeouts() -> None:
    assert validate_timeout(None) is None
    assert validate_timeout(0) == 0.0
    assert validate_timeout(2) == 2.0

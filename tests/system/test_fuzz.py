"""Property tests of every client-side validation: any value either passes (and comes back
normalised) or raises ``ValidationError`` naming the field and each broken rule, and a refused
argument never sends a request.

The rules are written out again here, independently of ``imgtools._validation``, as the oracle.
Seeded (``derandomize``) and modest in size, so the run is quick and repeatable.
"""

from __future__ import annotations

import asyncio
import math
import string
import unicodedata
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import imgtools
from imgtools import PollPolicy, ValidationError
from imgtools._validation import (
    validate_container,
    validate_image_id,
    validate_page_size,
    validate_task_id,
    validate_timeout,
)

FUZZ = settings(max_examples=150, derandomize=True, deadline=None)
GOOD_ID = "0b4c5e0a-2f3d-4c1e-9a8b-7d6e5f4a3b2c"
GOOD_CONTAINER = "exports"

# -- the oracle --------------------------------------------------------------------------------


def is_uuid(value: object) -> bool:
    """8-4-4-4-12 ASCII hex digits and nothing else (no braces, no ``urn:``, no spaces)."""
    if not isinstance(value, str) or len(value) != 36:
        return False
    dashes = (8, 13, 18, 23)
    return all(value[i] == "-" for i in dashes) and all(
        c in string.hexdigits for i, c in enumerate(value) if i not in dashes)


def container_problems(value: str) -> list[str]:
    """Key words of the rules ``value`` breaks, as an export container name."""
    problems = []
    if value == "":
        return ["empty"]
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        problems.append("unicode")
        size = len(value.encode("utf-8", "surrogatepass"))
    if size > 256:
        problems.append("bytes")
    for char, word in (("/", "slash"), ("?", "question mark"), (".", "dot")):
        if char in value:
            problems.append(word)
    if any(unicodedata.category(c) == "Cc" for c in value):
        problems.append("control")
    if value.strip() == "" or value != value.strip():
        problems.append("whitespace")
    return problems


# -- strategies ----------------------------------------------------------------------------------

hex_uuid = st.uuids().map(str)
mangled_uuid = st.one_of(
    hex_uuid.map(str.upper),
    hex_uuid.map(lambda u: u.replace("-", "")),
    hex_uuid.map(lambda u: "{" + u + "}"),
    hex_uuid.map(lambda u: " " + u),
    hex_uuid.map(lambda u: u + "\n"),
    hex_uuid.map(lambda u: "urn:uuid:" + u),
    hex_uuid.map(lambda u: u[:-1] + "g"),
    hex_uuid.map(lambda u: u[:-1] + "\uff10"),  # a full-width digit: a digit, not hex
    hex_uuid.map(lambda u: u[:8] + "/" + u[9:]),
    st.text(max_size=40),
    st.just(""),
)
not_a_string = st.one_of(st.none(), st.integers(), st.floats(), st.binary(max_size=36),
                         st.lists(st.integers(), max_size=2), hex_uuid.map(lambda u: u.encode()))
# Names mixing the dangerous characters into ordinary and non-ASCII text, plus long ones.
container_text = st.one_of(
    st.text(alphabet=st.characters(codec="utf-8"), max_size=40),
    st.text(alphabet=st.sampled_from("ab-_ é日本🙂/?.\t\n\x00\x7f\u0085 \u00a0"), max_size=40),
    st.integers(min_value=250, max_value=300).map(lambda n: "a" * n),
    st.integers(min_value=60, max_value=70).map(lambda n: "日本語🙂" * n),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=5).map(
        lambda s: s + "\ud800"),  # a lone surrogate: not encodable
    st.just(""),
)


def assert_names_every_rule(error: ValidationError, field: str, expected: list[str]) -> None:
    assert error.field == field
    assert error.problems, "a refusal must say why"
    text = " ".join(error.problems).lower()
    for word in expected:
        if word == "empty":
            assert "empty" in text
        elif word == "whitespace":
            assert "whitespace" in text
        else:
            assert word in text, (word, error.problems)
    assert str(error).startswith(f"invalid {field} ")


# -- the validators -----------------------------------------------------------------------------


@FUZZ
@given(st.one_of(hex_uuid, mangled_uuid, not_a_string))
def test_image_and_task_ids(value: Any) -> None:
    for check, field in ((validate_image_id, "image_id"), (validate_task_id, "task_id")):
        if is_uuid(value):
            assert check(value) == value.lower()
        else:
            with pytest.raises(ValidationError) as info:
                check(value)
            assert info.value.field == field and info.value.problems


@FUZZ
@given(container_text)
def test_container_names(value: str) -> None:
    expected = container_problems(value)
    if not expected:
        assert validate_container(value) == value
        return
    with pytest.raises(ValidationError) as info:
        validate_container(value)
    assert_names_every_rule(info.value, "container", expected)
    # The message shows the value shortened and escaped: one line, whatever was typed.
    assert "\n" not in str(info.value) and len(str(info.value)) < 2000


@FUZZ
@given(st.one_of(st.integers(-5, 1100), st.booleans(), st.floats(), st.text(max_size=4),
                 st.none()))
def test_page_sizes(value: Any) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 1000
    if ok:
        assert validate_page_size(value) == value
    else:
        with pytest.raises(ValidationError):
            validate_page_size(value)


@FUZZ
@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10),
                 st.booleans(), st.text(max_size=3), st.none()))
def test_timeouts(value: Any) -> None:
    ok = value is None or (isinstance(value, int | float) and not isinstance(value, bool)
                           and math.isfinite(value) and value >= 0)
    if ok:
        assert validate_timeout(value) == (None if value is None else float(value))
    else:
        with pytest.raises(ValidationError):
            validate_timeout(value)


@FUZZ
@given(st.floats(allow_nan=True, allow_infinity=True), st.floats(allow_nan=True),
       st.floats(-1, 3), st.floats(-1, 2))
def test_poll_policies(initial: float, maximum: float, multiplier: float, jitter: float) -> None:
    finite = all(math.isfinite(v) for v in (initial, maximum, multiplier, jitter))
    ok = finite and initial > 0 and maximum >= initial and multiplier >= 1 and 0 <= jitter <= 1
    if ok:
        policy = PollPolicy(initial=initial, maximum=maximum, multiplier=multiplier,
                            jitter=jitter)
        assert all(initial <= policy.delay(n) <= maximum * (1 + jitter) for n in (0, 5, 10**6))
    else:
        with pytest.raises(ValidationError) as info:
            PollPolicy(initial=initial, maximum=maximum, multiplier=multiplier, jitter=jitter)
        assert info.value.field == "poll" and info.value.problems


# -- through the clients: the right error, and nothing sent -------------------------------------


class NoNetwork:
    """A transport that records any request reaching it (none should)."""

    def __init__(self) -> None:
        self.sent: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        return httpx.Response(500, json={"message": "no request should have been sent"})


@pytest.fixture(scope="module")
def offline() -> Iterator[tuple[imgtools.Client, NoNetwork]]:
    net = NoNetwork()
    # A bare token and endpoint: building the client sends nothing either.
    client = imgtools.connect(endpoint="http://127.0.0.1:9/v2", token="t0ken",
                              files_endpoint="http://127.0.0.1:9/v1/MossoCloudFS_1", log=False,
                              retries=0, transport=httpx.MockTransport(net))
    yield client, net
    client.close()


@FUZZ
@given(image_id=st.one_of(hex_uuid, mangled_uuid, not_a_string), container=container_text)
def test_begin_export_refuses_before_sending(offline: tuple[imgtools.Client, NoNetwork],
                                            image_id: Any, container: str) -> None:
    client, net = offline
    bad_id, bad_container = not is_uuid(image_id), bool(container_problems(container))
    if not (bad_id or bad_container):
        return  # valid arguments would go to the network: covered against the emulator
    for call in (lambda: client.begin_export(image_id, container),
                 lambda: client.export(image_id, container, create_container=True)):
        with pytest.raises(ValidationError) as info:
            call()
        fields = set((info.value.field or "").split(", "))
        assert fields == {f for f, bad in (("image_id", bad_id), ("container", bad_container))
                          if bad}
    assert net.sent == []


@FUZZ
@given(task_id=st.one_of(mangled_uuid, not_a_string).filter(lambda v: not is_uuid(v)),
       page_size=st.one_of(st.integers(-3, 0), st.integers(1001, 5000), st.booleans()),
       status=st.text(max_size=12).filter(
           lambda s: s not in ("pending", "processing", "success", "failure")),
       sort_key=st.text(max_size=12))
def test_task_calls_refuse_before_sending(offline: tuple[imgtools.Client, NoNetwork],
                                          task_id: Any, page_size: Any, status: str,
                                          sort_key: str) -> None:
    client, net = offline
    calls = [lambda: client.get_task(task_id), lambda: client.resume(task_id),
             lambda: client.get_image(task_id), lambda: client.tasks(page_size=page_size),
             lambda: client.tasks(status=status), lambda: client.wait_all([task_id]),
             lambda: client.wait_all([GOOD_ID], timeout=-1.0)]
    if sort_key not in ("id", "type", "status", "owner", "created_at", "updated_at",
                        "expires_at"):
        calls.append(lambda: client.tasks(sort_key=sort_key))
    for call in calls:
        with pytest.raises(ValidationError):
            result = call()
            if hasattr(result, "__next__"):
                next(result)  # a lazy check would show up here, after a request
    assert net.sent == []


@settings(max_examples=60, derandomize=True, deadline=None)
@given(name=st.one_of(st.just(""), st.text(max_size=10).map(lambda s: s + "/x"),
                      st.integers(257, 300).map(lambda n: "b" * n)))
def test_swift_container_names_refused_before_sending(
        offline: tuple[imgtools.Client, NoNetwork], name: str) -> None:
    client, net = offline
    with pytest.raises(ValidationError):
        client.files.create_container(name)
    assert net.sent == []


@settings(max_examples=60, derandomize=True, deadline=None)
@given(image_id=st.one_of(mangled_uuid, not_a_string).filter(lambda v: not is_uuid(v)),
       container=container_text)
def test_async_begin_export_refuses_before_sending(image_id: Any, container: str) -> None:
    net = NoNetwork()

    async def attempt() -> ValidationError:
        async with imgtools.AsyncClient(endpoint="http://127.0.0.1:9/v2", token="t0ken",
                                        log=False, retries=0,
                                        transport=httpx.MockTransport(net)) as client:
            try:
                await client.begin_export(image_id, container)
            except ValidationError as exc:
                return exc
        raise AssertionError("accepted a bad image id")

    error = asyncio.run(attempt())
    assert "image_id" in (error.field or "")
    assert net.sent == []

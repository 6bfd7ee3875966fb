"""The task listing's one-page lookahead (``_op_listing_page``): the next page is requested
while the current one is decoded, from a ``next`` link guessed in the raw bytes. A guess that
the decoded page contradicts, or that would leave the listing or the host, must never change
what the caller gets, nor send the token anywhere new. ``httpx.MockTransport``: the emulator
never sends a misleading ``next``.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

import imgtools
from imgtools import APIError, ResponseError, history
from imgtools._frames import _frame_from_items, decode_stub_page
from imgtools._taskfields import origin_of
from imgtools._tasklog import TaskLog

ROOT = "http://127.0.0.1:9"
STAMP = "2026-01-01T00:00:00Z"
PAGES = 4
PER_PAGE = 3

Handler = Callable[[httpx.Request], httpx.Response]


def stub(page: int, n: int, **extra: Any) -> dict[str, Any]:
    task_id = f"{page:08d}-0000-4000-8000-{n:012d}"
    return {"id": task_id, "type": "export", "status": "success", "owner": "100001",
            "created_at": STAMP, "updated_at": STAMP, "expires_at": STAMP,
            "self": f"/v2/tasks/{task_id}", "schema": "/v2/schemas/task", **extra}


def page_of(number: int, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"tasks": [stub(number, n, **extra) for n in range(PER_PAGE)],
                            "first": "/v2/tasks", "schema": "/v2/schemas/tasks"}
    if number + 1 < PAGES:
        body["next"] = f"/v2/tasks?marker=m{number}&limit={PER_PAGE}"
    return body


class Service:
    """Pages 0..PAGES-1 by marker; records every URL asked for (from any thread)."""

    def __init__(self, body_of: Callable[[int], dict[str, Any]] = page_of,
                 fail_page: int | None = None) -> None:
        self.body_of = body_of
        self.fail_page = fail_page
        self.asked: list[str] = []
        self._lock = threading.Lock()

    def page_number(self, request: httpx.Request) -> int:
        marker = request.url.params.get("marker")
        return 0 if marker is None else int(marker.removeprefix("m")) + 1

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.asked.append(str(request.url))
        if request.url.host != "127.0.0.1" or request.url.path != "/v2/tasks":
            return httpx.Response(404, json={"message": "not here"})
        number = self.page_number(request)
        if number == self.fail_page:
            return httpx.Response(503, json={"message": "busy"})
        return httpx.Response(200, content=json.dumps(self.body_of(number)).encode(),
                              headers={"content-type": "application/json"})


def client_for(handler: Handler) -> imgtools.Client:
    return imgtools.connect(endpoint=f"{ROOT}/v2", token="t0ken", log=False, retries=0,
                            transport=httpx.MockTransport(handler))


def async_client_for(handler: Handler) -> imgtools.AsyncClient:
    return imgtools.AsyncClient(endpoint=f"{ROOT}/v2", token="t0ken", log=False, retries=0,
                                transport=httpx.MockTransport(handler))


def ids_of(pages: list[list[dict[str, Any]]]) -> list[str]:
    return [task["id"] for page in pages for task in page]


EXPECTED = [stub(p, n)["id"] for p in range(PAGES) for n in range(PER_PAGE)]


def test_every_page_once_in_order() -> None:
    service = Service()
    with client_for(service) as client:
        pages = list(client.iter_task_pages(page_size=PER_PAGE))
    assert ids_of(pages) == EXPECTED
    assert len(service.asked) == PAGES  # each page asked for once: every guess was right


def test_the_async_client_reads_the_same() -> None:
    service = Service()

    async def read() -> list[list[dict[str, Any]]]:
        async with async_client_for(service) as client:
            return [page async for page in client.iter_task_pages(page_size=PER_PAGE)]

    assert ids_of(asyncio.run(read())) == EXPECTED
    assert len(service.asked) == PAGES


def test_a_nested_next_key_misleads_the_guess_but_not_the_listing() -> None:
    """A task whose body holds a key named "next" (after the page's own ``next``) makes the
    raw-bytes guess wrong: that page is fetched and dropped, and the real next one read."""

    def body_of(number: int) -> dict[str, Any]:
        body = page_of(number, input={"next": f"/v2/tasks?marker=m{PAGES - 2}"})
        # The page's own link first, the tasks' after it: whichever the guess reads, one of
        # them misleads it.
        return {"next": body.pop("next")} | body if "next" in body else body

    service = Service(body_of)
    with client_for(service) as client:
        tasks = list(client.tasks(page_size=PER_PAGE))
    assert [t.id for t in tasks] == EXPECTED
    # The wrong guesses cost extra GETs of the same listing, never another path.
    assert len(service.asked) > PAGES
    assert all(httpx.URL(url).path == "/v2/tasks" for url in service.asked)


def test_a_guess_to_another_host_or_path_is_never_requested() -> None:
    for link in ("http://evil.example/v2/tasks?marker=m0", "/v1/MossoCloudFS_1/c?marker=m0"):

        def body_of(number: int, link: str = link) -> dict[str, Any]:
            body = page_of(number)
            body["tasks"][-1]["input"] = {"next": link}
            return {"next": body.pop("next")} | body if "next" in body else body

        service = Service(body_of)
        with client_for(service) as client:
            assert ids_of(list(client.iter_task_pages(page_size=PER_PAGE))) == EXPECTED
        assert all(httpx.URL(url).host == "127.0.0.1" and httpx.URL(url).path == "/v2/tasks"
                   for url in service.asked)
        assert len(service.asked) == PAGES


def test_a_next_link_to_another_host_is_refused_without_a_request() -> None:
    def body_of(number: int) -> dict[str, Any]:
        return {"tasks": [stub(number, 0)], "next": "http://evil.example/v2/tasks?marker=m0"}

    service = Service(body_of)
    with client_for(service) as client, pytest.raises(ResponseError, match="another host"):
        list(client.iter_task_pages())
    assert [httpx.URL(url).host for url in service.asked] == ["127.0.0.1"]


def test_a_failed_request_ahead_is_raised_after_the_page_before_it() -> None:
    """Page 2's request fails while page 1 is decoded: the caller still gets pages 0 and 1
    first, then the error, as without lookahead."""
    service = Service(fail_page=2)
    got: list[list[dict[str, Any]]] = []
    with client_for(service) as client, pytest.raises(APIError, match="503"):
        for page in client.iter_task_pages(page_size=PER_PAGE):
            got.append(page)
    assert ids_of(got) == EXPECTED[: 2 * PER_PAGE]


def test_a_damaged_page_after_a_good_guess_is_a_clear_error() -> None:
    def body_of(number: int) -> dict[str, Any]:
        body = page_of(number)
        if number == 1:
            body["tasks"] = "not a list"
        return body

    with client_for(Service(body_of)) as client, pytest.raises(ResponseError, match="list"):
        list(client.iter_task_pages(page_size=PER_PAGE))


# -- history's frames, taken page by page beside the decoding ----------------------------------

ALL_STUBS = [stub(p, n) for p in range(PAGES) for n in range(PER_PAGE)]


def test_the_frame_of_a_paged_listing_is_the_frame_of_all_its_bodies() -> None:
    service = Service()
    with client_for(service) as client:
        frame = history.tasks_frame(client, record=False)
        expected = _frame_from_items(ALL_STUBS, origin=origin_of(client))
    pd.testing.assert_frame_equal(frame, expected)
    assert frame["id"].tolist() == EXPECTED
    assert len(service.asked) == PAGES


def test_the_async_frame_is_the_same() -> None:
    async def frame_of() -> tuple[pd.DataFrame, pd.DataFrame]:
        async with async_client_for(Service()) as client:
            return (await history.tasks_frame_async(client, record=False),
                    _frame_from_items(ALL_STUBS, origin=origin_of(client)))

    frame, expected = asyncio.run(frame_of())
    pd.testing.assert_frame_equal(frame, expected)


@pytest.mark.parametrize("damaged", ["a task", 7, None, ["id"]])
def test_a_listed_task_that_is_not_an_object_is_a_clear_error(damaged: Any) -> None:
    def body_of(number: int) -> dict[str, Any]:
        body = page_of(number)
        if number == 2:
            body["tasks"][1] = damaged
        return body

    with client_for(Service(body_of)) as client, \
            pytest.raises(ResponseError, match="not a JSON object"):
        history.tasks_frame(client, record=False)


def test_a_listed_task_with_a_bad_time_is_a_clear_error() -> None:
    def body_of(number: int) -> dict[str, Any]:
        body = page_of(number)
        if number == 1:
            body["tasks"][0]["updated_at"] = "yesterday-ish"
        return body

    with client_for(Service(body_of)) as client, pytest.raises(ResponseError, match="ISO 8601"):
        history.tasks_frame(client, record=False)


# -- the stub decoder (msgspec) and its fallback to JSON ---------------------------------------

def test_the_stub_decoder_takes_plain_stubs_and_leaves_the_rest_to_json() -> None:
    page = page_of(0)
    decoded = decode_stub_page(json.dumps(page).encode())
    assert decoded is not None and decoded["next"] == page["next"]
    assert [s.id for s in decoded["tasks"]] == [t["id"] for t in page["tasks"]]
    for other in (b"not json", b'{"tasks": {"id": 1}}', b'{"tasks": ["a task"]}',
                  b"[]", b'{"first": "/v2/tasks"}',
                  json.dumps(page_of(0, input=None)).encode(),  # full bodies, even null
                  json.dumps(page_of(0, result={"image_id": "x"})).encode()):
        assert decode_stub_page(other) is None, other


def test_full_bodies_in_a_listing_frame_as_json_would() -> None:
    """A service that lists full bodies (input/result): the stub decoder steps aside and the
    frame has their image, container and location, as from the bodies themselves."""
    extra = {"input": {"image_uuid": "33333333-3333-4333-8333-333333333333",
                       "receiving_swift_container": "c"},
             "result": {"export_location": "c/33333333-3333-4333-8333-333333333333.vhd"}}
    with client_for(Service(lambda number: page_of(number, **extra))) as client:
        frame = history.tasks_frame(client, record=False)
        expected = _frame_from_items([stub(p, n, **extra) for p in range(PAGES)
                                      for n in range(PER_PAGE)], origin=origin_of(client))
    pd.testing.assert_frame_equal(frame, expected)
    assert (frame["container"] == "c").all()


def test_a_recorded_listing_logs_every_listed_stub(tmp_path: Path) -> None:
    with TaskLog(tmp_path / "log.sqlite") as log:
        with imgtools.connect(endpoint=f"{ROOT}/v2", token="t0ken", log=log, retries=0,
                              transport=httpx.MockTransport(Service())) as client:
            frame = history.tasks_frame(client)
        logged = history.log_frame(log)
    assert sorted(logged["id"]) == sorted(frame["id"]) == sorted(EXPECTED)
    assert (logged["status"] == "success").all() and logged["created_at"].notna().all()

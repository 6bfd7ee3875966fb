"""Damaged answers from the service (``httpx.MockTransport``: the emulator never sends these):
non-JSON bodies, missing fields, unknown statuses, answers about another task, truncated
streams. Each must end in a clear imgtools error, never in a wrong result.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import imgtools
from imgtools import (
    ChecksumMismatch,
    DownloadError,
    ImgToolsError,
    ResponseError,
    TaskStatus,
    TransportError,
)

TASK_ID = "11111111-1111-4111-8111-111111111111"
OTHER_ID = "22222222-2222-4222-8222-222222222222"
IMAGE_ID = "33333333-3333-4333-8333-333333333333"
STAMP = "2026-01-01T00:00:00Z"
ROOT = "http://127.0.0.1:9"

Handler = Callable[[httpx.Request], httpx.Response]


def task_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": TASK_ID, "type": "export", "status": "success", "owner": "100001",
        "created_at": STAMP, "updated_at": STAMP, "expires_at": STAMP,
        "input": {"image_uuid": IMAGE_ID, "receiving_swift_container": "c"},
        "result": {"export_location": f"c/{IMAGE_ID}.vhd"}, "message": "",
        "self": f"/v2/tasks/{TASK_ID}", "schema": "/v2/schemas/task"}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not _DROP}


_DROP = object()


def client_for(handler: Handler) -> imgtools.Client:
    return imgtools.connect(endpoint=f"{ROOT}/v2", token="t0ken",
                            files_endpoint=f"{ROOT}/v1/MossoCloudFS_100001", log=False,
                            retries=0, poll=imgtools.PollPolicy.fast(), wait_timeout=5.0,
                            transport=httpx.MockTransport(handler))


def answer(status: int = 200, **kwargs: Any) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, **kwargs)

    return handler


# -- task answers -----------------------------------------------------------------------------

DAMAGED_TASKS: dict[str, Handler] = {
    "html instead of json": answer(200, text="<html><body>Service Unavailable</body></html>",
                                   headers={"content-type": "text/html"}),
    "empty body": answer(200, content=b""),
    "truncated json": answer(200, content=json.dumps(task_body()).encode()[:40],
                             headers={"content-type": "application/json"}),
    "json null": answer(200, json=None),
    "json list": answer(200, json=[task_body()]),
    "missing status": answer(200, json=task_body(status=_DROP)),
    "missing id": answer(200, json=task_body(id=_DROP)),
    "missing created_at": answer(200, json=task_body(created_at=_DROP)),
    "unknown status": answer(200, json=task_body(status="exploded")),
    "status of wrong type": answer(200, json=task_body(status=3)),
    "id of wrong type": answer(200, json=task_body(id=12)),
    "bad timestamp": answer(200, json=task_body(updated_at="yesterday-ish")),
    "input not an object": answer(200, json=task_body(input="image please")),
    "another task's body": answer(200, json=task_body(id=OTHER_ID)),
}


@pytest.mark.parametrize("case", sorted(DAMAGED_TASKS))
def test_damaged_task_answers_are_clear_errors(case: str) -> None:
    with client_for(DAMAGED_TASKS[case]) as client:
        with pytest.raises(ResponseError) as info:
            client.get_task(TASK_ID)
        assert str(info.value)
        # A wait must not turn the damage into a finished task, nor ride it out forever.
        with pytest.raises(ResponseError):
            client.resume(TASK_ID)
        with pytest.raises(ResponseError):
            imgtools.ExportTask(client, TASK_ID).wait(timeout=2.0)


DAMAGED_LISTS: dict[str, Handler] = {
    "not json": answer(200, text="oops", headers={"content-type": "text/plain"}),
    "no tasks key": answer(200, json={"first": "/v2/tasks"}),
    "tasks not a list": answer(200, json={"tasks": {"id": TASK_ID}}),
    "a list at the top": answer(200, json=[task_body()]),
    "a stub with an unknown status": answer(200, json={"tasks": [
        {k: v for k, v in task_body(status="exploded").items()
         if k not in ("input", "result", "message")}]}),
    "next link to another host": answer(200, json={
        "tasks": [], "next": "http://evil.example/v2/tasks?marker=x"}),
}


@pytest.mark.parametrize("case", sorted(DAMAGED_LISTS))
def test_damaged_task_lists_are_clear_errors(case: str) -> None:
    with client_for(DAMAGED_LISTS[case]) as client, pytest.raises(ResponseError):
        list(client.tasks())


def test_wait_all_refuses_a_damaged_list() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v2/tasks":
            return httpx.Response(200, json={"tasks": "not a list"})
        return httpx.Response(200, json=task_body(status="pending"))

    with client_for(handler) as client, pytest.raises(ResponseError):
        client.wait_all([TASK_ID], timeout=2.0)


def test_wait_all_does_not_take_another_tasks_detail() -> None:
    """The list no longer shows our task; its detail answer is another task's body."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v2/tasks":
            return httpx.Response(200, json={"tasks": []})
        return httpx.Response(200, json=task_body(id=OTHER_ID))

    with client_for(handler) as client:
        try:
            result = client.wait_all([TASK_ID], timeout=2.0)
        except ResponseError:
            return
        # Whatever it reports, it must not report the other task as ours.
        assert OTHER_ID not in result.tasks and all(t.id == TASK_ID
                                                    for t in result.succeeded)


def test_a_next_link_that_never_ends_is_refused() -> None:
    """A list whose ``next`` points back at itself would page forever."""
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls > 50:  # stop the loop ourselves; the client should have stopped long before
            return httpx.Response(500, json={"message": "the client paged 50 times"})
        return httpx.Response(200, json={"tasks": [], "next": "/v2/tasks?marker=" + TASK_ID})

    with client_for(handler) as client, pytest.raises(ResponseError):
        list(client.tasks())


def test_damaged_identity_answers() -> None:
    cases: list[Handler] = [
        answer(200, text="<html>login</html>", headers={"content-type": "text/html"}),
        answer(200, json={"access": {}}),
        answer(200, json={"access": {"token": {"id": ""}}}),
    ]
    for handler in cases:
        with pytest.raises(ResponseError):
            imgtools.connect(username="u", api_key="k", identity_url=f"{ROOT}/v2.0",
                             log=False, retries=0, transport=httpx.MockTransport(handler))


def test_damaged_image_answers() -> None:
    for body in ({"name": "x"}, {"id": IMAGE_ID, "status": "active", "size": "big"}, [1]):
        with client_for(answer(200, json=body)) as client, pytest.raises(ResponseError):
            client.get_image(IMAGE_ID)


# -- Cloud Files: listings and truncated streams -----------------------------------------------

SEG = 4096


def _segments() -> list[bytes]:
    return [bytes([n]) * SEG for n in range(1, 4)]


def _files_handler(*, body_of: Callable[[str, bytes], httpx.Response] | None = None,
                   listing: Any = None) -> Handler:
    segments = _segments()
    names = [f"{IMAGE_ID}.vhd-{n:05d}" for n in range(1, 4)]

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.startswith("/v2/tasks/"):
            return httpx.Response(200, json=task_body())
        if path.startswith("/v2/images/"):
            return httpx.Response(200, json={"id": IMAGE_ID, "status": "active",
                                              "size": SEG * 3})
        if path.endswith(f"/c/{IMAGE_ID}.vhd"):
            return httpx.Response(200, headers={"x-object-manifest": f"c/{IMAGE_ID}.vhd-",
                                                "content-length": "0"})
        if path.endswith("/c"):
            items = listing if listing is not None else [
                {"name": n, "bytes": SEG, "hash": hashlib.md5(s).hexdigest()}
                for n, s in zip(names, segments, strict=True)]
            return httpx.Response(200, json=items)
        name = path.rsplit("/", 1)[1]
        data = segments[names.index(name)]
        return body_of(name, data) if body_of else _body(data)

    return handler


def _body(data: bytes) -> httpx.Response:
    """A streamed answer, as a real connection gives (download_export reads raw bytes)."""
    return httpx.Response(200, stream=httpx.ByteStream(data),
                          headers={"content-length": str(len(data))})


class _Truncated(httpx.SyncByteStream):
    """Half the bytes, then the connection breaks."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __iter__(self) -> Iterator[bytes]:
        yield self.data[: len(self.data) // 2]
        raise httpx.RemoteProtocolError("peer closed connection without sending complete body")


def test_the_mock_service_is_sound(tmp_path: Path) -> None:
    """The control: undamaged, the same fake service verifies and downloads."""
    with client_for(_files_handler()) as client:
        assert client.verify_export(TASK_ID).ok
        result = client.download_export(TASK_ID, tmp_path / "ok.vhd", progress=False)
        assert (tmp_path / "ok.vhd").read_bytes() == b"".join(_segments())
        assert result.bytes == SEG * 3


@pytest.mark.parametrize("damage", ["short body", "long body", "flipped byte",
                                    "truncated stream", "html error page"])
def test_damaged_segments_never_make_a_file(tmp_path: Path, damage: str) -> None:
    def body_of(name: str, data: bytes) -> httpx.Response:
        if not name.endswith("00002"):
            return _body(data)
        if damage == "short body":
            return _body(data[:-10])
        if damage == "long body":
            return _body(data + b"extra")
        if damage == "flipped byte":
            return _body(b"\0" + data[1:])
        if damage == "truncated stream":
            return httpx.Response(200, stream=_Truncated(data))
        return httpx.Response(200, stream=httpx.ByteStream(b"<html>maintenance</html>"),
                              headers={"content-type": "text/html"})

    dest = tmp_path / "export.vhd"
    with client_for(_files_handler(body_of=body_of)) as client:
        report = client.verify_export(TASK_ID) if damage != "truncated stream" else None
        if report is not None:
            assert not report.ok and any("00002" in p for p in report.problems)
        with pytest.raises((ChecksumMismatch, DownloadError, TransportError)):
            client.download_export(TASK_ID, dest, progress=False, workers=1)
    assert not dest.exists()


@pytest.mark.parametrize("listing", [
    "not a list", [{"name": "x"}], [{"name": f"{IMAGE_ID}.vhd-00001", "bytes": "many",
                                     "hash": "0" * 32}], [["not", "an", "object"]],
], ids=["not a list", "no bytes", "bytes not a number", "item not an object"])
def test_damaged_listings_are_clear_errors(tmp_path: Path, listing: Any) -> None:
    dest = tmp_path / "export.vhd"
    with client_for(_files_handler(listing=listing)) as client:
        with pytest.raises(ImgToolsError):
            client.download_export(TASK_ID, dest, progress=False)
        with pytest.raises(ImgToolsError):
            client.verify_export(TASK_ID)
    assert not dest.exists()


def test_a_finished_task_without_a_location_is_refused(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=task_body(result=None))

    with client_for(handler) as client:
        task = client.get_task(TASK_ID)
        assert task.status is TaskStatus.SUCCESS and task.export_location is None
        with pytest.raises(ImgToolsError):
            client.download_export(task, tmp_path / "x.vhd", progress=False)

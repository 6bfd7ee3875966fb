"""The emulator's Cloud Files (Swift) API: account, containers, objects, ranges, DLOs."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from imgtools.emulator import EmulatorHandle, start_emulator
from imgtools.emulator.swift import INTAKE_BATCH
from tests.emulator.helpers import FAST, Api


@pytest.fixture(scope="module")
def emu(emulator_in_process: EmulatorHandle) -> EmulatorHandle:
    """This module's emulator: the emulator tests' one, in this process (tests/conftest.py)."""
    return emulator_in_process


def _put(api: Api, container: str, name: str, data: bytes, **headers: str) -> int:
    r = api.http.put(f"{api.account}/{container}/{name}", content=data, headers=headers)
    return r.status_code


def test_account_head_and_listing(api: Api, other: Api) -> None:
    name = api.container()
    _put(api, name, "a", b"12345")
    head = api.http.head(api.account)
    assert head.status_code == 204
    assert int(head.headers["x-account-container-count"]) >= 1
    assert int(head.headers["x-account-bytes-used"]) >= 5
    assert head.headers["x-trans-id"] == head.headers["x-openstack-request-id"]
    listing = api.get(api.account, params={"format": "json", "prefix": name}).json()
    assert listing[0]["name"] == name and listing[0]["count"] == 1 and listing[0]["bytes"] == 5
    plain = api.get(api.account, params={"prefix": name})
    assert plain.text == f"{name}\n"
    empty_plain = api.get(api.account, params={"prefix": "zzz-none"})
    assert empty_plain.status_code == 204
    empty_json = api.get(api.account, params={"prefix": "zzz-none", "format": "json"})
    assert (empty_json.status_code, empty_json.json()) == (200, [])
    # Another tenant's account: 404, never data.
    assert other.get(api.account).status_code == 404
    assert other.http.head(api.account).status_code == 404


def test_container_lifecycle(api: Api) -> None:
    name = f"life-{uuid.uuid4().hex[:8]}"
    assert api.http.put(f"{api.account}/{name}").status_code == 201
    assert api.http.put(f"{api.account}/{name}").status_code == 202
    head = api.http.head(f"{api.account}/{name}")
    assert head.status_code == 204
    assert head.headers["x-container-object-count"] == "0"
    assert api.get(f"{api.account}/{name}").status_code == 204
    r = api.get(f"{api.account}/{name}", params={"format": "json"})
    assert (r.status_code, r.json()) == (200, [])
    assert api.get(f"{api.account}/{name}", headers={"Accept": "application/json"}).json() == []
    _put(api, name, "x", b"data")
    head = api.http.head(f"{api.account}/{name}")
    assert head.headers["x-container-object-count"] == "1"
    assert head.headers["x-container-bytes-used"] == "4"
    assert api.http.delete(f"{api.account}/{name}").status_code == 409
    assert api.http.delete(f"{api.account}/{name}/x").status_code == 204
    assert api.http.delete(f"{api.account}/{name}/x").status_code == 404
    assert api.http.delete(f"{api.account}/{name}").status_code == 204
    assert api.http.head(f"{api.account}/{name}").status_code == 404
    assert api.http.delete(f"{api.account}/{name}").status_code == 404
    assert api.http.put(f"{api.account}/{'n' * 257}").status_code == 400


def test_container_listing_parameters(api: Api, container: str) -> None:
    for name in ("a/1", "a/2", "b", "c", "d"):
        assert _put(api, container, name, name.encode()) == 201
    base = f"{api.account}/{container}"

    def names(**params: str) -> list[str]:
        return [o.get("name", o.get("subdir")) for o in
                api.get(base, params={"format": "json", **params}).json()]

    assert names() == ["a/1", "a/2", "b", "c", "d"]
    assert names(prefix="a/") == ["a/1", "a/2"]
    assert names(marker="b") == ["c", "d"]
    assert names(end_marker="c") == ["a/1", "a/2", "b"]
    assert names(limit="2") == ["a/1", "a/2"]
    assert names(delimiter="/") == ["a/", "b", "c", "d"]
    item = api.get(base, params={"format": "json", "prefix": "b"}).json()[0]
    assert item["hash"] == hashlib.md5(b"b").hexdigest() and item["bytes"] == 1
    assert "T" in item["last_modified"] and not item["last_modified"].endswith("Z")
    assert api.get(base, params={"prefix": "a/"}).text == "a/1\na/2\n"
    assert api.get(base, params={"limit": "10001"}).status_code == 412
    assert api.get(base, params={"limit": "x"}).status_code == 412
    assert api.get(base, params={"format": "xml"}).text.startswith("<?xml")


def test_object_put_get_head_and_etag(api: Api, container: str) -> None:
    data = b"hello swift"
    r = api.http.put(f"{api.account}/{container}/hello.txt", content=data,
                     headers={"X-Object-Meta-Color": "blue"})
    assert r.status_code == 201 and r.headers["etag"] == hashlib.md5(data).hexdigest()
    head = api.http.head(f"{api.account}/{container}/hello.txt")
    assert head.status_code == 200
    assert head.headers["content-length"] == "11" and head.headers["content-type"] == "text/plain"
    assert head.headers["etag"] == hashlib.md5(data).hexdigest()
    assert head.headers["x-object-meta-color"] == "blue"
    assert head.headers["accept-ranges"] == "bytes" and "x-timestamp" in head.headers
    assert api.get(f"{api.account}/{container}/hello.txt").content == data
    wrong = api.http.put(f"{api.account}/{container}/bad", content=b"x",
                         headers={"ETag": hashlib.md5(b"y").hexdigest()})
    assert wrong.status_code == 422
    assert api.http.head(f"{api.account}/{container}/bad").status_code == 404
    good = api.http.put(f"{api.account}/{container}/good", content=b"x",
                        headers={"ETag": hashlib.md5(b"x").hexdigest()})
    assert good.status_code == 201
    assert api.http.put(f"{api.account}/nope-{uuid.uuid4().hex}/o", content=b"x").status_code \
        == 404
    assert api.get(f"{api.account}/{container}/missing").status_code == 404


def test_object_put_needs_a_length(api: Api, container: str) -> None:
    import http.client

    conn = http.client.HTTPConnection(api.emu.host, api.emu.port)
    conn.putrequest("PUT", f"{api.account}/{container}/nolength")
    conn.putheader("X-Auth-Token", api.token)
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 411
    conn.close()

    def chunks() -> object:
        yield b"abc"
        yield b"def"

    r = api.http.put(f"{api.account}/{container}/chunked", content=chunks())  # type: ignore[arg-type]
    assert r.status_code == 201
    assert api.get(f"{api.account}/{container}/chunked").content == b"abcdef"


def test_ranges(api: Api, container: str) -> None:
    data = bytes(range(10))
    _put(api, container, "ten", data)
    url = f"{api.account}/{container}/ten"
    r = api.get(url, headers={"Range": "bytes=4-6"})
    assert (r.status_code, r.content, r.headers["content-range"]) == (206, data[4:7],
                                                                      "bytes 4-6/10")
    assert api.get(url, headers={"Range": "bytes=-3"}).content == data[-3:]
    assert api.get(url, headers={"Range": "bytes=7-"}).content == data[7:]
    bad = api.get(url, headers={"Range": "bytes=20-30"})
    assert bad.status_code == 416 and bad.headers["content-range"] == "bytes */10"
    assert api.get(url, headers={"Range": "nonsense"}).status_code == 200
    multi = api.get(url, headers={"Range": "bytes=0-1,8-9"})
    assert multi.status_code == 206
    assert multi.headers["content-type"].startswith("multipart/byteranges")
    assert b"Content-Range: bytes 0-1/10" in multi.content
    assert b"Content-Range: bytes 8-9/10" in multi.content
    assert int(multi.headers["content-length"]) == len(multi.content)


def test_if_range(api: Api, container: str) -> None:
    data = bytes(range(10))
    _put(api, container, "ten", data)
    url = f"{api.account}/{container}/ten"
    head = api.http.head(url)
    etag, modified = head.headers["etag"], head.headers["last-modified"]
    for validator in (etag, f'"{etag}"', modified):
        r = api.get(url, headers={"Range": "bytes=4-", "If-Range": validator})
        assert (r.status_code, r.content) == (206, data[4:])
    # The object changed (another validator): the whole of it, 200.
    for stale in ("0" * 32, "Mon, 01 Jan 2024 00:00:00 GMT", f'W/"{etag}"'):
        r = api.get(url, headers={"Range": "bytes=4-", "If-Range": stale})
        assert (r.status_code, r.content) == (200, data)
        assert "content-range" not in r.headers


def test_dlo_manifest(api: Api, container: str) -> None:
    parts = [b"a" * 100, b"b" * 50, b"c" * 7]
    for n, part in enumerate(parts, 1):
        _put(api, container, f"big-{n:05d}", part)
    r = api.http.put(f"{api.account}/{container}/big", content=b"",
                     headers={"X-Object-Manifest": f"{container}/big-"})
    assert r.status_code == 201
    url = f"{api.account}/{container}/big"
    whole = api.get(url)
    assert whole.content == b"".join(parts)
    assert whole.headers["content-length"] == str(157)
    hashes = "".join(hashlib.md5(p).hexdigest() for p in parts)
    assert whole.headers["etag"] == f'"{hashlib.md5(hashes.encode()).hexdigest()}"'
    assert whole.headers["x-object-manifest"] == f"{container}/big-"
    ranged = api.get(url, headers={"Range": "bytes=95-154"})
    assert ranged.status_code == 206 and ranged.content == b"".join(parts)[95:155]
    raw = api.get(url, params={"multipart-manifest": "get"})
    assert raw.content == b"" and raw.headers["x-object-manifest"] == f"{container}/big-"
    # A missing segment silently shortens the body, as a real DLO does.
    api.http.delete(f"{api.account}/{container}/big-00002")
    assert api.get(url).content == parts[0] + parts[2]
    bad = api.http.put(f"{api.account}/{container}/m2", content=b"",
                       headers={"X-Object-Manifest": "no-slash"})
    assert bad.status_code == 400


def test_object_isolation(api: Api, other: Api, container: str) -> None:
    _put(api, container, "secret", b"mine")
    theirs = f"/v1/MossoCloudFS_{other.tenant}"
    mine = f"{api.account}/{container}/secret"
    for method in ("GET", "HEAD", "DELETE"):
        assert other.http.request(method, mine).status_code == 404
    assert other.http.put(f"{api.account}/{container}/x", content=b"x").status_code == 404
    assert other.get(f"{theirs}/{container}").status_code == 404  # not in their account
    assert api.get(mine).content == b"mine"


def test_swift_errors_are_html(api: Api, anon: object) -> None:
    r = api.get(f"{api.account}/nope-{uuid.uuid4().hex}")
    assert r.status_code == 404
    assert r.text == "<html><h1>Not Found</h1><p>The resource could not be found.</p></html>"
    import httpx

    assert isinstance(anon, httpx.Client)
    r = anon.get(api.account)
    assert r.status_code == 401 and "Unauthorized" in r.text


def test_a_put_whose_etag_does_not_match_is_refused_and_keeps_the_old_object(
        api: Api, container: str) -> None:
    """What a transfer relies on: a damaged copy never lands, whether sent with a length or
    streamed (chunked), and the object already there stays as it was."""
    path = f"{api.account}/{container}/segment-00001"
    first = api.http.put(path, content=b"first", headers={"ETag": hashlib.md5(b"first")
                                                          .hexdigest()})
    assert first.status_code == 201
    quoted = api.http.put(f"{api.account}/{container}/quoted", content=b"q",
                          headers={"ETag": f'"{hashlib.md5(b"q").hexdigest()}"'})
    assert quoted.status_code == 201

    def chunks() -> Iterator[bytes]:
        yield b"sec"
        yield b"ond"

    for body in (b"second", chunks()):
        wrong = api.http.put(path, content=body,
                             headers={"ETag": hashlib.md5(b"other").hexdigest()})
        assert wrong.status_code == 422
        assert "Unable to process the contained instructions" in wrong.text
        assert api.get(path).content == b"first"
    streamed = api.http.put(path, content=chunks(),
                            headers={"ETag": hashlib.md5(b"second").hexdigest()})
    assert streamed.status_code == 201 and api.get(path).content == b"second"


def _pieces(data: bytes, size: int) -> Iterator[bytes]:
    for at in range(0, len(data), size):
        yield data[at:at + size]


def test_a_body_of_several_intake_batches_is_hashed_and_stored_whole(
        api: Api, container: str) -> None:
    """Bodies longer than one ``INTAKE_BATCH`` are hashed and written on a worker thread, a
    batch at a time: the stored bytes and the ETag check are those of the whole body, sized
    or chunked, and a mismatch still keeps the object already there."""
    data = hashlib.sha256(b"intake").digest() * ((2 * INTAKE_BATCH + 4099) // 32)
    md5 = hashlib.md5(data).hexdigest()
    path = f"{api.account}/{container}/big"
    sized = api.http.put(path, content=data, headers={"ETag": md5})
    assert (sized.status_code, sized.headers["etag"]) == (201, md5)
    for body in (data[::-1], _pieces(data[::-1], 300_000)):
        wrong = api.http.put(path, content=body, headers={"ETag": md5})
        assert wrong.status_code == 422
    got = api.get(path)
    assert (got.headers["etag"], len(got.content)) == (md5, len(data))
    assert hashlib.md5(got.content).hexdigest() == md5
    chunked = api.http.put(f"{path}-2", content=_pieces(data, 1_000_003))
    assert (chunked.status_code, chunked.headers["etag"]) == (201, md5)
    assert api.get(f"{path}-2").content == data


def test_a_streamed_body_past_the_object_limit_is_refused_and_leaves_nothing(
        tmp_path: Path) -> None:
    config = FAST.replace(max_object_size=INTAKE_BATCH + 10)
    with start_emulator(config=config, data_dir=tmp_path, subprocess=False) as small:
        api = Api(small)
        try:
            name = api.container()
            data = b"x" * (2 * INTAKE_BATCH)
            # No Content-Length to refuse it up front: the limit is found while reading.
            r = api.http.put(f"{api.account}/{name}/big", content=_pieces(data, 1 << 20))
            assert r.status_code == 413
            assert api.get(f"{api.account}/{name}/big").status_code == 404
            assert not [p for p in (tmp_path / "objects").rglob("*") if p.is_file()]
        finally:
            api.close()


@pytest.mark.parametrize("sent", [0, 1000, INTAKE_BATCH + 1000],
                         ids=["headers only", "part of a batch", "past a batch"])
def test_a_put_cut_short_of_its_length_stores_nothing(tmp_path: Path, sent: int) -> None:
    """What a stopped copy relies on: a PUT whose connection closes before its
    Content-Length arrived is dropped whole (never a short object with a valid ETag), and an
    object already under that name stays as it was."""
    import http.client
    import time

    with start_emulator(config=FAST, data_dir=tmp_path, subprocess=False) as own:
        api = Api(own)
        try:
            name = api.container()
            kept = f"{api.account}/{name}/kept"
            assert _put(api, name, "kept", b"whole") == 201
            files_before = sorted(p for p in (tmp_path / "objects").rglob("*") if p.is_file())
            route = "/v1/{account}/{container}/{object:path}"

            def answered(status: int | None = None) -> int:
                return sum(r["count"] for r in own.stats()["requests"]
                           if r["method"] == "PUT" and r["route"] == route
                           and status in (None, r["status"]))

            before, stored = answered(), answered(201)
            length = 2 * INTAKE_BATCH
            body = hashlib.sha256(b"cut").digest() * (sent // 32 + 1)
            for path in (f"{api.account}/{name}/cut", kept):
                conn = http.client.HTTPConnection(own.host, own.port)
                conn.putrequest("PUT", path)
                conn.putheader("X-Auth-Token", api.token)
                conn.putheader("Content-Length", str(length))
                conn.putheader("ETag", hashlib.md5(b"never sent whole").hexdigest())
                conn.endheaders()
                conn.send(body[:sent])
                conn.close()  # the client goes away mid-body
            # Counted once the handler has ended (a bound on the wait, not a measure).
            deadline = time.monotonic() + 60
            while answered() < before + 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert answered() == before + 2 and answered(201) == stored
            assert api.get(f"{api.account}/{name}/cut").status_code == 404
            assert api.get(kept).content == b"whole"
            listed = api.get(f"{api.account}/{name}", params={"format": "json"}).json()
            assert [o["name"] for o in listed] == ["kept"]
            files = sorted(p for p in (tmp_path / "objects").rglob("*") if p.is_file())
            assert files == files_before  # no partial file left behind
        finally:
            api.close()

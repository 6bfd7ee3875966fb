"""Cloud Files (Swift) at ``/v1/MossoCloudFS_<tenant>``: account, containers, objects, DLOs.

Answers as Swift 2.x does: listings in plain text or JSON (an empty plain listing is 204),
object ETags unquoted MD5s, manifest ETags quoted MD5s of the segment ETags, single and
multiple byte ranges, HTML error bodies. Another tenant's account is 404, never data.
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
import secrets
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from imgtools.emulator.auth import current_token, state_of, store_of
from imgtools.emulator.clock import http_date, swift_time
from imgtools.emulator.errors import swift_error
from imgtools.emulator.objects import ObjectWriter, resolve_dlo
from imgtools.emulator.ranges import UNSATISFIABLE, parse_range
from imgtools.emulator.sendfile import FileSliceResponse, Slice, file_slices, read_slices
from imgtools.emulator.state import EmulatorState
from imgtools.emulator.store import ObjectRow

__all__ = ["routes"]

LISTING_LIMIT = 10000
MAX_CONTAINER_NAME = 256
MAX_OBJECT_NAME = 1024
#: Bytes of a PUT's body handed at once to the thread that hashes and writes them.
INTAKE_BATCH = 4 * 1024 * 1024
ALL_METHODS = ["GET", "HEAD", "PUT", "POST", "DELETE"]


def _trans_id() -> str:
    return f"tx{secrets.token_hex(11)[:21]}-{int(time.time()):010x}"


def _base_headers() -> dict[str, str]:
    tid = _trans_id()
    return {"x-trans-id": tid, "x-openstack-request-id": tid}


def _error(request: Request, status: int, text: str | None = None,
           headers: dict[str, str] | None = None) -> Response:
    return swift_error(status, text, {**_base_headers(), **(headers or {})}, request.method)


def _timestamp(ts: float) -> str:
    return f"{ts:.5f}"


class _Ctx:
    """The checked request: state, account and (after ``authorize``) the caller's tenant."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.state: EmulatorState = state_of(request)
        self.store = store_of(request)
        self.account: str = request.path_params["account"]
        self.now = self.state.clock.now()

    def authorize(self) -> Response | None:
        token = current_token(self.request)
        if token is None:
            return _error(self.request, 401, headers={
                "www-authenticate": f'Swift realm="{quote(self.account)}"'})
        if self.account != self.state.account_for(token.tenant_id):
            return _error(self.request, 404)
        return None


def _listing_params(request: Request) -> tuple[dict[str, str], int] | Response:
    q = request.query_params
    raw = q.get("limit")
    limit = LISTING_LIMIT
    if raw is not None:
        try:
            limit = int(raw)
        except ValueError:
            return _error(request, 412, "Value of limit must be a positive integer")
        if limit < 0:
            return _error(request, 412, "Value of limit must be a positive integer")
        if limit > LISTING_LIMIT:
            return _error(request, 412, f"Maximum limit is {LISTING_LIMIT}")
    params = {k: q.get(k, "") for k in ("prefix", "marker", "end_marker", "delimiter")}
    return params, limit


def _format(request: Request) -> str:
    fmt = request.query_params.get("format", "").lower()
    if fmt in ("json", "xml", "plain"):
        return fmt
    accept = request.headers.get("accept", "")
    if "application/json" in accept:
        return "json"
    if "application/xml" in accept or "text/xml" in accept:
        return "xml"
    return "plain"


def _listing_response(request: Request, fmt: str, root: str, name: str,
                      items: list[dict[str, Any]], headers: dict[str, str]) -> Response:
    """Plain (204 when empty), JSON (``[]`` when empty) or XML listing."""
    if fmt == "json":
        body = json.dumps(items).encode()
        media = "application/json; charset=utf-8"
    elif fmt == "xml":
        parts = [f'<?xml version="1.0" encoding="UTF-8"?>\n<{root} name="{escape(name)}">']
        tag = "container" if root == "account" else "object"
        for item in items:
            if "subdir" in item:
                parts.append(f'<subdir name="{escape(item["subdir"])}"><name>'
                             f'{escape(item["subdir"])}</name></subdir>')
                continue
            fields = "".join(f"<{k}>{escape(str(v))}</{k}>" for k, v in item.items())
            parts.append(f"<{tag}>{fields}</{tag}>")
        parts.append(f"</{root}>")
        body = "".join(parts).encode()
        media = "application/xml; charset=utf-8"
    else:
        if not items:
            return Response(b"", status_code=204,
                            headers={**headers, "content-type": "text/plain; charset=utf-8"})
        names = [item.get("name", item.get("subdir", "")) for item in items]
        body = ("\n".join(names) + "\n").encode()
        media = "text/plain; charset=utf-8"
    headers = {**headers, "content-type": media, "content-length": str(len(body))}
    return Response(b"" if request.method == "HEAD" else body, status_code=200, headers=headers)


# -- account ---------------------------------------------------------------------------------
async def account(request: Request) -> Response:
    ctx = _Ctx(request)
    denied = ctx.authorize()
    if denied is not None:
        return denied
    store = ctx.store
    if request.method == "POST":
        return Response(status_code=204, headers=_base_headers())
    if request.method not in ("GET", "HEAD"):
        return _error(request, 405, headers={"allow": "GET, HEAD, POST"})
    containers, objects, used = store.account_usage(ctx.account, ctx.now)
    headers = {**_base_headers(), "x-account-container-count": str(containers),
               "x-account-object-count": str(objects), "x-account-bytes-used": str(used),
               "x-timestamp": _timestamp(ctx.now), "accept-ranges": "bytes",
               "x-account-storage-policy-policy-0-container-count": str(containers),
               "x-account-storage-policy-policy-0-object-count": str(objects),
               "x-account-storage-policy-policy-0-bytes-used": str(used)}
    if request.method == "HEAD":
        return Response(b"", status_code=204, headers={
            **headers, "content-type": "text/plain; charset=utf-8", "content-length": "0"})
    parsed = _listing_params(request)
    if isinstance(parsed, Response):
        return parsed
    params, limit = parsed
    rows = store.list_containers(ctx.account, ctx.now, prefix=params["prefix"],
                                 marker=params["marker"], end_marker=params["end_marker"],
                                 limit=limit)
    items: list[dict[str, Any]] = [
        {"name": name, "count": count, "bytes": size, "last_modified": swift_time(created),
         "storage_policy": "Policy-0"} for name, count, size, created in rows]
    return _listing_response(request, _format(request), "account", ctx.account, items, headers)


# -- containers ------------------------------------------------------------------------------
def _meta_headers(request: Request, kind: str) -> dict[str, str]:
    prefix = f"x-{kind}-meta-"
    meta = {k.lower(): v for k, v in request.headers.items() if k.lower().startswith(prefix)}
    if kind == "container":
        for name in ("x-container-read", "x-container-write"):
            if name in request.headers:
                meta[name] = request.headers[name]
    return meta


async def container(request: Request) -> Response:
    ctx = _Ctx(request)
    denied = ctx.authorize()
    if denied is not None:
        return denied
    store, name = ctx.store, request.path_params["container"]
    method = request.method
    if method == "PUT":
        if len(name.encode()) > MAX_CONTAINER_NAME:
            return _error(request, 400, f"Container name length of {len(name.encode())} longer "
                          f"than {MAX_CONTAINER_NAME}")
        created = store.create_container(ctx.account, name, ctx.now,
                                         _meta_headers(request, "container"))
        return Response(b"", status_code=201 if created else 202,
                        headers={**_base_headers(), "content-type": "text/html; charset=UTF-8"})
    found = store.get_container(ctx.account, name)
    if found is None:
        return _error(request, 404)
    created_at, meta = found
    if method == "POST":
        store.create_container(ctx.account, name, ctx.now, _meta_headers(request, "container"))
        return Response(b"", status_code=204, headers=_base_headers())
    if method == "DELETE":
        count, _ = store.container_usage(ctx.account, name, ctx.now)
        if count:
            return _error(request, 409)
        store.delete_container(ctx.account, name)
        return Response(b"", status_code=204, headers=_base_headers())
    if method not in ("GET", "HEAD"):
        return _error(request, 405, headers={"allow": ", ".join(ALL_METHODS)})
    count, used = store.container_usage(ctx.account, name, ctx.now)
    headers = {**_base_headers(), "x-container-object-count": str(count),
               "x-container-bytes-used": str(used), "x-timestamp": _timestamp(created_at),
               "last-modified": http_date(created_at), "x-storage-policy": "Policy-0",
               "accept-ranges": "bytes", "vary": "Accept", **meta}
    if method == "HEAD":
        return Response(b"", status_code=204, headers={
            **headers, "content-type": "text/plain; charset=utf-8", "content-length": "0"})
    parsed = _listing_params(request)
    if isinstance(parsed, Response):
        return parsed
    params, limit = parsed
    items = _object_listing(ctx, name, params, limit)
    return _listing_response(request, _format(request), "container", name, items, headers)


def _object_listing(ctx: _Ctx, name: str, params: dict[str, str],
                    limit: int) -> list[dict[str, Any]]:
    store = ctx.store
    delimiter, prefix = params["delimiter"], params["prefix"]
    items: list[dict[str, Any]] = []
    marker = params["marker"]
    while len(items) < limit:
        rows = store.list_objects(ctx.account, name, ctx.now, prefix=prefix, marker=marker,
                                  end_marker=params["end_marker"], limit=limit)
        if not rows:
            break
        for row in rows:
            marker = row.name
            rest = row.name[len(prefix):]
            if delimiter and delimiter in rest:
                subdir = prefix + rest[:rest.index(delimiter) + len(delimiter)]
                if not items or items[-1].get("subdir") != subdir:
                    items.append({"subdir": subdir})
                    if len(items) >= limit:
                        break
                continue
            items.append({"hash": row.etag, "last_modified": swift_time(row.created),
                          "bytes": row.size, "name": row.name,
                          "content_type": row.content_type})
            if len(items) >= limit:
                break
        if not delimiter:
            break
    return items


# -- objects ---------------------------------------------------------------------------------
async def obj(request: Request) -> Response:
    ctx = _Ctx(request)
    denied = ctx.authorize()
    if denied is not None:
        return denied
    cname, oname = request.path_params["container"], request.path_params["object"]
    method = request.method
    if method == "PUT":
        return await _put_object(ctx, cname, oname)
    store = ctx.store
    if store.get_container(ctx.account, cname) is None:
        return _error(request, 404)
    row = store.get_object(ctx.account, cname, oname, ctx.now)
    if row is None:
        return _error(request, 404)
    if method == "DELETE":
        store.delete_object(ctx.account, cname, oname)
        return Response(b"", status_code=204, headers=_base_headers())
    if method == "POST":
        meta = {k: v for k, v in _meta_headers(request, "object").items() if v}
        store.put_object(ObjectRow(row.account, row.container, row.name, row.size, row.etag,
                                   row.content_type, row.created, row.manifest, meta,
                                   row.delete_at, row.file))
        return Response(b"", status_code=202, headers=_base_headers())
    if method not in ("GET", "HEAD"):
        return _error(request, 405, headers={"allow": ", ".join(ALL_METHODS)})
    return _get_object(ctx, row)


def _delete_at(request: Request, now: float) -> float | Response | None:
    after, at = request.headers.get("x-delete-after"), request.headers.get("x-delete-at")
    try:
        if after is not None:
            return now + int(after)
        if at is not None:
            return float(int(at))
    except ValueError:
        which = "X-Delete-After" if after is not None else "X-Delete-At"
        return _error(request, 400, f"Non-integer {which}")
    return None


async def _put_object(ctx: _Ctx, cname: str, oname: str) -> Response:
    request, store = ctx.request, ctx.store
    if len(oname.encode()) > MAX_OBJECT_NAME:
        return _error(request, 400, f"Object name length of {len(oname.encode())} longer than "
                      f"{MAX_OBJECT_NAME}")
    if request.query_params.get("multipart-manifest") == "put":
        return _error(request, 400, "Static Large Objects are not supported by the emulator")
    if store.get_container(ctx.account, cname) is None:
        return _error(request, 404)
    length = request.headers.get("content-length")
    chunked = "chunked" in request.headers.get("transfer-encoding", "").lower()
    if length is None and not chunked:
        return _error(request, 411, "Missing Content-Length header.")
    if length is not None and (not length.isdigit()):
        return _error(request, 400, "Invalid Content-Length")
    limit = ctx.state.config.max_object_size
    if length is not None and int(length) > limit:
        return _error(request, 413, "Your request is too large.")
    manifest = request.headers.get("x-object-manifest")
    if manifest is not None and ("/" not in manifest.lstrip("/") or manifest.startswith("/")):
        return _error(request, 400, "X-Object-Manifest must be in the format container/prefix")
    delete_at = _delete_at(request, ctx.now)
    if isinstance(delete_at, Response):
        return delete_at
    writer = ObjectWriter(store)
    try:
        too_large = await _take_body(request, writer, limit)
    except ClientDisconnect:
        writer.abort()
        return _error(request, 408, "Timeout waiting for the request body")
    if too_large:
        writer.abort()
        return _error(request, 413, "Your request is too large.")
    if length is not None and writer.size != int(length):
        writer.abort()
        return _error(request, 400, "Content-Length does not match the body")
    expected = request.headers.get("etag")
    if expected is not None and expected.strip('"').lower() != writer.etag:
        writer.abort()
        return _error(request, 422)
    ctype = request.headers.get("content-type") or mimetypes.guess_type(oname)[0] \
        or "application/octet-stream"
    row = writer.commit(ctx.account, cname, oname, ctx.state.clock.now(), content_type=ctype,
                        manifest=manifest, meta=_meta_headers(request, "object"),
                        delete_at=delete_at)
    return Response(b"", status_code=201, headers={
        **_base_headers(), "etag": row.etag, "last-modified": http_date(row.created),
        "content-type": "text/html; charset=UTF-8"})


async def _take_body(request: Request, writer: ObjectWriter, limit: int) -> bool:
    """Read the body into ``writer``; True when it outgrew ``limit`` (the rest is not read).

    The MD5 and the file write (about 1.5 s of CPU per GiB) run on a worker thread, a batch
    of ``INTAKE_BATCH`` bytes at a time, while the event loop goes on reading this body and
    serving the other requests: several PUTs at once, and the GETs feeding them, then use
    every core instead of queueing behind one thread's hashing."""
    loop = asyncio.get_running_loop()
    pending: asyncio.Future[None] | None = None
    batch: list[bytes] = []
    batched = received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                return True
            batch.append(chunk)
            batched += len(chunk)
            if batched >= INTAKE_BATCH:
                if pending is not None:
                    await pending  # at most one batch hashed while the next one arrives
                pending = loop.run_in_executor(None, writer.write_all, batch)
                batch, batched = [], 0
    finally:
        if pending is not None:
            # Never leave a thread writing a file the caller may be about to remove.
            await asyncio.shield(pending)
    writer.write_all(batch)
    return False


def _if_range_holds(if_range: str | None, headers: dict[str, str]) -> bool:
    """Whether a ``Range`` may be honoured: no ``If-Range``, or one naming this object's
    ETag (quoted or not, as Swift accepts) or its exact ``Last-Modified`` date."""
    if not if_range:
        return True
    value = if_range.strip()
    if value.startswith("W/"):
        return False  # a weak validator never allows a range
    etag = headers.get("etag", "").strip('"')
    if value.strip('"') == etag:
        return True
    return value == headers.get("last-modified")


def _get_object(ctx: _Ctx, row: ObjectRow) -> Response:
    request, store = ctx.request, ctx.store
    headers = {**_base_headers(), "content-type": row.content_type,
               "last-modified": http_date(row.created), "x-timestamp": _timestamp(row.created),
               "accept-ranges": "bytes", **row.meta}
    if row.delete_at is not None:
        headers["x-delete-at"] = str(int(row.delete_at))
    if row.manifest is not None:
        headers["x-object-manifest"] = row.manifest
    if row.manifest is not None and request.query_params.get("multipart-manifest") != "get":
        dlo = resolve_dlo(store, ctx.account, row.manifest, ctx.now)
        parts = dlo.paths(store)
        size = dlo.size
        headers["etag"] = dlo.etag
    else:
        parts = [(store.object_path(row), row.size)]
        size = row.size
        headers["etag"] = row.etag
    range_header = request.headers.get("range")
    if range_header and not _if_range_holds(request.headers.get("if-range"), headers):
        range_header = None  # RFC 9110 13.1.5: the object changed, send all of it
    wanted = parse_range(range_header, size)
    if wanted == UNSATISFIABLE:
        return _error(request, 416, headers={"content-range": f"bytes */{size}"})
    head = request.method == "HEAD"
    if isinstance(wanted, list) and len(wanted) == 1:
        first, last = wanted[0]
        headers["content-range"] = f"bytes {first}-{last}/{size}"
        headers["content-length"] = str(last - first + 1)
        return _file_body(head, file_slices(parts, first, last - first + 1), 206, headers)
    if isinstance(wanted, list):
        boundary = uuid.uuid4().hex
        pieces: list[tuple[bytes, int, int]] = []
        total = len(f"--{boundary}--".encode())
        for first, last in wanted:
            lead = (f"--{boundary}\r\nContent-Type: {row.content_type}\r\n"
                    f"Content-Range: bytes {first}-{last}/{size}\r\n\r\n").encode()
            pieces.append((lead, first, last))
            total += len(lead) + (last - first + 1) + 2

        def multipart() -> Iterator[bytes]:
            for lead, first, last in pieces:
                yield lead
                yield from read_slices(file_slices(parts, first, last - first + 1))
                yield b"\r\n"
            yield f"--{boundary}--".encode()

        headers["content-type"] = f"multipart/byteranges;boundary={boundary}"
        headers["content-length"] = str(total)
        return _body(head, multipart(), 206, headers)
    headers["content-length"] = str(size)
    return _file_body(head, file_slices(parts, 0, size), 200, headers)


def _file_body(head: bool, slices: list[Slice], status: int, headers: dict[str, str]
               ) -> Response:
    if head:
        return Response(b"", status_code=status, headers=headers)
    return FileSliceResponse(slices, status_code=status, headers=headers)


def _body(head: bool, content: Iterator[bytes], status: int, headers: dict[str, str]) -> Response:
    if head:
        return Response(b"", status_code=status, headers=headers)
    return StreamingResponse(content, status_code=status, headers=headers)


routes = [
    Route("/v1/{account}", account, methods=["GET", "HEAD", "POST"]),
    Route("/v1/{account}/{container}", container, methods=ALL_METHODS),
    Route("/v1/{account}/{container}/{object:path}", obj, methods=ALL_METHODS),
]

"""Version discovery (``GET /``, ``/versions``) and the emulator's own ``/_emulator/*`` API."""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from imgtools.emulator.auth import state_of
from imgtools.emulator.config import FaultSettings
from imgtools.emulator.errors import json_response
from imgtools.emulator.seed import BASE_IMAGES_OWNER, BASE_SPECS, IMAGE_SPECS, image_id_for

__all__ = ["routes"]

VERSIONS = [f"v2.{n}" for n in range(9, -1, -1)]
LOOPBACK = ("127.0.0.1", "::1", "localhost", "testclient")

_Handler = Callable[[Request], Awaitable[Response]]


def versions_doc(request: Request) -> dict[str, Any]:
    href = f"{str(request.base_url).rstrip('/')}/v2/"
    return {"versions": [
        {"id": v, "status": "CURRENT" if i == 0 else "SUPPORTED",
         "links": [{"rel": "self", "href": href}]}
        for i, v in enumerate(VERSIONS)]}


async def root(request: Request) -> Response:
    # Glance answers 300 Multiple Choices at the root, 200 at /versions.
    return json_response(versions_doc(request), 300)


async def versions(request: Request) -> Response:
    return json_response(versions_doc(request))


def _loopback_only(handler: _Handler) -> _Handler:
    """The emulator's own API (its state, faults and clock) answers loopback clients only."""

    @functools.wraps(handler)
    async def guarded(request: Request) -> Response:
        host = request.client.host if request.client else ""
        if host not in LOOPBACK and not host.startswith("127."):
            return json_response({"message": "the emulator API answers loopback clients only"},
                                 403)
        return await handler(request)

    return guarded


@_loopback_only
async def stats(request: Request) -> Response:
    state = state_of(request)
    if request.method == "DELETE":
        state.stats.reset()
        return Response(status_code=204)
    data = state.stats.snapshot()
    data["tasks_active"] = request.app.state.engine.active
    data["clock_offset"] = state.clock.offset
    return json_response(data)


@_loopback_only
async def faults(request: Request) -> Response:
    """``GET`` the fault settings; ``POST`` a JSON object of fields to change."""
    state = state_of(request)
    if request.method == "POST":
        try:
            changes = json.loads(await request.body() or b"{}")
            if not isinstance(changes, dict):
                raise TypeError("a JSON object of fault settings is expected")
            known = {f.name for f in dataclasses.fields(FaultSettings)} | {"reset"}
            unknown = sorted(set(changes) - known)
            if unknown:
                raise TypeError(f"unknown fault settings: {', '.join(unknown)}")
            if changes.pop("reset", False):
                state.faults = FaultSettings()
            state.faults = state.faults.replace(**changes)
            if state.faults.rate_limit_status not in (413, 429):
                state.faults = state.faults.replace(rate_limit_status=413)
                raise TypeError("rate_limit_status must be 413 or 429")
        except (ValueError, TypeError) as exc:
            return json_response({"message": str(exc)}, 400)
    return json_response(dataclasses.asdict(state.faults))


@_loopback_only
async def clock(request: Request) -> Response:
    """``POST {"advance": seconds}`` moves the emulator's clock (expiry tests)."""
    state = state_of(request)
    if request.method == "POST":
        try:
            body = json.loads(await request.body() or b"{}")
            seconds = float(body["advance"])
        except (ValueError, TypeError, KeyError):
            return json_response({"message": 'expected {"advance": <seconds>}'}, 400)
        state.clock.advance(seconds)
        state.wakeup.set()
    return json_response({"offset": state.clock.offset, "now": state.clock.now()})


@_loopback_only
async def info(request: Request) -> Response:
    """Users (without secrets), tenants, and the seeded image ids, for demos and tests."""
    state = state_of(request)
    config = state.config
    root = f"{request.url.scheme}://{request.url.netloc}"
    host = request.url.hostname or "127.0.0.1"
    regions: dict[str, Any] = {}
    for region in config.regions:
        where = "" if region == state.default_region else region
        tenants = {user.tenant_id: {spec.slug: image_id_for(user.tenant_id, spec.slug,
                                                            config.seed, where)
                                    for spec in IMAGE_SPECS} for user in config.users}
        base = {spec.slug: image_id_for(BASE_IMAGES_OWNER, spec.slug, config.seed, where)
                for spec in BASE_SPECS}
        regions[region] = {"images": tenants, "base_images": base,
                           "url": state.region_base(request.url.scheme, host, region, root)}
    default = regions[state.default_region]
    return json_response({
        "users": [{"username": u.username, "tenant_id": u.tenant_id, "roles": list(u.roles)}
                  for u in config.users],
        "default_region": state.default_region, "regions": regions,
        "images": default["images"], "base_images": default["base_images"],
        "segment_size": config.segment_size, "export_speed": config.export_speed,
        "pending_delay": config.pending_delay, "task_ttl": config.task_ttl,
        "token_ttl": config.token_ttl})


async def openapi(request: Request) -> Response:
    from imgtools.emulator.openapi import openapi_document

    state = state_of(request)
    accounts = sorted({state.account_for(u.tenant_id) for u in state.config.users})
    return json_response(openapi_document(str(request.base_url).rstrip("/"), accounts))


routes = [
    Route("/", root, methods=["GET"]),
    Route("/versions", versions, methods=["GET"]),
    # Not in Glance (it 404s there), but lets openstacksdk discover from an override ending
    # in /v2, the URL the service catalog gives.
    Route("/v2", root, methods=["GET"]),
    Route("/v2/", root, methods=["GET"]),
    Route("/_emulator/stats", stats, methods=["GET", "DELETE"]),
    Route("/_emulator/faults", faults, methods=["GET", "POST"]),
    Route("/_emulator/clock", clock, methods=["GET", "POST"]),
    Route("/_emulator/info", info, methods=["GET"]),
    Route("/_emulator/openapi.json", openapi, methods=["GET"]),
]

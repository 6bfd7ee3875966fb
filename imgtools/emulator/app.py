"""The ASGI application: routes of every service, stats and fault middleware, lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from imgtools.emulator import identity, image_patch, images, meta, schemas, swift, tasks
from imgtools.emulator.config import EmulatorConfig
from imgtools.emulator.engine import Engine, TaskHandler, Worker
from imgtools.emulator.errors import glance_error, swift_error
from imgtools.emulator.export import ExportHandler
from imgtools.emulator.faults import RAW_SEND, FaultMiddleware
from imgtools.emulator.importer import ImportHandler
from imgtools.emulator.regions import RegionMiddleware
from imgtools.emulator.seed import seed_images, seed_tasks
from imgtools.emulator.state import EmulatorState
from imgtools.emulator.store import Store

__all__ = ["build_app", "region_dir"]

#: Below the data dir, each region other than the default one keeps its own state here.
REGIONS_DIR = "regions"


class StatsMiddleware:
    """Counts every request by route template, method and status (outermost layer)."""

    def __init__(self, app: Any, state: EmulatorState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope[RAW_SEND] = send
        status = 0

        async def counting_send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            route = scope.get("route")
            name = getattr(route, "path", None) or "<unmatched>"
            if route is None:
                self.state.stats.miss(scope["method"], scope["path"])
            self.state.stats.request(name, scope["method"], status)


async def _not_found(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 404
    headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else {}
    if request.url.path.startswith("/v1/"):
        return swift_error(status, headers=headers, method=request.method)
    message = "The resource could not be found." if status == 404 else \
        f"The method {request.method} is not allowed for this resource."
    return glance_error(request, status, message, headers)


def region_dir(data_dir: Path, region: str, default: str) -> Path:
    """Where a region's store lives: the data dir itself for the default region (so a data
    dir made before regions existed is the default region's, unchanged)."""
    return data_dir if region == default else data_dir / REGIONS_DIR / region


def build_app(config: EmulatorConfig, data_dir: Path,
              region_ports: Mapping[str, int] | None = None) -> tuple[Any, EmulatorState]:
    """The full ASGI app over ``data_dir`` and the state it shares with its worker;
    ``region_ports`` tells which port serves which region (requests on any other port, or
    with no port, go to the default region)."""
    default = config.regions[0]
    stores = {region: Store(region_dir(data_dir, region, default)) for region in config.regions}
    state = EmulatorState(config=config, store=stores[default], stores=stores,
                          region_ports=dict(region_ports or {}))
    handlers: dict[str, dict[str, TaskHandler]] = {}
    engines = []
    for region, region_store in stores.items():
        handlers[region] = {"export": ExportHandler(state, region_store),
                            "import": ImportHandler(state, region_store)}
        engines.append(Engine(state, handlers[region], region_store))
    engine = Worker(state, engines)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        for region in config.regions:
            seed_images(state, region)
            seed_tasks(state, config.seed_tasks, region=region)
        engine.start()
        try:
            yield
        finally:
            engine.stop()
            for region_store in stores.values():
                region_store.close()

    routes = [*meta.routes, *identity.routes, *schemas.routes, *tasks.routes, *images.routes,
              *image_patch.routes, *swift.routes]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={404: _not_found, 405: _not_found})
    app.state.emulator = state
    app.state.handlers = handlers
    app.state.engine = engine
    app.state.stores = stores
    stack = StatsMiddleware(FaultMiddleware(app, state), state)
    by_port = state.regions_by_port()
    return RegionMiddleware(stack, default, lambda: by_port,
                            lambda: state.stats.event("servicenet_requests")), state

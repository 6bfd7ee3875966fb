"""The ASGI application: routes of every service, stats and fault middleware, lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from imgtools.emulator import identity, images, meta, schemas, swift, tasks
from imgtools.emulator.config import EmulatorConfig
from imgtools.emulator.engine import Engine, TaskHandler
from imgtools.emulator.errors import glance_error, swift_error
from imgtools.emulator.export import ExportHandler
from imgtools.emulator.faults import RAW_SEND, FaultMiddleware
from imgtools.emulator.importer import ImportHandler
from imgtools.emulator.seed import seed_images, seed_tasks
from imgtools.emulator.state import EmulatorState
from imgtools.emulator.store import Store

__all__ = ["build_app"]


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


def build_app(config: EmulatorConfig, data_dir: Path) -> tuple[Any, EmulatorState]:
    """The full ASGI app over ``data_dir`` and the state it shares with its worker."""
    store = Store(data_dir)
    state = EmulatorState(config=config, store=store)
    handlers: dict[str, TaskHandler] = {"export": ExportHandler(state),
                                        "import": ImportHandler(state)}
    engine = Engine(state, handlers)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        seed_images(state)
        seed_tasks(state, config.seed_tasks)
        engine.start()
        try:
            yield
        finally:
            engine.stop()
            store.close()

    routes = [*meta.routes, *identity.routes, *schemas.routes, *tasks.routes, *images.routes,
              *swift.routes]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={404: _not_found, 405: _not_found})
    app.state.emulator = state
    app.state.handlers = handlers
    app.state.engine = engine
    return StatsMiddleware(FaultMiddleware(app, state), state), state

"""Where each region lives: its own port, as each Rackspace region is its own host.

Every region has its own images, tasks and Cloud Files accounts (its own store) and its own
listening socket on the emulator's host. With ``host:P`` a region's address:

- Cloud Images: ``http://host:P/v2``; Cloud Files: ``http://host:P/v1/MossoCloudFS_<tenant>``
  (the catalog's ``publicURL``s);
- Cloud Files over ServiceNet (the catalog's ``internalURL``):
  ``http://host:P/snet/v1/MossoCloudFS_<tenant>``.

The default region (the first configured) is the emulator's own port, so everything that
worked before regions existed works unchanged, as the default region. Ports rather than path
prefixes: clients such as python-glanceclient only accept an image endpoint whose path is
the bare version (``/v2``), as Rackspace's per-region hosts give.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "SCOPE_REGION",
    "SCOPE_SERVICENET",
    "SERVICENET_PREFIX",
    "RegionMiddleware",
    "image_url",
    "internal_storage_url",
    "storage_url",
]

SERVICENET_PREFIX = "/snet"
#: ASGI scope keys the middleware sets: the region's name, and whether the request came in
#: over the ServiceNet URL.
SCOPE_REGION = "imgtools.region"
SCOPE_SERVICENET = "imgtools.servicenet"


def image_url(base: str) -> str:
    """The Cloud Images endpoint of the region answering at ``base`` (``http://host:port``)."""
    return f"{base}/v2"


def storage_url(base: str, tenant_id: str) -> str:
    return f"{base}/v1/MossoCloudFS_{tenant_id}"


def internal_storage_url(base: str, tenant_id: str) -> str:
    return f"{base}{SERVICENET_PREFIX}/v1/MossoCloudFS_{tenant_id}"


class RegionMiddleware:
    """Outermost layer: the region of a request is the one whose port it arrived on; a
    ServiceNet path has its ``/snet`` prefix moved into ``root_path``, so the routes, the
    fault middleware and the stats see the same paths on every network."""

    def __init__(self, app: Any, default: str, ports: Callable[[], Mapping[int, str]],
                 on_servicenet: Callable[[], None] | None = None) -> None:
        self.app = app
        self.default = default
        self.ports = ports
        self.on_servicenet = on_servicenet

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        server = scope.get("server")
        port = server[1] if isinstance(server, (tuple, list)) and len(server) > 1 else None
        region = self.ports().get(port, self.default) if port is not None else self.default
        scope = {**scope, SCOPE_REGION: region, SCOPE_SERVICENET: False}
        path: str = scope["path"]
        # ServiceNet reaches Cloud Files only, as on Rackspace; anything else there is 404.
        if path.startswith(SERVICENET_PREFIX + "/v1/"):
            rest = path[len(SERVICENET_PREFIX):]
            scope.update(path=rest, root_path=scope.get("root_path", "") + SERVICENET_PREFIX)
            scope[SCOPE_SERVICENET] = True
            raw = scope.get("raw_path")
            if isinstance(raw, bytes) and raw.startswith(SERVICENET_PREFIX.encode()):
                scope["raw_path"] = raw[len(SERVICENET_PREFIX):]
            if self.on_servicenet is not None:
                self.on_servicenet()
        await self.app(scope, receive, send)

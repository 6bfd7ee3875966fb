"""Cloud Images ``/v2/images``: list (filters, sorting, paging), show, and image data."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from imgtools.emulator.auth import current_token, store_of
from imgtools.emulator.clock import iso_z
from imgtools.emulator.errors import GLANCE_UNAUTHORIZED, glance_error, json_response, request_id
from imgtools.emulator.paging import ParamError, links, parse_limit, parse_sort_dir
from imgtools.emulator.ranges import UNSATISFIABLE, iter_file, parse_range
from imgtools.emulator.store import ImageRow, TokenRow

__all__ = ["image_json", "routes", "visible"]

SORT_KEYS = ("name", "status", "container_format", "disk_format", "size", "id", "created_at",
             "updated_at")
VISIBILITIES = ("public", "private", "shared", "community", "all")
STATUSES = ("queued", "saving", "active", "killed", "deleted", "pending_delete", "deactivated",
            "uploading", "importing")
#: Core attributes kept among an image's properties once a PATCH has set them.
_STORED_CORE = frozenset({"protected", "min_disk", "min_ram", "os_hidden"})
_NOT_FILTERS = {"limit", "marker", "sort_key", "sort_dir", "member_status", "size_min",
                "size_max", "tag"}


def image_json(image: ImageRow) -> dict[str, Any]:
    """The image as Glance v2 shows it; Rackspace extras are string properties."""
    data: dict[str, Any] = {
        "id": image.id,
        "name": image.name,
        "status": image.status,
        "visibility": image.visibility,
        "owner": image.owner,
        "size": image.size,
        "checksum": image.checksum,
        "protected": False,
        "min_disk": 0,
        "min_ram": 0,
        "tags": list(image.tags),
        "created_at": iso_z(image.created_at),
        "updated_at": iso_z(image.updated_at),
        "file": f"/v2/images/{image.id}/file",
        "self": f"/v2/images/{image.id}",
        "schema": "/v2/schemas/image",
    }
    for key, value in image.props.items():
        if key in _STORED_CORE:  # set by a PATCH: replaces the default above
            data[key] = value
        else:
            data.setdefault(key, value)
    return data


def visible(image: ImageRow | None, tenant: str) -> bool:
    return image is not None and (image.owner == tenant or image.visibility == "public")


def glance_token(request: Request) -> TokenRow | Response:
    """The caller's token, or the 401 Glance gives."""
    token = current_token(request)
    if token is None:
        return glance_error(request, 401, GLANCE_UNAUTHORIZED,
                            {"www-authenticate": f"Keystone uri='{request.base_url}v2.0'"})
    return token


def _filter(images: list[ImageRow], request: Request, tenant: str) -> list[ImageRow]:
    q = request.query_params
    visibility = q.get("visibility")
    if visibility is not None and visibility not in VISIBILITIES:
        raise ParamError(f"Invalid visibility value: {visibility}")
    status = q.get("status")
    if status is not None and status not in STATUSES:
        raise ParamError(f"Invalid status value: {status}")
    sizes: dict[str, int] = {}
    for name in ("size_min", "size_max"):
        if name in q:
            try:
                sizes[name] = int(q[name])
            except ValueError:
                raise ParamError(f"Invalid value for {name}: {q[name]}") from None
    tags = q.getlist("tag")
    out = []
    for image in images:
        data = image_json(image)
        if visibility not in (None, "all") and image.visibility != visibility:
            continue
        if visibility == "private" and image.owner != tenant:
            continue
        if "size_min" in sizes and (image.size or 0) < sizes["size_min"]:
            continue
        if "size_max" in sizes and (image.size or 0) > sizes["size_max"]:
            continue
        if any(tag not in image.tags for tag in tags):
            continue
        matched = True
        for key, value in q.multi_items():
            if key in _NOT_FILTERS or key == "visibility":
                continue
            have = data.get(key)
            if have is None or str(have) != value:
                matched = False
                break
        if matched:
            out.append(image)
    return out


async def list_images(request: Request) -> Response:
    token = glance_token(request)
    if isinstance(token, Response):
        return token
    store = store_of(request)
    try:
        limit = parse_limit(request)
        sort_dir = parse_sort_dir(request)
        sort_key = request.query_params.get("sort_key", "created_at")
        if sort_key not in SORT_KEYS:
            raise ParamError(f"Invalid sort key: {sort_key}. It should be one of the following:"
                             f" {', '.join(SORT_KEYS)}.")
        images = _filter(store.visible_images(token.tenant_id), request, token.tenant_id)
    except ParamError as exc:
        return glance_error(request, 400, str(exc))

    def key(image: ImageRow) -> tuple[Any, ...]:
        value = getattr(image, sort_key, None) if sort_key not in ("container_format",
                                                                   "disk_format") \
            else image.props.get(sort_key)
        return (value is not None, value if value is not None else 0, image.created_at, image.id)

    images.sort(key=key, reverse=(sort_dir == "desc"))
    marker = request.query_params.get("marker")
    if marker is not None:
        ids = [i.id for i in images]
        if marker not in ids:
            return glance_error(request, 400, f"Marker {marker} could not be found.")
        images = images[ids.index(marker) + 1:]
    page = images[:limit]
    body: dict[str, Any] = {"images": [image_json(i) for i in page]}
    body.update(links(request, "/v2/images", len(page), limit, page[-1].id if page else None))
    body["schema"] = "/v2/schemas/images"
    return json_response(body, headers={"x-openstack-request-id": request_id()})


async def show_image(request: Request) -> Response:
    token = glance_token(request)
    if isinstance(token, Response):
        return token
    image_id = request.path_params["image_id"]
    image = store_of(request).get_image(image_id)
    if image is None or not visible(image, token.tenant_id):
        return glance_error(request, 404, f"No image found with ID {image_id}")
    return json_response(image_json(image), headers={"x-openstack-request-id": request_id()})


async def image_file(request: Request) -> Response:
    token = glance_token(request)
    if isinstance(token, Response):
        return token
    store = store_of(request)
    image_id = request.path_params["image_id"]
    image = store.get_image(image_id)
    if image is None or not visible(image, token.tenant_id):
        return glance_error(request, 404, f"No image found with ID {image_id}")
    if image.status == "deactivated":
        return glance_error(request, 403, "The requested image has been deactivated. "
                            "Image data download is forbidden.")
    path = store.image_path(image.id)
    if image.status != "active" or not path.exists():
        return Response(status_code=204, headers={"x-openstack-request-id": request_id()})
    size = path.stat().st_size
    headers = {"content-type": "application/octet-stream", "x-openstack-request-id": request_id()}
    if image.checksum:
        headers["content-md5"] = image.checksum
    wanted = parse_range(request.headers.get("range"), size)
    if wanted == UNSATISFIABLE:
        return glance_error(request, 416, "Requested range not satisfiable",
                            {"content-range": f"bytes */{size}"})
    if isinstance(wanted, list) and len(wanted) == 1:
        first, last = wanted[0]
        headers.update({"content-range": f"bytes {first}-{last}/{size}",
                        "content-length": str(last - first + 1)})
        return _stream(request, path, first, last - first + 1, 206, headers)
    headers["content-length"] = str(size)
    return _stream(request, path, 0, size, 200, headers)


def _stream(request: Request, path: Any, start: int, length: int, status: int,
            headers: dict[str, str]) -> Response:
    if request.method == "HEAD":
        return Response(b"", status_code=status, headers=headers)
    return StreamingResponse(iter_file(path, start, length), status_code=status, headers=headers)


routes = [
    Route("/v2/images", list_images, methods=["GET"]),
    Route("/v2/images/{image_id}", show_image, methods=["GET"]),
    Route("/v2/images/{image_id}/file", image_file, methods=["GET"]),
]

"""``PATCH /v2/images/{id}``: JSON-patch updates of an image, with Glance's checks and answers;
and ``PUT``/``DELETE /v2/images/{id}/tags/{tag}``, Glance's one-tag calls (python-glanceclient
sends tags that way, never in a patch).

Glance checks in two stages, and so does this module: the request deserializer (media type,
body, each operation's form, path and value type: 415 and 400, and 403 for read-only or
reserved attributes), then the controller (the image, who may change what, applying the
operations in order: 404, 403, 409, 413). Messages are Glance's own
(``glance/api/v2/images.py``). Rackspace keeps its own ``com.rackspace__1__*`` properties out
of customers' hands; the emulator answers those as Glance answers reserved attributes.
"""

from __future__ import annotations

import json
import pprint
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from imgtools.emulator.auth import state_of, store_of
from imgtools.emulator.errors import glance_error, json_response, request_id
from imgtools.emulator.images import glance_token, image_json, visible
from imgtools.emulator.schemas import IMAGE_SCHEMA
from imgtools.emulator.store import ImageRow, Store

__all__ = ["PATCH_MEDIA_TYPES", "image_tag", "patch_image", "routes"]

#: The two JSON-patch dialects Glance accepts, and the JSON-schema draft each goes with.
PATCH_MEDIA_TYPES = {"application/openstack-images-v2.0-json-patch": 4,
                     "application/openstack-images-v2.1-json-patch": 10}
OPERATIONS = ("add", "remove", "replace")
READ_ONLY = ("created_at", "updated_at", "status", "checksum", "os_hash_algo", "os_hash_value",
             "size", "virtual_size", "direct_url", "self", "file", "schema", "id")
RESERVED = ("location", "deleted", "deleted_at")
RESERVED_PREFIXES = ("os_glance", "com.rackspace__1__")
#: Attributes of every image (``hasattr`` in Glance): they can be set, never removed.
CORE = ("name", "visibility", "protected", "min_disk", "min_ram", "tags", "container_format",
        "disk_format", "owner", "os_hidden", "locations")
#: Core attributes stored among the row's properties, with their values before any change.
TYPED_DEFAULTS: dict[str, Any] = {"protected": False, "min_disk": 0, "min_ram": 0,
                                  "os_hidden": False}
#: Glance's image_property_quota and image_tag_quota defaults.
PROPERTY_QUOTA = 128
TAG_QUOTA = 128
MAX_BODY = 64 * 1024
CONTAINER_FORMATS = (None, "ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed")
DISK_FORMATS = (None, "ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso",
                "ploop")

#: The schema each core attribute's new value must match (Glance's image schema).
_CORE_SCHEMAS: dict[str, dict[str, Any]] = {
    "name": {"type": ["null", "string"], "maxLength": 255},
    "visibility": {"type": "string", "enum": ["community", "public", "private", "shared"]},
    "protected": {"type": "boolean"},
    "min_disk": {"type": "integer"},
    "min_ram": {"type": "integer"},
    "os_hidden": {"type": "boolean"},
    "owner": {"type": ["null", "string"], "maxLength": 255},
    "tags": {"type": "array", "items": {"type": "string", "maxLength": 255}},
    "container_format": {"type": ["null", "string"], "enum": list(CONTAINER_FORMATS)},
    "disk_format": {"type": ["null", "string"], "enum": list(DISK_FORMATS)},
}
_EXTRA_SCHEMA: dict[str, Any] = IMAGE_SCHEMA["additionalProperties"]


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _is(value: Any, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, {"string": str, "boolean": bool, "null": type(None),
                              "array": list}[kind])


def _schema_problem(key: str, value: Any) -> str | None:
    """Glance's ``Provided object does not match schema 'image'`` text, or ``None``."""
    schema = _CORE_SCHEMAS.get(key, _EXTRA_SCHEMA)
    where = (f"schema['properties'][{key!r}]" if key in _CORE_SCHEMAS
             else "schema['additionalProperties']")
    values = [(value, schema, where, f"instance[{key!r}]")]
    if key == "tags" and isinstance(value, list):
        item = schema["items"]
        values += [(v, item, f"{where}['items']", f"instance[{key!r}][{i}]")
                   for i, v in enumerate(value)]
    for got, spec, at, instance in values:
        kinds = spec["type"] if isinstance(spec["type"], list) else [spec["type"]]
        reason = None
        if not any(_is(got, k) for k in kinds):
            shown = ", ".join(repr(k) for k in kinds)
            reason, validator = f"{got!r} is not of type {shown}", "type"
        elif "enum" in spec and got not in spec["enum"]:
            reason, validator = f"{got!r} is not one of {spec['enum']!r}", "enum"
        elif isinstance(got, str) and len(got) > spec.get("maxLength", len(got)):
            reason, validator = f"{got!r} is too long", "maxLength"
        if reason is not None:
            dump = pprint.pformat(spec, width=72).replace("\n", "\n    ")
            return (f"Provided object does not match schema 'image': {reason}\n\n"
                    f"Failed validating {validator!r} in {at}:\n    {dump}\n\n"
                    f"On {instance}:\n    {got!r}")
    return None


def _pointer(pointer: Any) -> str:
    """The attribute a JSON pointer names (Glance's checks, in Glance's order)."""
    if not isinstance(pointer, str) or not pointer.startswith("/"):
        raise _Refused(400, f'Pointer `{pointer}` does not start with "/".')
    if re.search(r"/\s*?/", pointer[1:]):
        raise _Refused(400, f'Pointer `{pointer}` contains adjacent "/".')
    if len(pointer) > 1 and pointer.endswith("/"):
        raise _Refused(400, f'Pointer `{pointer}` end with "/".')
    if pointer[1:].strip() == "/":
        raise _Refused(400, f"Pointer `{pointer}` does not contains valid token.")
    if re.search(r"~[^01]|~$", pointer):
        raise _Refused(400, f'Pointer `{pointer}` contains "~" not part of a recognized '
                       "escape sequence.")
    parts = [p.replace("~1", "/").replace("~0", "~").strip()
             for p in pointer.lstrip("/").split("/")]
    if len(parts) != 1:
        raise _Refused(400, f"Invalid JSON pointer for this resource: '/{'/'.join(parts)}'")
    return parts[0]


def _operation(raw: Any, draft: int) -> tuple[str, str, Any]:
    """``(op, attribute, value)`` of one operation object, checked as the deserializer does."""
    if not isinstance(raw, dict):
        raise _Refused(400, "Operations must be JSON objects.")
    op: Any
    if draft == 4:  # v2.0: {"replace": "/name", "value": ...}
        named = [op for op in OPERATIONS if op in raw]
        if len(named) > 1:
            raise _Refused(400, 'Operation objects must contain only one member named "add", '
                           '"remove", or "replace".')
        if not named:
            raise _Refused(400, 'Operation objects must contain exactly one member named '
                           '"add", "remove", or "replace".')
        op, pointer = named[0], raw[named[0]]
    else:
        op = raw.get("op")
        if op is None:
            raise _Refused(400, "Unable to find `op` in JSON Schema change. It must be one of "
                           "the following: add, remove, replace.")
        if op not in OPERATIONS:
            raise _Refused(400, f"Invalid operation: `{op}`. It must be one of the following: "
                           "add, remove, replace.")
        if "path" not in raw:
            raise _Refused(400, "Unable to find 'path' in JSON Schema change")
        pointer = raw["path"]
    key = _pointer(pointer)
    value = None
    if op != "remove":
        if "value" not in raw:
            raise _Refused(400, f'Operation "{op}" requires a member named "value".')
        value = raw["value"]
    if key in READ_ONLY:
        raise _Refused(403, f"Attribute '{key}' is read-only.")
    if key in RESERVED or key.startswith(RESERVED_PREFIXES):
        raise _Refused(403, f"Attribute '{key}' is reserved.")
    if op != "remove":
        problem = _schema_problem(key, value)
        if problem is not None:
            raise _Refused(400, problem)
    return op, key, value


def _parse(raw: bytes, draft: int) -> list[tuple[str, str, Any]]:
    if not raw.strip():
        raise _Refused(400, "Body expected in request.")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _Refused(400, "Malformed JSON in request body.") from None
    if not isinstance(body, list):
        raise _Refused(400, "Request body must be a JSON array of operation objects.")
    return [_operation(item, draft) for item in body]


class _Draft:
    """The image being changed: core attributes and properties, as Glance's domain object."""

    def __init__(self, image: ImageRow) -> None:
        self.image = image
        self.name = image.name
        self.visibility = image.visibility
        self.tags = list(image.tags)
        self.props = dict(image.props)

    def has(self, key: str) -> bool:
        return key in CORE or key in self.props

    def set(self, key: str, value: Any) -> None:
        if key == "locations":
            raise _Refused(403, "It's not allowed to update locations if locations are "
                           "invisible.")
        if key == "owner":
            if value != self.image.owner:
                raise _Refused(403, "Access was denied to this resource. Owner can't be "
                               "updated by non admin.")
        elif key == "visibility":
            if value in ("public", "community") and value != self.image.visibility:
                action = "publicize" if value == "public" else "communitize"
                raise _Refused(403, f"You are not authorized to complete {action}_image "
                               "action.")
            self.visibility = value
        elif key == "name":
            self.name = value
        elif key == "tags":
            self.tags = list(dict.fromkeys(value))
        else:
            self.props[key] = value

    def apply(self, op: str, key: str, value: Any, draft: int) -> None:
        if op == "remove":
            if key in CORE:
                raise _Refused(403, f"Property {key} may not be removed.")
            if key not in self.props:
                raise _Refused(409, f"Property {key} does not exist.")
            del self.props[key]
        elif op == "replace":
            if not self.has(key):
                raise _Refused(409, f"Property {key} does not exist.")
            self.set(key, value)
        else:
            if draft == 4 and self.has(key) and key != "locations":
                raise _Refused(409, f"Property {key} already present.")
            self.set(key, value)

    def check_quotas(self) -> None:
        extra = [k for k in self.props if k not in TYPED_DEFAULTS and k not in
                 ("container_format", "disk_format")]
        if len(extra) > PROPERTY_QUOTA:
            raise _Refused(413, "The limit has been exceeded on the number of allowed image "
                           f"properties. Attempted: {len(extra)}, Maximum: {PROPERTY_QUOTA}")
        if len(self.tags) > TAG_QUOTA:
            raise _Refused(413, "The limit has been exceeded on the number of allowed image "
                           f"tags. Attempted: {len(self.tags)}, Maximum: {TAG_QUOTA}")

    def row(self, now: float) -> ImageRow:
        i = self.image
        return ImageRow(i.id, i.owner, self.name, i.status, self.visibility, i.size, i.checksum,
                        i.created_at, now, self.props, self.tags, i.file)


def _own_image(store: Store, image_id: str, tenant_id: str) -> ImageRow:
    """The image to change: 404 when the tenant cannot see it, 403 when it is not theirs."""
    image = store.get_image(image_id)
    if image is None or not visible(image, tenant_id):
        raise _Refused(404, f"No image found with ID {image_id}")
    if image.owner != tenant_id:
        raise _Refused(403, "You are not authorized to complete modify_image action.")
    return image


async def patch_image(request: Request) -> Response:
    token = glance_token(request)
    if isinstance(token, Response):
        return token
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    draft = PATCH_MEDIA_TYPES.get(media)
    accepted = ", ".join(sorted(PATCH_MEDIA_TYPES))
    if draft is None:
        return glance_error(request, 415, f"The request media type {media or 'None'} is not "
                            f"supported by this server. Image PATCH expects Content-Type one "
                            f"of: {accepted}", {"accept-patch": accepted})
    raw = await request.body()
    if len(raw) > MAX_BODY:
        return glance_error(request, 413, "The request body is too large.")
    image_id = request.path_params["image_id"]
    store, state = store_of(request), state_of(request)
    try:
        changes = _parse(raw, draft)
        work = _Draft(_own_image(store, image_id, token.tenant_id))
        for op, key, value in changes:
            work.apply(op, key, value, draft)
        work.check_quotas()
    except _Refused as exc:
        return glance_error(request, exc.status, str(exc))
    updated = work.row(state.clock.now())
    store.put_image(updated)
    state.stats.event("images_patched")
    return json_response(image_json(updated), headers={"x-openstack-request-id": request_id()})


async def image_tag(request: Request) -> Response:
    """``PUT`` adds one tag (idempotent), ``DELETE`` removes one: 204 either way."""
    token = glance_token(request)
    if isinstance(token, Response):
        return token
    image_id, tag = request.path_params["image_id"], request.path_params["tag"]
    store, state = store_of(request), state_of(request)
    try:
        work = _Draft(_own_image(store, image_id, token.tenant_id))
        if request.method == "PUT":
            problem = _schema_problem("tags", [tag])
            if problem is not None:
                raise _Refused(400, problem)
            work.set("tags", [*work.tags, tag])
        elif tag in work.tags:
            work.set("tags", [t for t in work.tags if t != tag])
        else:
            raise _Refused(404, "The resource could not be found.")
        work.check_quotas()
    except _Refused as exc:
        return glance_error(request, exc.status, str(exc))
    store.put_image(work.row(state.clock.now()))
    return Response(status_code=204, headers={"x-openstack-request-id": request_id()})


# GET on the same path is images.show_image's route; the router picks by method.
routes = [Route("/v2/images/{image_id}", patch_image, methods=["PATCH"]),
          Route("/v2/images/{image_id}/tags/{tag}", image_tag, methods=["PUT", "DELETE"])]

"""JSON schemas served at ``/v2/schemas/...``.

python-glanceclient validates every task it receives (and every field it sets) against
``/v2/schemas/task`` with warlock, so the schema declares every key the emulator returns,
allows ``null`` where it sends null, and lists ``export`` as a task type.
"""

from __future__ import annotations

import copy
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from imgtools.emulator.errors import glance_error, json_response
from imgtools.emulator.images import glance_token

__all__ = ["TASKS_SCHEMA", "TASK_SCHEMA", "TASK_TYPES", "routes"]

TASK_TYPES = ("import", "export")
TASK_STATUSES = ("pending", "processing", "success", "failure")
UUID_PATTERN = ("^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}"
                "-([0-9a-fA-F]){12}$")

_TASK_PROPERTIES: dict[str, Any] = {
    "id": {"description": "An identifier for the task", "pattern": UUID_PATTERN,
           "type": "string"},
    "type": {"description": "The type of task represented by this content",
             "enum": list(TASK_TYPES), "type": "string"},
    "status": {"description": "The current status of this task", "enum": list(TASK_STATUSES),
               "type": "string"},
    "input": {"description": "The parameters required by task, JSON blob",
              "type": ["null", "object"]},
    "result": {"description": "The result of current task, JSON blob",
               "type": ["null", "object"]},
    "owner": {"description": "An identifier for the owner of this task", "type": "string"},
    "message": {"description": "Human-readable informative message only included when "
                               "appropriate (usually on failure)", "type": "string"},
    "expires_at": {"description": "Datetime when this resource would be subject to removal",
                   "type": ["null", "string"]},
    "created_at": {"description": "Datetime when this resource was created", "type": "string"},
    "updated_at": {"description": "Datetime when this resource was updated", "type": "string"},
    "self": {"readOnly": True, "type": "string"},
    "schema": {"readOnly": True, "type": "string"},
}

TASK_SCHEMA: dict[str, Any] = {"name": "task", "properties": _TASK_PROPERTIES}

_STUB_PROPERTIES = {k: v for k, v in _TASK_PROPERTIES.items()
                    if k not in ("input", "result", "message")}

TASKS_SCHEMA: dict[str, Any] = {
    "name": "tasks",
    "properties": {
        "tasks": {"type": "array", "items": {"name": "task", "properties": _STUB_PROPERTIES}},
        "first": {"type": "string"},
        "next": {"type": "string"},
        "schema": {"type": "string"},
    },
    "links": [{"rel": "first", "href": "{first}"}, {"rel": "next", "href": "{next}"},
              {"rel": "describedby", "href": "{schema}"}],
}

# Images carry arbitrary string properties (the Rackspace extras), hence additionalProperties.
IMAGE_SCHEMA: dict[str, Any] = {
    "name": "image",
    "properties": {
        "id": {"type": "string", "pattern": UUID_PATTERN},
        "name": {"type": ["null", "string"], "maxLength": 255},
        "status": {"type": "string", "readOnly": True,
                   "enum": ["queued", "saving", "active", "killed", "deleted", "pending_delete",
                            "deactivated", "uploading", "importing"]},
        "visibility": {"type": "string", "enum": ["public", "private", "shared", "community"]},
        "owner": {"type": ["null", "string"]},
        "size": {"type": ["null", "integer"], "readOnly": True},
        "checksum": {"type": ["null", "string"], "readOnly": True},
        "protected": {"type": "boolean"},
        "min_disk": {"type": "integer"},
        "min_ram": {"type": "integer"},
        "disk_format": {"type": ["null", "string"]},
        "container_format": {"type": ["null", "string"]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "created_at": {"type": "string", "readOnly": True},
        "updated_at": {"type": "string", "readOnly": True},
        "file": {"type": "string", "readOnly": True},
        "self": {"type": "string", "readOnly": True},
        "schema": {"type": "string", "readOnly": True},
    },
    "additionalProperties": {"type": "string"},
    "links": [{"rel": "self", "href": "{self}"}, {"rel": "enclosure", "href": "{file}"},
              {"rel": "describedby", "href": "{schema}"}],
}

IMAGES_SCHEMA: dict[str, Any] = {
    "name": "images",
    "properties": {
        "images": {"type": "array", "items": IMAGE_SCHEMA},
        "first": {"type": "string"},
        "next": {"type": "string"},
        "schema": {"type": "string"},
    },
    "links": [{"rel": "first", "href": "{first}"}, {"rel": "next", "href": "{next}"},
              {"rel": "describedby", "href": "{schema}"}],
}

# python-glanceclient's CLI reads these two at start; the emulator has no metadata
# definitions, so they declare nothing (a 404 would work too, but fills the stats with misses).
_METADEFS: dict[str, Any] = {
    "metadefs/namespace": {"name": "namespace", "properties": {}},
    "metadefs/resource_type": {"name": "resource_type", "properties": {}},
}

_SCHEMAS = {"task": TASK_SCHEMA, "tasks": TASKS_SCHEMA, "image": IMAGE_SCHEMA,
            "images": IMAGES_SCHEMA, **_METADEFS}


async def schema(request: Request) -> Response:
    token = glance_token(request)
    if isinstance(token, Response):
        return token
    name = request.url.path.removeprefix("/v2/schemas/")
    if name not in _SCHEMAS:
        return glance_error(request, 404, "The resource could not be found.")
    return json_response(copy.deepcopy(_SCHEMAS[name]))


routes = [Route("/v2/schemas/{name:str}", schema, methods=["GET"]),
          Route("/v2/schemas/metadefs/{name:str}", schema, methods=["GET"])]

"""Cloud Images ``/v2/tasks``: create, list (filters, sorting, keyset paging), show, 405s."""

from __future__ import annotations

import json
import pprint
import re
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from imgtools.emulator.auth import region_of, state_of, store_of
from imgtools.emulator.clock import iso_z
from imgtools.emulator.engine import TaskHandler
from imgtools.emulator.errors import glance_error, json_response, request_id
from imgtools.emulator.images import glance_token
from imgtools.emulator.paging import ParamError, links, parse_limit, parse_sort_dir
from imgtools.emulator.schemas import TASK_SCHEMA, TASK_STATUSES, TASK_TYPES
from imgtools.emulator.store import TaskRow, TokenRow

__all__ = ["routes", "task_json"]

SORT_KEYS = ("id", "type", "status", "owner", "created_at", "updated_at", "expires_at")
NOT_AUTHORIZED = "You are not authorized to complete tasks_api_access action."
DELETE_MESSAGE = ("This operation is currently not permitted on Glance Tasks. They are auto "
                  "deleted after reaching the time based on their expires_at property.")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?"
                   r"[0-9a-fA-F]{12}$")


def task_json(task: TaskRow, empty_message: str) -> dict[str, Any]:
    """The full task (``GET /v2/tasks/{id}``, ``POST`` response); key order as Glance's."""
    data: dict[str, Any] = {
        "id": task.id,
        "input": task.input,
        "type": task.type,
        "status": task.status,
        "owner": task.owner,
        "message": task.message or empty_message,
        "result": task.result,
        "created_at": iso_z(task.created_at),
        "updated_at": iso_z(task.updated_at),
        "self": f"/v2/tasks/{task.id}",
        "schema": "/v2/schemas/task",
    }
    if task.expires_at is not None:
        data["expires_at"] = iso_z(task.expires_at)
    return data


def _admin_token(request: Request) -> TokenRow | Response:
    token = glance_token(request)
    if isinstance(token, Response):
        return token
    if not any(role.lower() in ("admin", "cloudimages:admin") for role in token.roles):
        return glance_error(request, 403, NOT_AUTHORIZED)
    return token


def _not_allowed(request: Request, allow: str) -> Response:
    return glance_error(request, 405, f"The method {request.method} is not allowed for this "
                        "resource.", {"allow": allow})


# -- POST /v2/tasks: Glance's synchronous checks, in Glance's order ---------------------------
class _BadTask(ValueError):
    pass


def _schema_failure(reason: str, validator: str, key: str | None, value: Any) -> _BadTask:
    if key is None:
        where, schema, instance = "schema", TASK_SCHEMA, "instance"
    else:
        where = f"schema['properties'][{key!r}]"
        schema, instance = TASK_SCHEMA["properties"][key], f"instance[{key!r}]"
    dump = pprint.pformat(schema, width=72).replace("\n", "\n    ")
    return _BadTask(f"Provided object does not match schema 'task': {reason}\n\n"
                    f"Failed validating {validator!r} in {where}:\n    {dump}\n\n"
                    f"On {instance}:\n    {value!r}")


_JSON_TYPES: dict[str, type] = {"string": str, "object": dict, "null": type(None)}


def _validate(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise _schema_failure(f"{body!r} is not of type 'object'", "type", None, body)
    for name in ("type", "input"):
        if name not in body:
            raise _BadTask(f"Task '{name}' is required")
    props = TASK_SCHEMA["properties"]
    extra = [k for k in body if k not in props]
    if extra:
        names = ", ".join(repr(k) for k in extra)
        verb = "was" if len(extra) == 1 else "were"
        raise _schema_failure(f"Additional properties are not allowed ({names} {verb} "
                              "unexpected)", "additionalProperties", None, body)
    for key, value in body.items():
        spec = props[key]
        types = spec["type"] if isinstance(spec["type"], list) else [spec["type"]]
        if not any(isinstance(value, _JSON_TYPES[t]) for t in types):
            wanted = ", ".join(repr(t) for t in types)
            raise _schema_failure(f"{value!r} is not of type {wanted}", "type", key, value)
        if "enum" in spec and value not in spec["enum"]:
            raise _schema_failure(f"{value!r} is not one of {spec['enum']!r}", "enum", key, value)
        if "pattern" in spec and not re.search(spec["pattern"], value):
            raise _schema_failure(f"{value!r} does not match {spec['pattern']!r}", "pattern",
                                  key, value)
    return body


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or ``None`` when it is over ``limit`` bytes (checked while reading)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def create_task(request: Request) -> Response:
    token = _admin_token(request)
    if isinstance(token, Response):
        return token
    state = state_of(request)
    raw = await _read_body(request, state.config.max_json_body)
    if raw is None:
        return glance_error(request, 413, "The request body is too large.")
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media and media not in ("application/json", "application/octet-stream"):
        # glanceclient's HTTP layer labels even GETs octet-stream; POSTs it labels JSON.
        return glance_error(request, 415, f"Unsupported Content-Type: {media}")
    if not raw.strip():
        return glance_error(request, 400, "Body expected in request.")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return glance_error(request, 400, "Malformed JSON in request body.")
    try:
        body = _validate(body)
    except _BadTask as exc:
        return glance_error(request, 400, str(exc))
    handlers: dict[str, TaskHandler] = request.app.state.handlers[region_of(request)]
    handler = handlers[body["type"]]
    problem = handler.check_input(body["input"])
    if problem is not None:
        return glance_error(request, 400, problem)
    now = state.clock.now()
    task = TaskRow(str(uuid.uuid4()), token.tenant_id, body["type"], "pending", body["input"],
                   None, "", now, now, None)
    store_of(request).insert_task(task)
    state.stats.event("tasks_created")
    state.wakeup.set()
    location = f"{str(request.base_url).rstrip('/')}/v2/tasks/{task.id}"
    return json_response(task_json(task, state.config.empty_message), 201,
                         {"location": location, "x-openstack-request-id": request_id()})


# -- GET /v2/tasks ---------------------------------------------------------------------------
async def tasks_collection(request: Request) -> Response:
    if request.method == "POST":
        return await create_task(request)
    token = _admin_token(request)
    if isinstance(token, Response):
        return token
    if request.method not in ("GET", "HEAD"):
        return _not_allowed(request, "GET, POST")
    state = state_of(request)
    q = request.query_params
    now = state.clock.now()
    try:
        limit = parse_limit(request)
        sort_dir = parse_sort_dir(request)
        sort_key = q.get("sort_key", "created_at")
        if sort_key not in SORT_KEYS:
            raise ParamError("Sort key supplied was not valid.")
        filters: dict[str, str] = {}
        status = q.get("status")
        if status is not None:
            if status not in TASK_STATUSES:
                raise ParamError(f"Invalid status value: {status}")
            filters["status"] = status
        task_type = q.get("type")
        if task_type is not None:
            if task_type not in TASK_TYPES:
                raise ParamError(f"Invalid type value: {task_type}")
            filters["type"] = task_type
        marker_row = None
        marker = q.get("marker")
        if marker is not None:
            if not _UUID.match(marker):
                raise ParamError("Invalid marker format")
            marker_row = store_of(request).get_task(marker, token.tenant_id, now)
            if marker_row is None:
                raise ParamError(f"Task with the given id {marker} was not found")
    except ParamError as exc:
        return glance_error(request, 400, str(exc))
    rows = store_of(request).list_task_stubs(token.tenant_id, now, filters=filters,
                                       sort_key=sort_key, sort_dir=sort_dir, limit=limit,
                                       marker=marker_row)
    envelope: dict[str, Any] = links(request, "/v2/tasks", len(rows), limit,
                                     rows[-1][0] if rows else None)
    envelope["schema"] = "/v2/schemas/tasks"
    # The stubs arrive as JSON text from SQLite; splice them in rather than re-encode.
    tail = json.dumps(envelope)[1:]
    body = '{"tasks": [' + ", ".join(stub for _, stub in rows) + "], " + tail
    return Response(body.encode(), media_type="application/json",
                    headers={"x-openstack-request-id": request_id()})


# -- /v2/tasks/{id} --------------------------------------------------------------------------
async def task_item(request: Request) -> Response:
    token = _admin_token(request)
    if isinstance(token, Response):
        return token
    if request.method == "DELETE":
        return glance_error(request, 405, DELETE_MESSAGE, {"allow": "GET"})
    if request.method not in ("GET", "HEAD"):
        return _not_allowed(request, "GET, DELETE")
    state = state_of(request)
    task_id = request.path_params["task_id"]
    task = store_of(request).get_task(task_id, token.tenant_id, state.clock.now())
    if task is None:
        return glance_error(request, 404, f"Could not find task {task_id}")
    return json_response(task_json(task, state.config.empty_message),
                         headers={"x-openstack-request-id": request_id()})


ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
routes = [
    Route("/v2/tasks", tasks_collection, methods=ALL_METHODS),
    Route("/v2/tasks/{task_id}", task_item, methods=ALL_METHODS),
]

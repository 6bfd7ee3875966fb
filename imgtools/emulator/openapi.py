"""The OpenAPI 3.0 description of the emulated API, served at ``/_emulator/openapi.json``.

Built from the same schemas the routes serve, so it stays in step with them; property-based
tests (schemathesis) run against it.
"""

from __future__ import annotations

import copy
from typing import Any

from imgtools.emulator.image_patch import PATCH_MEDIA_TYPES
from imgtools.emulator.images import SORT_KEYS as IMAGE_SORT_KEYS
from imgtools.emulator.images import STATUSES as IMAGE_STATUSES
from imgtools.emulator.schemas import IMAGE_SCHEMA, TASK_SCHEMA, TASK_STATUSES, TASK_TYPES
from imgtools.emulator.tasks import SORT_KEYS as TASK_SORT_KEYS

__all__ = ["openapi_document"]


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """JSON-schema ``type: [null, x]`` to OpenAPI 3.0 ``nullable``."""
    out = copy.deepcopy(schema)
    out.pop("readOnly", None)
    kinds = out.get("type")
    if isinstance(kinds, list):
        rest = [k for k in kinds if k != "null"]
        out["type"] = rest[0]
        if "null" in kinds:
            out["nullable"] = True
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = _nullable(out["additionalProperties"])
    for key, value in list(out.get("properties", {}).items()):
        out["properties"][key] = _nullable(value)
    if "items" in out:
        out["items"] = _nullable(out["items"])
    out.pop("name", None)
    out.pop("links", None)
    return out


def _task_schema() -> dict[str, Any]:
    schema = _nullable(TASK_SCHEMA)
    schema["required"] = ["id", "type", "status", "input", "result", "owner", "message",
                          "created_at", "updated_at", "self", "schema"]
    schema["additionalProperties"] = False
    return schema


def _stub_schema() -> dict[str, Any]:
    schema = _task_schema()
    for key in ("input", "result", "message"):
        schema["properties"].pop(key)
    schema["required"] = ["id", "type", "status", "owner", "created_at", "updated_at", "self",
                          "schema"]
    return schema


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/GlanceError"}},
        "text/html": {"schema": {"type": "string"}}}}


def _swift_error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}


def _q(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "in": "query", "required": False, "schema": schema}
    if description:
        out["description"] = description
    return out


def _p(name: str, description: str = "") -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"},
            "description": description}


_GLANCE_ERRORS = {"400": _error("Bad request"), "401": _error("Missing, unknown or expired token")}
_TOKEN: list[dict[str, list[str]]] = [{"token": []}]
_LISTING = [
    _q("format", {"type": "string", "enum": ["json", "plain", "xml"]}),
    _q("prefix", {"type": "string"}), _q("marker", {"type": "string"}),
    _q("end_marker", {"type": "string"}), _q("delimiter", {"type": "string"}),
    _q("limit", {"type": "integer", "minimum": 0, "maximum": 10000}),
]
_OBJECT_HEADERS = {name: {"schema": {"type": "string"}} for name in
                   ("Etag", "Last-Modified", "X-Timestamp", "X-Trans-Id")}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def openapi_document(server_url: str = "", accounts: list[str] | None = None) -> dict[str, Any]:
    """The whole document; ``server_url`` becomes its ``servers`` entry and ``accounts``
    (``MossoCloudFS_<tenant>`` of the configured users) the values of ``{account}``."""
    account = _p("account", "MossoCloudFS_<tenant>: the caller's own account; any other "
                            "is 404")
    if accounts:
        account["schema"] = {"type": "string", "enum": accounts}
    swift_params = [account]
    task_ref = {"$ref": "#/components/schemas/Task"}
    tasks_list = {
        "type": "object", "required": ["tasks", "first", "schema"], "additionalProperties": False,
        "properties": {"tasks": {"type": "array", "items": _ref("TaskStub")},
                       "first": {"type": "string"}, "next": {"type": "string"},
                       "schema": {"type": "string"}}}
    image = _nullable(IMAGE_SCHEMA)
    images_list = {
        "type": "object", "required": ["images", "first", "schema"],
        "properties": {"images": {"type": "array", "items": _ref("Image")},
                       "first": {"type": "string"}, "next": {"type": "string"},
                       "schema": {"type": "string"}}}
    # Glance rejects unknown top-level keys, and each type has its own input.
    task_create = {"oneOf": [
        {"type": "object", "required": ["type", "input"], "additionalProperties": False,
         "properties": {"type": {"type": "string", "enum": ["export"]},
                        "input": _ref("ExportInput")}},
        {"type": "object", "required": ["type", "input"], "additionalProperties": False,
         "properties": {"type": {"type": "string", "enum": ["import"]},
                        "input": _ref("ImportInput")}},
    ]}
    paths: dict[str, Any] = {
        "/": {"get": {"summary": "Version discovery (Glance answers 300)", "security": [],
                      "responses": {"300": {"description": "Versions", "content": {
                          "application/json": {"schema": _ref("Versions")}}}}}},
        "/versions": {"get": {"summary": "Version list", "security": [], "responses": {
            "200": {"description": "Versions", "content": {
                "application/json": {"schema": _ref("Versions")}}}}}},
        "/v2.0/tokens": {"post": {
            "summary": "Authenticate (Rackspace identity v2.0)", "security": [],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/AuthRequest"}}}},
            "responses": {
                "200": {"description": "Token and service catalog", "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Access"}}}},
                "400": {"description": "Malformed request", "content": {"application/json": {
                    "schema": {"type": "object"}}}},
                "401": {"description": "Bad credentials", "content": {"application/json": {
                    "schema": {"type": "object"}}}},
                "413": {"description": "Body too large", "content": {"application/json": {
                    "schema": {"type": "object"}}}}}}},
        "/v2/schemas/{name}": {"get": {
            "summary": "JSON schema (task, tasks, image, images)",
            "parameters": [{"name": "name", "in": "path", "required": True, "schema": {
                "type": "string", "enum": ["task", "tasks", "image", "images"]}}],
            "responses": {"200": {"description": "Schema", "content": {"application/json": {
                "schema": {"type": "object"}}}}, "401": _GLANCE_ERRORS["401"],
                "404": _error("No such schema")}}},
        "/v2/images": {"get": {
            "summary": "List images visible to the tenant",
            "parameters": [
                _q("limit", {"type": "integer", "minimum": 0}), _q("marker", {"type": "string"}),
                _q("sort_key", {"type": "string", "enum": list(IMAGE_SORT_KEYS)}),
                _q("sort_dir", {"type": "string", "enum": ["asc", "desc"]}),
                _q("name", {"type": "string"}),
                _q("status", {"type": "string", "enum": list(IMAGE_STATUSES)}),
                _q("visibility", {"type": "string", "enum": ["public", "private", "shared",
                                                             "community", "all"]}),
                _q("owner", {"type": "string"}), _q("tag", {"type": "string"}),
                _q("size_min", {"type": "integer"}), _q("size_max", {"type": "integer"})],
            "responses": {"200": {"description": "A page of images", "content": {
                "application/json": {"schema": images_list}}}, **_GLANCE_ERRORS}}},
        "/v2/images/{image_id}": {"get": {
            "summary": "Show an image", "parameters": [_p("image_id")],
            "responses": {"200": {"description": "The image", "content": {"application/json": {
                "schema": _ref("Image")}}},
                "401": _GLANCE_ERRORS["401"], "404": _error("No such image (or not visible)")}},
            "patch": {
                "summary": "Change an image's attributes, properties and tags (JSON patch)",
                "parameters": [_p("image_id")],
                "requestBody": {"required": True, "content": {
                    media: {"schema": _ref("ImagePatch")} for media in PATCH_MEDIA_TYPES}},
                "responses": {
                    "200": {"description": "The changed image", "content": {
                        "application/json": {"schema": _ref("Image")}}},
                    **_GLANCE_ERRORS,
                    "403": _error("Read-only or reserved attribute, or not the owner's"),
                    "404": _error("No such image (or not visible)"),
                    "409": _error("Property does not exist (or, v2.0, already present)"),
                    "413": _error("Property or tag quota exceeded, or body too large"),
                    "415": _error("Not a JSON-patch media type")}}},
        "/v2/images/{image_id}/file": {"get": {
            "summary": "Download the image's bytes (single Range supported)",
            "parameters": [_p("image_id")],
            "responses": {
                "200": {"description": "The bytes", "content": {"application/octet-stream": {
                    "schema": {"type": "string", "format": "binary"}}}},
                "204": {"description": "No data (image not active)"},
                "206": {"description": "Partial content", "content": {
                    "application/octet-stream": {"schema": {"type": "string",
                                                            "format": "binary"}}}},
                "401": _GLANCE_ERRORS["401"], "403": _error("Image deactivated"),
                "404": _error("No such image"), "416": _error("Range not satisfiable")}}},
        "/v2/tasks": {
            "get": {
                "summary": "List the tenant's tasks (stubs, newest first)",
                "parameters": [
                    _q("limit", {"type": "integer", "minimum": 0},
                       "default 25, at most 1000"),
                    _q("marker", {"type": "string", "format": "uuid"}),
                    _q("sort_key", {"type": "string", "enum": list(TASK_SORT_KEYS)}),
                    _q("sort_dir", {"type": "string", "enum": ["asc", "desc"]}),
                    _q("type", {"type": "string", "enum": list(TASK_TYPES)}),
                    _q("status", {"type": "string", "enum": list(TASK_STATUSES)})],
                "responses": {"200": {"description": "A page of task stubs", "content": {
                    "application/json": {"schema": tasks_list}}}, **_GLANCE_ERRORS,
                    "403": _error("Missing admin role")}},
            "post": {
                "summary": "Create a task (export or import)",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": task_create}}},
                "responses": {
                    "201": {"description": "The pending task", "headers": {
                        "Location": {"schema": {"type": "string"}}},
                        "content": {"application/json": {"schema": task_ref}}},
                    **_GLANCE_ERRORS, "403": _error("Missing admin role"),
                    "413": _error("Body too large"), "415": _error("Unsupported media type")}}},
        # DELETE (and every other method) answers 405: tasks are removed when they expire.
        "/v2/tasks/{task_id}": {
            "get": {"summary": "Show a task", "parameters": [_p("task_id")],
                    "responses": {"200": {"description": "The task", "content": {
                        "application/json": {"schema": task_ref}}},
                        "401": _GLANCE_ERRORS["401"], "403": _error("Missing admin role"),
                        "404": _error("No such task (or expired, or another tenant's)")}}},
        "/v1/{account}": {
            "parameters": swift_params,
            "post": {"summary": "Update account metadata", "responses": {
                "204": {"description": "Updated"}, "401": _swift_error("Bad token"),
                "404": _swift_error("Not your account")}},
            "head": {"summary": "Account metadata", "responses": {
                "204": {"description": "Counts in X-Account-* headers"},
                "401": _swift_error("Bad token"), "404": _swift_error("Not your account")}},
            "get": {"summary": "List containers", "parameters": _LISTING, "responses": {
                "200": {"description": "Listing", "content": {
                    "application/json": {"schema": {"type": "array", "items": {
                        "$ref": "#/components/schemas/ContainerEntry"}}},
                    "text/plain": {"schema": {"type": "string"}},
                    "application/xml": {"schema": {"type": "string"}}}},
                "204": {"description": "Empty plain listing"},
                "401": _swift_error("Bad token"), "404": _swift_error("Not your account"),
                "412": _swift_error("Bad limit")}}},
        "/v1/{account}/{container}": {
            "parameters": [*swift_params, _p("container")],
            "put": {"summary": "Create a container", "responses": {
                "201": {"description": "Created"}, "202": {"description": "Already existed"},
                "400": _swift_error("Bad name"), "401": _swift_error("Bad token"),
                "404": _swift_error("Not your account")}},
            "head": {"summary": "Container metadata", "responses": {
                "204": {"description": "Counts in X-Container-* headers"},
                "401": _swift_error("Bad token"), "404": _swift_error("No such container")}},
            "get": {"summary": "List objects", "parameters": _LISTING, "responses": {
                "200": {"description": "Listing", "content": {
                    "application/json": {"schema": {"type": "array", "items": {
                        "$ref": "#/components/schemas/ObjectEntry"}}},
                    "text/plain": {"schema": {"type": "string"}},
                    "application/xml": {"schema": {"type": "string"}}}},
                "204": {"description": "Empty plain listing"},
                "401": _swift_error("Bad token"), "404": _swift_error("No such container"),
                "412": _swift_error("Bad limit")}},
            "post": {"summary": "Update container metadata (X-Container-Meta-*)", "responses": {
                "204": {"description": "Updated"}, "401": _swift_error("Bad token"),
                "404": _swift_error("No such container")}},
            "delete": {"summary": "Delete an empty container", "responses": {
                "204": {"description": "Deleted"}, "401": _swift_error("Bad token"),
                "404": _swift_error("No such container"), "409": _swift_error("Not empty")}}},
        "/v1/{account}/{container}/{object}": {
            "parameters": [*swift_params, _p("container"), _p("object")],
            "put": {"summary": "Upload an object (X-Object-Manifest makes a DLO)",
                    "requestBody": {"content": {"application/octet-stream": {
                        "schema": {"type": "string", "format": "binary"}}}},
                    "responses": {"201": {"description": "Stored", "headers": _OBJECT_HEADERS},
                                  "400": _swift_error("Bad request"),
                                  "401": _swift_error("Bad token"),
                                  "404": _swift_error("No such container"),
                                  "411": _swift_error("No Content-Length"),
                                  "413": _swift_error("Too large"),
                                  "422": _swift_error("ETag mismatch")}},
            "head": {"summary": "Object metadata", "responses": {
                "200": {"description": "Headers", "headers": _OBJECT_HEADERS},
                "206": {"description": "Range headers"},
                "401": _swift_error("Bad token"), "404": _swift_error("No such object"),
                "416": _swift_error("Bad range")}},
            "get": {"summary": "Download (a manifest streams its segments)",
                    "parameters": [_q("multipart-manifest", {"type": "string"},
                                      "'get' returns a manifest itself; other values are "
                                      "ignored")],
                    "responses": {
                        "200": {"description": "Bytes, with the Content-Type they were stored "
                                               "with", "headers": _OBJECT_HEADERS, "content": {
                            "*/*": {"schema": {"type": "string", "format": "binary"}}}},
                        "206": {"description": "Partial content"},
                        "401": _swift_error("Bad token"), "404": _swift_error("No such object"),
                        "416": _swift_error("Bad range")}},
            "post": {"summary": "Replace object metadata (X-Object-Meta-*)", "responses": {
                "202": {"description": "Updated"}, "401": _swift_error("Bad token"),
                "404": _swift_error("No such object")}},
            "delete": {"summary": "Delete", "responses": {
                "204": {"description": "Deleted"}, "401": _swift_error("Bad token"),
                "404": _swift_error("No such object")}}},
    }
    components = {
        "securitySchemes": {"token": {"type": "apiKey", "in": "header", "name": "X-Auth-Token"}},
        "schemas": {
            "Task": _task_schema(),
            "TaskStub": _stub_schema(),
            "ExportInput": {"type": "object", "additionalProperties": False,
                            "required": ["image_uuid", "receiving_swift_container"],
                            "properties": {"image_uuid": {"type": "string", "format": "uuid"},
                                           "receiving_swift_container": {"type": "string",
                                                                         "minLength": 1}}},
            # Only import_from is checked at POST time; the rest is checked by the worker,
            # which fails the task (Rackspace: name is the only image property allowed).
            "ImportInput": {"type": "object", "required": ["import_from"],
                            "properties": {
                                "import_from": {"type": "string", "pattern": "^[^/]+/.+$"},
                                "import_from_format": {"description": "Not checked (pyrax sends "
                                                                      "\"vhd\")"},
                                "image_properties": {
                                    "description": "Checked by the worker: anything but "
                                                   "{\"name\": ...} fails the task."}}},
            "Image": image,
            # v2.1 operation objects; v2.0 ones name the operation as a member instead.
            "ImagePatch": {"type": "array", "items": {
                "type": "object", "required": ["op", "path"], "properties": {
                    "op": {"type": "string", "enum": ["add", "remove", "replace"]},
                    "path": {"type": "string", "pattern": "^/"},
                    "value": {"description": "Required by add and replace"}}}},
            "GlanceError": {"type": "object", "required": ["message", "code", "title"],
                            "properties": {"message": {"type": "string"},
                                           "code": {"type": "string"},
                                           "title": {"type": "string"}}},
            "Versions": {"type": "object", "required": ["versions"], "properties": {
                "versions": {"type": "array", "items": {"type": "object", "properties": {
                    "id": {"type": "string"}, "status": {"type": "string"},
                    "links": {"type": "array", "items": {"type": "object"}}}}}}},
            "AuthRequest": {"type": "object", "required": ["auth"], "properties": {
                "auth": {"type": "object", "anyOf": [
                    {"required": ["RAX-KSKEY:apiKeyCredentials"]},
                    {"required": ["passwordCredentials"]}], "properties": {
                    "RAX-KSKEY:apiKeyCredentials": {
                        "type": "object", "required": ["username", "apiKey"],
                        "properties": {"username": {"type": "string", "minLength": 1},
                                       "apiKey": {"type": "string", "minLength": 1}}},
                    "passwordCredentials": {
                        "type": "object", "required": ["username", "password"],
                        "properties": {"username": {"type": "string", "minLength": 1},
                                       "password": {"type": "string", "minLength": 1}}},
                    "tenantId": {"type": "string"}}}}},
            "Access": {"type": "object", "required": ["access"], "properties": {
                "access": {"type": "object", "required": ["token", "serviceCatalog", "user"],
                           "properties": {
                               "token": {"type": "object", "required": ["id", "expires",
                                                                        "tenant"]},
                               "serviceCatalog": {"type": "array",
                                                  "items": {"type": "object"}},
                               "user": {"type": "object"}}}}},
            "ContainerEntry": {"type": "object", "required": ["name", "count", "bytes"],
                               "properties": {"name": {"type": "string"},
                                              "count": {"type": "integer"},
                                              "bytes": {"type": "integer"},
                                              "last_modified": {"type": "string"},
                                              "storage_policy": {"type": "string"}}},
            "ObjectEntry": {"type": "object", "properties": {
                "name": {"type": "string"}, "hash": {"type": "string"},
                "bytes": {"type": "integer"}, "content_type": {"type": "string"},
                "last_modified": {"type": "string"}, "subdir": {"type": "string"}}},
        },
    }
    doc: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {"title": "imgtools emulator: Cloud Images v2 tasks, Cloud Files, identity",
                 "version": "1.0"},
        "paths": paths,
        "components": components,
        "security": _TOKEN,
    }
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc

"""Error and JSON responses in the dialect of each service.

Glance (webob) answers errors as HTML unless the client accepts JSON, then
``{"message": "<text><br /><br />\\n\\n\\n", "code": "404 Not Found", "title": "Not Found"}``.
Swift answers short HTML; identity answers Rackspace-style JSON faults.
"""

from __future__ import annotations

import html
import json
import uuid
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

__all__ = [
    "GLANCE_UNAUTHORIZED",
    "glance_error",
    "identity_error",
    "json_response",
    "request_id",
    "swift_error",
    "wants_json",
]

GLANCE_UNAUTHORIZED = (
    "This server could not verify that you are authorized to access the document you "
    "requested. Either you supplied the wrong credentials (e.g., bad password), or your "
    "browser does not understand how to supply the credentials required."
)

_SWIFT_TEXT = {
    400: "Bad Request",
    401: "This server could not verify that you are authorized to access the document you "
         "requested.",
    404: "The resource could not be found.",
    409: "There was a conflict when trying to complete your request.",
    411: "Length required",
    412: "A precondition for this request was not met.",
    413: "The body of your request was too large for this server.",
    416: "The Range requested is not available.",
    422: "Unable to process the contained instructions",
    503: "The server is currently unavailable. Please try again at a later time.",
}


def request_id() -> str:
    return f"req-{uuid.uuid4()}"


def wants_json(request: Request | Mapping[str, str]) -> bool:
    headers = request.headers if isinstance(request, Request) else request
    return "application/json" in headers.get("accept", "")


def json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None
                  ) -> Response:
    body = json.dumps(data).encode()
    return Response(body, status_code=status, headers=dict(headers or {}),
                    media_type="application/json")


def glance_body(status: int, message: str, as_json: bool) -> tuple[bytes, str]:
    phrase = HTTPStatus(status).phrase
    code = f"{status} {phrase}"
    if as_json:
        body = {"message": f"{message}<br /><br />\n\n\n", "code": code, "title": phrase}
        return json.dumps(body).encode(), "application/json"
    text = (f"<html>\n <head>\n  <title>{code}</title>\n </head>\n <body>\n  <h1>{code}</h1>\n"
            f"  {html.escape(message)}<br /><br />\n\n\n\n </body>\n</html>")
    return text.encode(), "text/html; charset=UTF-8"


def glance_error(request: Request, status: int, message: str,
                 headers: Mapping[str, str] | None = None) -> Response:
    body, media = glance_body(status, message, wants_json(request))
    out = {"x-openstack-request-id": request_id(), **(headers or {})}
    return Response(body, status_code=status, headers=out, media_type=media)


def swift_body(status: int, text: str | None = None) -> bytes:
    phrase = HTTPStatus(status).phrase
    detail = text if text is not None else _SWIFT_TEXT.get(status, phrase)
    return f"<html><h1>{phrase}</h1><p>{html.escape(detail)}</p></html>".encode()


def swift_error(status: int, text: str | None = None, headers: Mapping[str, str] | None = None,
                method: str = "GET") -> Response:
    body = b"" if method == "HEAD" else swift_body(status, text)
    out = dict(headers or {})
    if method == "HEAD":
        out["content-length"] = "0"
    return Response(body, status_code=status, headers=out, media_type="text/html; charset=UTF-8")


def identity_error(status: int, message: str) -> Response:
    key = {400: "badRequest", 401: "unauthorized", 403: "forbidden", 404: "itemNotFound",
           413: "overLimit", 415: "badMediaType"}.get(status, "identityFault")
    return json_response({key: {"code": status, "message": message}}, status)

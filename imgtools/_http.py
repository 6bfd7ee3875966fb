"""Turning HTTP error answers into imgtools errors, without leaking secrets."""

from __future__ import annotations

import email.utils
import html
import re
import time
from collections.abc import Iterable

import httpx

from imgtools._exceptions import APIError, AuthError, NotFound, RateLimited

__all__ = ["error_message", "raise_for_status", "retry_after_seconds"]

_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")
_MAX_MESSAGE = 500


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date; ``None`` if absent
    or unreadable. Never negative."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def error_message(response: httpx.Response) -> str:
    """The server's own words from an error body: Glance JSON, Swift HTML or plain text."""
    text = response.text if response.content else ""
    message = ""
    if "json" in response.headers.get("content-type", ""):
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            for key in ("message", "title", "detail"):
                value = body.get(key)
                if isinstance(value, dict):  # identity: {"unauthorized": {"message": ...}}
                    value = value.get("message")
                if isinstance(value, str) and value.strip():
                    message = value
                    break
            else:
                inner = next((v for v in body.values() if isinstance(v, dict)), None)
                if inner and isinstance(inner.get("message"), str):
                    message = inner["message"]
    if not message:
        message = text
    # Glance wraps even its JSON messages in HTML ("...<br /><br />"); Swift sends HTML pages.
    message = html.unescape(_TAG.sub(" ", message))
    message = _SPACE.sub(" ", message).strip()
    if not message:
        message = response.reason_phrase or "error"
    return message[:_MAX_MESSAGE]


def raise_for_status(response: httpx.Response, *,
                     redact: Iterable[str] = ()) -> httpx.Response:
    """Return ``response`` if it is 2xx/3xx, else raise the matching ``APIError``.

    The error names the method and the URL path only: never the query, host credentials or
    headers, so no token can end up in it. A server may echo the request in its error text:
    every string in ``redact`` (tokens, keys, passwords) is blanked out of the message.
    """
    if response.status_code < 400:
        return response
    if not response.is_closed:
        response.read()
    request = response.request
    status = response.status_code
    method, path = request.method, request.url.path
    request_id = (response.headers.get("x-openstack-request-id")
                  or response.headers.get("x-trans-id"))
    message = error_message(response)
    for secret in redact:
        if secret:
            message = message.replace(secret, "********")
    if status in (401, 403):
        raise AuthError(message, status_code=status, method=method, path=path,
                        request_id=request_id)
    if status == 404:
        raise NotFound(message, status_code=status, method=method, path=path,
                       request_id=request_id)
    if status in (413, 429):
        raise RateLimited(message, status_code=status, method=method, path=path,
                          request_id=request_id,
                          retry_after=retry_after_seconds(response.headers.get("retry-after")))
    raise APIError(message, status_code=status, method=method, path=path, request_id=request_id)

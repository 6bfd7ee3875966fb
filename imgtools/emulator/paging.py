"""Glance's list conventions shared by images and tasks: limit, marker, sort, links."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "ParamError", "links", "parse_limit", "parse_sort_dir"]

#: Glance's limit_param_default and api_limit_max.
DEFAULT_LIMIT = 25
MAX_LIMIT = 1000


class ParamError(ValueError):
    """A bad query parameter; the message is Glance's 400 text."""


def parse_limit(request: Request) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        raise ParamError("limit param must be an integer") from None
    if limit < 0:
        raise ParamError("limit param must be positive")
    return min(limit, MAX_LIMIT)


def parse_sort_dir(request: Request) -> str:
    value = request.query_params.get("sort_dir", "desc")
    if value not in ("asc", "desc"):
        raise ParamError(f"Invalid sort direction: {value}")
    return value


def links(request: Request, path: str, page_len: int, limit: int,
          last_id: str | None) -> dict[str, str]:
    """``first`` (the query without marker) and, when the page is full, ``next``."""
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "marker"]
    out = {"first": f"{path}?{urlencode(params)}" if params else path}
    if page_len and page_len == limit and last_id is not None:
        out["next"] = f"{path}?{urlencode([*params, ('marker', last_id)])}"
    return out

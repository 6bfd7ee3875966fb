"""The rules for a task's derived fields and for where it was seen, in one place.

``Task`` (models), ``TaskLog`` (storage) and ``history`` (frames) all flatten a task the same
way through these functions; none of them repeats a rule.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

__all__ = ["EMPTY_MESSAGES", "Origin", "container", "export_location", "image_id",
           "input_image", "message", "origin_of", "result_image"]

#: What the service sends when a task has nothing to say.
EMPTY_MESSAGES: Final = ("", "None", "null")


def message(value: Any) -> str | None:
    """The task's message, ``None`` when the service sent ``"None"``, ``""`` or blanks."""
    if value is None:
        return None
    text = str(value)
    return None if text.strip() in EMPTY_MESSAGES else text


def input_image(input: Mapping[str, Any] | None) -> str | None:
    """The image an export reads: ``input.image_uuid``."""
    value = input.get("image_uuid") if isinstance(input, Mapping) else None
    return value if isinstance(value, str) else None


def result_image(result: Mapping[str, Any] | None) -> str | None:
    """The image an import made: ``result.image_id``."""
    value = result.get("image_id") if isinstance(result, Mapping) else None
    return value if isinstance(value, str) else None


def image_id(input: Mapping[str, Any] | None, result: Mapping[str, Any] | None) -> str | None:
    """The exported image (``input.image_uuid``), else the imported one (``result.image_id``)."""
    found = input_image(input)
    return found if found is not None else result_image(result)


def container(input: Mapping[str, Any] | None) -> str | None:
    """The receiving container of an export, or the source container of an import."""
    if not isinstance(input, Mapping):
        return None
    value = input.get("receiving_swift_container")
    if isinstance(value, str):
        return value
    source = input.get("import_from")
    if isinstance(source, str) and "/" in source:
        return source.split("/", 1)[0]
    return None


def export_location(result: Mapping[str, Any] | None) -> str | None:
    """``<container>/<uuid>.vhd`` once an export succeeded."""
    value = result.get("export_location") if isinstance(result, Mapping) else None
    return value if isinstance(value, str) else None


# -- where a task was seen ---------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Origin:
    """The service a task was seen through: ``region`` (``None`` when unknown), ``account``
    (the tenant), the service endpoint's ``host`` (no path, no credentials) and whether it is
    the embedded ``emulator``."""

    region: str | None = None
    account: str | None = None
    host: str | None = None
    emulator: bool = False


#: Nothing known about where a task came from (a file import, an older log).
UNKNOWN: Final = Origin()


def _host(url: str | None) -> str | None:
    if not url:
        return None
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port
    except ValueError:
        return None
    if host is None:
        return None
    return host if port is None else f"{host}:{port}"


def _loopback(host: str | None) -> bool:
    if host is None:
        return False
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def origin_of(source: Any) -> Origin:
    """The ``Origin`` of a client (anything with ``endpoint``, ``tenant_id`` and maybe
    ``region`` / ``emulator``): the emulator is assumed for a loopback endpoint unless the
    client says otherwise (no real Cloud Images endpoint is on loopback)."""
    host = _host(getattr(source, "endpoint", None))
    region = getattr(source, "region", None)
    account = getattr(source, "tenant_id", None)
    emulator = getattr(source, "emulator", None)
    return Origin(region=region if isinstance(region, str) else None,
                  account=account if isinstance(account, str) else None,
                  host=host,
                  emulator=emulator if isinstance(emulator, bool) else _loopback(host))

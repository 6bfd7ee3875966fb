"""Rackspace identity v2.0: ``POST /v2.0/tokens`` with an API key or a password."""

from __future__ import annotations

import json
import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from imgtools.emulator.auth import state_of
from imgtools.emulator.clock import iso_ms
from imgtools.emulator.config import User
from imgtools.emulator.errors import identity_error, json_response
from imgtools.emulator.regions import image_url, internal_storage_url, storage_url
from imgtools.emulator.state import EmulatorState
from imgtools.emulator.store import TokenRow

__all__ = ["catalog", "routes"]

BAD_CREDENTIALS = "Unable to authenticate user with credentials provided."


def _find_user(state: EmulatorState, auth: dict[str, Any]) -> User | str | None:
    """The user the credentials name; ``None`` for bad ones; a string for a malformed body."""
    key_creds = auth.get("RAX-KSKEY:apiKeyCredentials")
    pass_creds = auth.get("passwordCredentials")
    if isinstance(key_creds, dict):
        name, secret, field = key_creds.get("username"), key_creds.get("apiKey"), "api_key"
    elif isinstance(pass_creds, dict):
        name, secret, field = pass_creds.get("username"), pass_creds.get("password"), "password"
    else:
        return "Invalid json request body"
    if not isinstance(name, str) or not isinstance(secret, str) or not name or not secret:
        return "Invalid json request body"
    for user in state.config.users:
        expected = user.api_key if field == "api_key" else user.secret_password
        if user.username == name and secrets.compare_digest(expected, secret):
            tenant = auth.get("tenantId") or auth.get("tenantName")
            if tenant is not None and tenant != user.tenant_id:
                return None
            return user
    return None


def catalog(bases: dict[str, str], user: User) -> list[dict[str, Any]]:
    """Service catalog: one endpoint per region (``bases``: region -> ``http://host:port``,
    in configured order), each region on its own port of this emulator.

    The default region (the first) comes first and keeps the emulator's own port, so a client
    that takes the first entry, or the user's default region, sees what it saw before.
    """
    files = f"MossoCloudFS_{user.tenant_id}"
    images = [{"publicURL": image_url(base), "region": r, "tenantId": user.tenant_id}
              for r, base in bases.items()]
    storage = [{"publicURL": storage_url(base, user.tenant_id),
                "internalURL": internal_storage_url(base, user.tenant_id),
                "region": r, "tenantId": files} for r, base in bases.items()]
    return [
        {"name": "cloudImages", "type": "image", "endpoints": images},
        {"name": "cloudFiles", "type": "object-store", "endpoints": storage},
    ]


async def tokens(request: Request) -> Response:
    state = state_of(request)
    raw = await request.body()
    if len(raw) > state.config.max_json_body:
        return identity_error(413, "Request body too large")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return identity_error(400, "Invalid json request body")
    auth = body.get("auth") if isinstance(body, dict) else None
    if not isinstance(auth, dict):
        return identity_error(400, "Invalid json request body")
    found = _find_user(state, auth)
    if isinstance(found, str):
        return identity_error(400, found)
    if found is None:
        return identity_error(401, BAD_CREDENTIALS)
    user = found
    now = state.clock.now()
    token = TokenRow(secrets.token_hex(16), user.username, user.tenant_id, user.roles,
                     now + state.config.token_ttl)
    state.store.add_token(token)
    state.stats.event("tokens_issued")
    base = str(request.base_url).rstrip("/")
    host = request.url.hostname or "127.0.0.1"
    bases = {r: state.region_base(request.url.scheme, host, r, base)
             for r in state.config.regions}
    method = ("APIKEY" if "RAX-KSKEY:apiKeyCredentials" in auth else "PASSWORD")
    roles = [{"id": "3", "name": "identity:user-admin"}]
    roles += [{"name": f"cloudImages:{r}", "tenantId": user.tenant_id} for r in user.roles]
    access = {
        "token": {"id": token.id, "expires": iso_ms(token.expires),
                  "tenant": {"id": user.tenant_id, "name": user.tenant_id},
                  "RAX-AUTH:authenticatedBy": [method]},
        "serviceCatalog": catalog(bases, user),
        "user": {"id": f"u-{user.username}", "name": user.username,
                 "RAX-AUTH:defaultRegion": state.config.regions[0], "roles": roles},
    }
    return json_response({"access": access})


routes = [Route("/v2.0/tokens", tokens, methods=["POST"])]

"""Token checks shared by the image, task and Cloud Files routes."""

from __future__ import annotations

from urllib.parse import unquote

from starlette.requests import Request

from imgtools.emulator.regions import SCOPE_REGION
from imgtools.emulator.state import EmulatorState
from imgtools.emulator.store import Store, TokenRow

__all__ = ["current_token", "region_of", "state_of", "store_of"]


def state_of(request: Request) -> EmulatorState:
    state: EmulatorState = request.app.state.emulator
    return state


def region_of(request: Request) -> str:
    """The region the request was addressed to (set by ``RegionMiddleware``)."""
    region = request.scope.get(SCOPE_REGION)
    return region if isinstance(region, str) else state_of(request).default_region


def store_of(request: Request) -> Store:
    """The images, tasks and objects of the request's region; nothing of any other."""
    return state_of(request).store_in(region_of(request))


def current_token(request: Request) -> TokenRow | None:
    """The caller's live token, or ``None`` when missing, unknown or expired."""
    raw = request.headers.get("x-auth-token") or request.headers.get("x-storage-token")
    if not raw:
        return None
    # python-glanceclient percent-encodes the token.
    token_id = unquote(raw.strip())
    state = state_of(request)
    token = state.store.get_token(token_id)
    if token is None or token.expires <= state.clock.now():
        return None
    return token

"""Credentials, Rackspace identity v2.0 and the ``httpx.Auth`` that adds ``X-Auth-Token``.

Where credentials come from, first match wins:

1. arguments: ``endpoint=`` + ``token=``, or ``username=`` + ``api_key=`` (or ``password=``);
2. ``API_ENDPOINT`` + ``AUTH_TOKEN`` (+ ``FILES_ENDPOINT`` for Cloud Files);
3. ``RAX_USERNAME`` + ``RAX_API_KEY`` (or ``IMGTOOLS_USERNAME`` + ``IMGTOOLS_API_KEY``, or
   ``OS_USERNAME`` + ``OS_PASSWORD``), with ``RAX_REGION`` / ``OS_REGION_NAME`` and
   ``IMGTOOLS_IDENTITY_URL`` / ``OS_AUTH_URL``.

Secrets live in ``Secret`` objects, whose repr and str are masked: they are revealed only into
the ``X-Auth-Token`` header and the identity request body.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading
import time
from collections.abc import AsyncGenerator, Generator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import httpx

from imgtools._config import DEFAULT_IDENTITY_URL, TOKEN_REFRESH_MARGIN
from imgtools._exceptions import (
    AuthError,
    ConfigurationError,
    ResponseError,
    TransportError,
    UnknownRegion,
)
from imgtools._http import raise_for_status
from imgtools._models import parse_time
from imgtools._ops import Op, Send, arun, run
from imgtools._transport import RETRY_EXTENSION, Stats

__all__ = [
    "Credentials",
    "IdentityAuth",
    "Secret",
    "Session",
    "TokenAuth",
    "is_loopback",
    "normalise_image_endpoint",
    "normalise_url",
    "resolve_credentials",
]

logger = logging.getLogger("imgtools")

_MASK = "********"


class Secret:
    """A token, API key or password: shows as ``********`` everywhere but ``reveal()``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{_MASK}')"

    def __str__(self) -> str:
        return _MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Secret cannot be pickled")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def normalise_url(url: str, *, name: str) -> str:
    """Check a service URL: http(s), a host, no credentials in it, plain http only to loopback;
    returns it without a trailing slash."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"{name} must be an http(s) URL with a host, got {url!r}")
    if parts.username is not None or parts.password is not None:
        # Never echo the URL: it holds a credential.
        raise ConfigurationError(f"{name} must not carry a user name or password; "
                                 "pass credentials as arguments or environment variables")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ConfigurationError(
            f"{name} uses plain http to {parts.hostname}: the token would travel unencrypted; "
            "use https (plain http is allowed for loopback addresses only)")
    if parts.query or parts.fragment:
        raise ConfigurationError(f"{name} must not have a query or fragment")
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def normalise_image_endpoint(url: str, *, name: str = "endpoint") -> str:
    """The Cloud Images endpoint ending in ``/v2``: the root works as well as ``.../v2``."""
    clean = normalise_url(url, name=name)
    return clean if clean.endswith("/v2") else clean + "/v2"


@dataclass(frozen=True)
class Credentials:
    """Resolved credentials; secrets are masked in the repr.

    ``kind`` is ``"token"`` (a fixed token and endpoints) or ``"identity"`` (log in with a
    username and an API key or password, and take endpoints from the service catalog).
    """

    kind: Literal["token", "identity"]
    source: str
    endpoint: str | None = None
    files_endpoint: str | None = None
    token: Secret | None = None
    username: str | None = None
    api_key: Secret | None = None
    password: Secret | None = None
    region: str | None = None
    identity_url: str = DEFAULT_IDENTITY_URL
    tenant_id: str | None = None

    def secrets(self) -> tuple[str, ...]:
        """Every secret value, for redacting text (never shown)."""
        return tuple(s.reveal() for s in (self.token, self.api_key, self.password)
                     if s is not None and s.reveal())


def _pick(env: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        value = env.get(name)
        if value:
            return value
    return None


_HOW_TO = (
    "no Cloud Images credentials found. Either\n"
    "  - set API_ENDPOINT and AUTH_TOKEN (and FILES_ENDPOINT, your Cloud Files storage URL), or\n"
    "  - set RAX_USERNAME and RAX_API_KEY (and RAX_REGION) to log in through Rackspace identity,\n"
    "  or pass the same as arguments: connect(endpoint=..., token=...) or\n"
    "  connect(username=..., api_key=..., region=...).\n"
    "To try imgtools locally, use connect(emulator=True) (or set IMGTOOLS_EMULATOR=1), or start\n"
    "the emulator with `python -m imgtools.emulator` and log in as demo / demo-key with\n"
    "identity_url=<its URL>/v2.0."
)


def resolve_credentials(
    *,
    endpoint: str | None = None,
    token: str | None = None,
    files_endpoint: str | None = None,
    username: str | None = None,
    api_key: str | None = None,
    password: str | None = None,
    region: str | None = None,
    identity_url: str | None = None,
    tenant_id: str | None = None,
    environ: Mapping[str, str],
) -> Credentials | None:
    """Credentials from arguments, else the environment; ``None`` if there are none at all.

    A half-given pair (an endpoint without a token, a username without a key) is an error, not
    a reason to look elsewhere: mixing sources silently is how the wrong account gets used.
    """
    env = environ
    ident = identity_url or _pick(env, "IMGTOOLS_IDENTITY_URL", "OS_AUTH_URL")
    ident = normalise_url(ident, name="identity_url") if ident else DEFAULT_IDENTITY_URL
    files = files_endpoint or _pick(env, "FILES_ENDPOINT")
    files = normalise_url(files, name="files_endpoint") if files else None
    tenant = tenant_id or _pick(env, "IMGTOOLS_TENANT_ID", "OS_TENANT_ID", "OS_PROJECT_ID")
    reg = region or _pick(env, "RAX_REGION", "OS_REGION_NAME")

    if endpoint is not None or token is not None:
        if not endpoint or not token:
            missing = "token" if endpoint else "endpoint"
            raise ConfigurationError(f"connect(endpoint=..., token=...) needs both; {missing} "
                                     "is missing")
        return Credentials("token", "arguments", endpoint=normalise_image_endpoint(endpoint),
                           files_endpoint=files, token=Secret(token), tenant_id=tenant,
                           identity_url=ident, region=reg)
    if username is not None or api_key is not None or password is not None:
        if not username or not (api_key or password):
            raise ConfigurationError("connect(username=..., api_key=...) needs a username and "
                                     "an API key (or password)")
        return Credentials("identity", "arguments", username=username,
                           api_key=Secret(api_key) if api_key else None,
                           password=Secret(password) if password else None, region=reg,
                           identity_url=ident, files_endpoint=files, tenant_id=tenant)

    env_endpoint, env_token = _pick(env, "API_ENDPOINT"), _pick(env, "AUTH_TOKEN")
    if env_endpoint or env_token:
        if not (env_endpoint and env_token):
            missing = "AUTH_TOKEN" if env_endpoint else "API_ENDPOINT"
            raise ConfigurationError(f"API_ENDPOINT and AUTH_TOKEN go together; {missing} is "
                                     "not set")
        return Credentials("token", "environment (API_ENDPOINT, AUTH_TOKEN)",
                           endpoint=normalise_image_endpoint(env_endpoint, name="API_ENDPOINT"),
                           files_endpoint=files, token=Secret(env_token), tenant_id=tenant,
                           identity_url=ident, region=reg)

    for user_var, key_var, is_password in (("RAX_USERNAME", "RAX_API_KEY", False),
                                           ("IMGTOOLS_USERNAME", "IMGTOOLS_API_KEY", False),
                                           ("OS_USERNAME", "OS_PASSWORD", True)):
        user, key = _pick(env, user_var), _pick(env, key_var)
        if user or key:
            if not (user and key):
                missing = key_var if user else user_var
                raise ConfigurationError(f"{user_var} and {key_var} go together; {missing} is "
                                         "not set")
            secret = Secret(key)
            return Credentials("identity", f"environment ({user_var}, {key_var})",
                               username=user, api_key=None if is_password else secret,
                               password=secret if is_password else None, region=reg,
                               identity_url=ident, files_endpoint=files, tenant_id=tenant)
    return None


def no_credentials_error() -> ConfigurationError:
    return ConfigurationError(_HOW_TO)


@dataclass
class Session:
    """What a login gives: the token, when to renew it, the tenant and the catalog endpoints.

    ``refresh_at`` is on the ``time.monotonic()`` clock, or ``None`` when the expiry is unknown.
    ``catalog`` is the service catalog as identity sent it (empty for a bare token) and
    ``region`` the region the endpoints are in, if known (see ``_regions.py``).
    """

    token: Secret
    tenant_id: str | None = None
    image_endpoint: str | None = None
    files_endpoint: str | None = None
    refresh_at: float | None = None
    regions: tuple[str, ...] = field(default=())
    catalog: tuple[Any, ...] = field(default=())
    region: str | None = None


def login_request(creds: Credentials) -> httpx.Request:
    """``POST {identity}/tokens`` with API-key (``RAX-KSKEY``) or password credentials."""
    assert creds.username is not None
    if creds.api_key is not None:
        auth = {"RAX-KSKEY:apiKeyCredentials": {"username": creds.username,
                                                "apiKey": creds.api_key.reveal()}}
    elif creds.password is not None:
        auth = {"passwordCredentials": {"username": creds.username,
                                        "password": creds.password.reveal()}}
    else:  # pragma: no cover - resolve_credentials never builds this
        raise ConfigurationError("an API key or password is needed to log in")
    return httpx.Request("POST", creds.identity_url + "/tokens", json={"auth": auth},
                         headers={"Accept": "application/json"},
                         # Minting a token twice is harmless, so the transport may retry it.
                         extensions={RETRY_EXTENSION: True})


def _endpoint(catalog: list[object], *, type_: str, name: str, region: str | None
              ) -> tuple[str | None, tuple[str, ...]]:
    services = [s for s in catalog if isinstance(s, dict) and s.get("type") == type_]
    # Prefer Rackspace's service name, but any service of the right type will do.
    services.sort(key=lambda s: s.get("name") != name)
    for service in services:
        endpoints = [e for e in service.get("endpoints") or [] if isinstance(e, dict)]
        regions = tuple(str(e.get("region")) for e in endpoints if e.get("region"))
        for e in endpoints:
            if region is None or str(e.get("region", "")).upper() == region.upper():
                url = e.get("publicURL") or e.get("url")
                if isinstance(url, str):
                    return url, regions
        if endpoints:
            return None, regions
    return None, ()


def parse_login(response: httpx.Response, creds: Credentials) -> Session:
    """Read the identity answer into a ``Session``; errors name the user, never the secret."""
    if response.status_code in (400, 401, 403):
        response.read()
        raise AuthError(f"identity refused the credentials of user {creds.username!r} "
                        f"({creds.source})", status_code=response.status_code,
                        method="POST", path=response.request.url.path)
    raise_for_status(response, redact=creds.secrets())
    try:
        access = response.json()["access"]
        token_data = access["token"]
        token = token_data["id"]
    except (ValueError, KeyError, TypeError):
        raise ResponseError("the identity answer has no access.token.id") from None
    if not isinstance(token, str) or not token:
        raise ResponseError("the identity answer has an empty token")
    tenant = (token_data.get("tenant") or {}).get("id") if isinstance(token_data, dict) else None
    catalog = access.get("serviceCatalog") or []
    region = creds.region
    if region is None:
        user = access.get("user") or {}
        default = user.get("RAX-AUTH:defaultRegion") if isinstance(user, dict) else None
        region = default if isinstance(default, str) and default else None
    image, regions = _endpoint(catalog, type_="image", name="cloudImages", region=region)
    files, _ = _endpoint(catalog, type_="object-store", name="cloudFiles", region=region)
    if image is None and region and regions:
        # Before any request to the service: name the regions there are.
        raise UnknownRegion(f"the service catalog has no region {region!r}: it offers "
                            f"{', '.join(regions)} (set region= or RAX_REGION to one of them)",
                            region=region, regions=regions)
    if image is None:
        where = f" in region {region!r}" if region else ""
        raise ConfigurationError(f"the service catalog has no cloudImages endpoint{where}")
    refresh_at = None
    expires = parse_time(token_data.get("expires")) if token_data.get("expires") else None
    if expires is not None:
        lifetime = (expires - datetime.now(UTC)).total_seconds()
        # Renew a little early: at most a tenth of the lifetime, so short tokens still get used.
        margin = min(TOKEN_REFRESH_MARGIN, max(0.0, lifetime) * 0.1)
        refresh_at = time.monotonic() + lifetime - margin
    return Session(token=Secret(token), tenant_id=str(tenant) if tenant is not None else None,
                   image_endpoint=normalise_image_endpoint(image, name="catalog cloudImages URL"),
                   files_endpoint=(normalise_url(files, name="catalog cloudFiles URL")
                                   if files else None),
                   refresh_at=refresh_at, regions=regions,
                   catalog=tuple(catalog) if isinstance(catalog, list) else (), region=region)


class TokenAuth(httpx.Auth):
    """A fixed token (``API_ENDPOINT`` + ``AUTH_TOKEN``): nothing to renew, so a 401 is final."""

    def __init__(self, token: Secret) -> None:
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["X-Auth-Token"] = self._token.reveal()
        yield request

    def __repr__(self) -> str:
        return "TokenAuth(token=********)"


class IdentityAuth(httpx.Auth):
    """Log in through identity v2.0, renew the token before it expires, and on a 401
    re-authenticate once and send the request again. Given to the retry transport as its
    ``TokenRenewer``, it also puts the current token on every repeated attempt.

    ``sync_client`` / ``async_client`` carry the identity requests (with retries). The login
    and the renewal rule are operations (``op_login``, ``op_token``) that the blocking and the
    awaited shells run. A lock makes concurrent requests that meet the same expired token log in
    only once: a ``threading.Lock`` for blocking callers, an ``asyncio.Lock`` on the event loop
    (a loop must never wait on a thread's lock). The two locks are apart, so an
    ``AsyncClient`` whose worker threads (bulk Cloud Files) and loop meet the same old token
    at the same moment may log in twice, once on each side, never more.
    """

    def __init__(self, creds: Credentials, *, stats: Stats,
                 sync_client: httpx.Client | None = None,
                 async_client: httpx.AsyncClient | None = None,
                 session: Session | None = None) -> None:
        self.creds = creds
        self.stats = stats
        self.session = session
        self._sync_client = sync_client
        self._async_client = async_client
        self._lock = threading.Lock()
        self._alock: asyncio.Lock | None = None
        self._logins = 0

    def __repr__(self) -> str:
        return f"IdentityAuth(username={self.creds.username!r}, token=********)"

    def _count_login(self) -> None:
        self._logins += 1
        if self._logins > 1:
            self.stats.add("reauths")
        logger.debug("logged in to identity as %r (login %d)", self.creds.username, self._logins)

    def _needs_login(self, rejected: str | None) -> bool:
        """The one refresh rule: no session yet, the token is due for renewal, or the service
        refused the very token we hold (one another caller has not already replaced)."""
        s = self.session
        return (s is None or (s.refresh_at is not None and time.monotonic() >= s.refresh_at)
                or s.token.reveal() == rejected)

    # -- the operations (written once) ----------------------------------------------------------

    def op_login(self) -> Op[Session]:
        """Log in: the ``_ops`` operation every login runs (``login``, ``alogin``, a client's
        start-up, a renewal)."""
        response = yield Send(login_request(self.creds))
        self.session = parse_login(response, self.creds)
        self._count_login()
        return self.session

    def op_token(self, rejected: str | None = None) -> Op[str]:
        """The token to send: the current one, or a fresh one when ``_needs_login``. Run it
        under the lock (``_token_sync``/``_token_async``), so that concurrent callers meeting the
        same expired or ``rejected`` token log in once: the later ones find it replaced."""
        if self._needs_login(rejected):
            yield from self.op_login()
        assert self.session is not None
        return self.session.token.reveal()

    # -- the drivers: blocking and awaited shells over the operations ---------------------------

    def _unreachable(self, exc: httpx.HTTPError) -> TransportError:
        return TransportError(f"cannot reach identity at {self.creds.identity_url}: "
                              f"{type(exc).__name__}")

    def send(self, step: Send) -> httpx.Response:
        """The ``_ops.run`` sender of the operations: through the blocking identity client."""
        if self._sync_client is None:
            raise RuntimeError("IdentityAuth has no sync identity client")
        try:
            return self._sync_client.send(step.request)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None

    async def asend(self, step: Send) -> httpx.Response:
        """The ``_ops.arun`` sender: through the async identity client."""
        if self._async_client is None:
            raise RuntimeError("IdentityAuth has no async identity client")
        try:
            return await self._async_client.send(step.request)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None

    def login(self) -> Session:
        """Log in now (blocking) and return the new session."""
        return run(self.op_login(), self.send)

    async def alogin(self) -> Session:
        """Log in now (awaitable) and return the new session."""
        return await arun(self.op_login(), self.asend)

    def _token_sync(self, rejected: str | None = None) -> str:
        with self._lock:
            return run(self.op_token(rejected), self.send)

    async def _token_async(self, rejected: str | None = None) -> str:
        if self._alock is None:  # made on first use: it must belong to the running loop
            self._alock = asyncio.Lock()
        async with self._alock:
            return await arun(self.op_token(rejected), self.asend)

    # -- httpx's and the retry transport's hooks: one per calling convention --------------------

    def renew(self, request: httpx.Request, *, refused: bool) -> None:
        """``TokenRenewer``: called by the retry transport before every repeated attempt."""
        sent = request.headers.get("X-Auth-Token")
        if sent is not None:
            request.headers["X-Auth-Token"] = self._token_sync(sent if refused else None)

    async def arenew(self, request: httpx.Request, *, refused: bool) -> None:
        """``TokenRenewer``, awaited."""
        sent = request.headers.get("X-Auth-Token")
        if sent is not None:
            request.headers["X-Auth-Token"] = await self._token_async(sent if refused else None)

    def sync_auth_flow(self, request: httpx.Request
                       ) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["X-Auth-Token"] = self._token_sync()
        response = yield request
        if response.status_code == 401:  # once: the token last sent (maybe renewed) was refused
            response.read()
            request.headers["X-Auth-Token"] = self._token_sync(request.headers["X-Auth-Token"])
            yield request

    async def async_auth_flow(self, request: httpx.Request
                              ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        request.headers["X-Auth-Token"] = await self._token_async()
        response = yield request
        if response.status_code == 401:
            await response.aread()
            request.headers["X-Auth-Token"] = await self._token_async(
                request.headers["X-Auth-Token"])
            yield request

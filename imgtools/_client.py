"""``connect()``, ``Client`` and ``AsyncClient``: images, tasks and exports.

Both clients share every decision through ``_BaseClient``. Each operation is written once, as a
generator of the steps of ``_ops`` (``Send`` a request, ``Sleep``, ``Gather`` operations side by
side) and gets the answers back; ``Client`` drives it with ``_ops.run`` (blocking I/O) and
``AsyncClient`` with ``_ops.arun`` (awaits).

Exports never create a duplicate task. ``POST /v2/tasks`` is not repeated blindly: when its
answer is lost (a dropped connection, a timeout, a 5xx) the client lists the export tasks created
since the request began, looks for one with the same image and container, and returns it. Only a
refusal that says the request was not carried out (413/429 "over limit", 503) is sent again, and a
503 only after that listing found nothing. Once sent, a POST ends in the task or in
``ExportNotConfirmed``, never in another error: trouble while looking (network, 5xx, 401) is
asked through a few times, then folded into ``ExportNotConfirmed``, which carries the image,
container, the time of the POST and ``lookup()``. Asked again for the same image and container,
the client first looks for the task of that attempt; with the preflight on, it also looks for a
live export of the pair that no caller got back (from another process), so asking again from a
new process makes no duplicate either. All of it is written for any task type and input.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import logging
import os
import random
import re
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, Self, TypeVar
from urllib.parse import quote

import httpx

from imgtools import testing
from imgtools._auth import (
    IdentityAuth,
    Session,
    TokenAuth,
    is_loopback,
    no_credentials_error,
    resolve_credentials,
)
from imgtools._bulk import BulkTransport
from imgtools._config import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_IMAGES_PAGE_SIZE,
    DEFAULT_RETRIES,
    DEFAULT_RETRY_AFTER_CAP,
    DEFAULT_RETRY_BACKOFF_INITIAL,
    DEFAULT_RETRY_BACKOFF_MAXIMUM,
    DEFAULT_TASKS_PAGE_SIZE,
    DEFAULT_TIMEOUT,
    DEFAULT_WAIT_TIMEOUT,
    RECONCILE_ATTEMPTS,
    RECONCILE_CLOCK_SKEW,
    RECONCILE_SETTLE,
    USER_AGENT,
)
from imgtools._convert import check_convert
from imgtools._copy import DEFAULT_COPY_WORKERS, DEFAULT_LISTING_DELAY
from imgtools._exceptions import (
    APIError,
    AuthError,
    ConfigurationError,
    ContainerNotFound,
    ExportExists,
    ExportNotConfirmed,
    ImgToolsError,
    ImportNotConfirmed,
    MissingSetting,
    NotExportable,
    NotFound,
    RateLimited,
    ResponseError,
    TaskNotConfirmed,
    TransportError,
)
from imgtools._files import (
    DEFAULT_DOWNLOAD_CHUNK,
    DEFAULT_DOWNLOAD_WORKERS,
    AsyncFiles,
    DownloadResult,
    ExportReport,
    Files,
    Progress,
    resolve_export,
    tqdm_progress,
)
from imgtools._http import raise_for_status, retry_after_seconds
from imgtools._imports import (
    AsyncImportTask,
    ImportTask,
    describe_import,
    op_import_preflight,
    validate_import_args,
)
from imgtools._leftovers import (
    DeleteReport,
    LeftoversReport,
    check_protected,
    delete_leftovers,
    find_leftovers,
    op_running_exports,
    running_transfer_locations,
)
from imgtools._models import Image, Task, TaskStatus, parse_time
from imgtools._ops import Gather, Op, Send, Sleep, arun, run
from imgtools._polling import (
    DEFAULT,
    AsyncExportTask,
    AsyncTaskHandle,
    ExportTask,
    PollPolicy,
    TaskHandle,
    TaskRef,
    Timeout,
    WaitAllResult,
    WaitProgress,
    _check_timeout,
    _transient,
    async_wait_all,
    wait_all,
)
from imgtools._regions import catalog_regions, region_session, servicenet_wanted, settle
from imgtools._transport import (
    READ_BODY_EXTENSION,
    AsyncRetryTransport,
    RetryTransport,
    Stats,
)
from imgtools._validation import (
    validate_export_args,
    validate_image_id,
    validate_page_size,
    validate_sort_dir,
    validate_task_id,
    validate_task_sort_key,
    validate_task_status,
    validate_task_type,
    validate_timeout,
)
from imgtools.transfer import (
    DEFAULT_CLEANUP,
    DEFAULT_TRANSFER_CONTAINER,
    AsyncTransfer,
    CleanupPolicy,
    OnStep,
    Transfer,
    TransferStore,
    abegin_transfer,
    aresume_transfer,
    atransfer_all,
    begin_transfer,
    resume_transfer,
    transfer_all,
)

__all__ = [
    "AsyncClient",
    "Client",
    "Exportability",
    "OnProgress",
    "OnUpdate",
    "TaskRecorder",
]

logger = logging.getLogger("imgtools")

T = TypeVar("T")
#: What ``transport=`` takes: a blocking transport for ``Client``, an async one for ``AsyncClient``.
_TransportT = TypeVar("_TransportT", httpx.BaseTransport, httpx.AsyncBaseTransport)




#: ``on_update(task)``: called with the task after every poll of ``wait``/``export``.
OnUpdate = Callable[[Task], object]
#: ``on_progress(progress)``: called after every round of ``wait_all``.
OnProgress = Callable[[WaitProgress], object]


class TaskRecorder(Protocol):
    """Where observed tasks go (``TaskLog`` is one)."""

    def record(self, tasks: Iterable[Task], *, seen_at: datetime | None = None) -> None: ...


@dataclass(frozen=True, slots=True)
class Exportability:
    """Whether an image can be exported; ``reason`` says why not, ``code`` is a short key:
    ``not_active``, ``not_owner`` or ``restricted``. True in a boolean context when ``ok``."""

    ok: bool
    reason: str | None = None
    code: str | None = None

    def __bool__(self) -> bool:
        return self.ok


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        kind = response.headers.get("content-type", "no content type")
        raise ResponseError(f"{response.request.method} {response.request.url.path}: the answer "
                            f"is not JSON ({kind}, {len(response.content)} bytes)") from None


@functools.lru_cache(maxsize=1)
def _default_ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle costs ~90 ms; one verified context serves every client.
    return httpx.create_ssl_context()


def _verify(verify: bool) -> ssl.SSLContext | bool:
    return _default_ssl_context() if verify else False


def _path(*parts: str) -> str:
    return "/".join(quote(p, safe="") for p in parts)


# A listing page's ``next`` link, found in the raw bytes without decoding them. JSON escapes
# every quote inside a string, so only a key can match; a nested key named "next" (in a task's
# input) could, which is why what this finds is only a guess, checked against the decoded page.
_NEXT_LINK = re.compile(rb'"next"\s*:\s*"([^"\\]+)"')


@dataclass
class _Listing(Generic[T]):
    """Where a paged listing stands: the next page's URL (with the first page's query), or
    that page already fetched (its response, or the error its request became) because it was
    requested while the page before it was decoded (see ``_op_listing_page``). ``shape``: what each
    page's items are made into, beside the decoding (so also while the next page is on its
    way)."""

    url: str | None
    query: Mapping[str, Any] | None
    key: str
    shape: Callable[[list[Any]], T]
    #: A faster decoder for the pages it knows (raw bytes to the page's body, or ``None``:
    #: decode it as JSON).
    fast: Callable[[bytes], Any] | None = None
    seen: set[str] = field(default_factory=set)
    ahead: httpx.Response | ImgToolsError | None = None


def _as_listed(items: list[Any]) -> list[dict[str, Any]]:
    return items


def _op_value(func: Callable[..., T], *args: Any) -> Op[T]:
    """``func(*args)`` as an operation with no I/O (to ``Gather`` it beside a request)."""
    return func(*args)
    yield  # a generator, so that the drivers can run it


@dataclass
class _Attempt:
    """A ``POST /v2/tasks`` whose task was not confirmed: when (``time.time()``) the first one
    was sent, and the task once found."""

    task_type: str
    input: dict[str, Any]
    posted_at: float
    task: Task | None = None


def _attempt_key(task_type: str, task_input: Mapping[str, Any]
                 ) -> tuple[str, tuple[tuple[str, str], ...]]:
    return task_type, tuple(sorted((k, str(v)) for k, v in task_input.items()))


def _same_input(seen: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    return all(seen.get(k) == v for k, v in wanted.items())


class _BaseClient(Generic[_TransportT]):
    """State and logic both clients share, and their one constructor; no I/O here (``_start``,
    the end of the constructor, is each client's own)."""

    _http: Any
    _storage_http: Any
    _identity_http: Any

    def __init__(self, *, endpoint: str | None = None, token: str | None = None,
                 files_endpoint: str | None = None, username: str | None = None,
                 api_key: str | None = None, password: str | None = None,
                 region: str | None = None, identity_url: str | None = None,
                 tenant_id: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                 retries: int = DEFAULT_RETRIES, poll: PollPolicy | None = None,
                 wait_timeout: float | None = DEFAULT_WAIT_TIMEOUT,
                 log: TaskRecorder | bool | None = True, verify: bool = True,
                 transport: _TransportT | None = None,
                 environ: Mapping[str, str] | None = None,
                 servicenet: bool | None = None) -> None:
        env = os.environ if environ is None else environ
        creds = resolve_credentials(endpoint=endpoint, token=token, files_endpoint=files_endpoint,
                                    username=username, api_key=api_key, password=password,
                                    region=region, identity_url=identity_url,
                                    tenant_id=tenant_id, environ=env)
        if creds is None:
            raise no_credentials_error()
        self._creds = creds
        self._servicenet = servicenet_wanted(servicenet, env)
        self.stats = Stats()
        """Counters: ``requests``, ``retries``, ``reauths``, ``rate_limited``, ``reconciled``."""
        self.poll = poll if poll is not None else PollPolicy()
        """The default ``PollPolicy`` of ``wait`` and ``wait_all``."""
        self.wait_timeout = validate_timeout(wait_timeout, field="wait_timeout")
        """Default deadline of ``wait`` and ``wait_all``, seconds (``None``: none)."""
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ConfigurationError("retries must be an integer >= 0")
        self._retries = retries
        request_timeout = validate_timeout(timeout, field="timeout")
        self._timeout = httpx.Timeout(request_timeout, connect=DEFAULT_CONNECT_TIMEOUT)
        self._verify = verify
        self._inner: _TransportT | None = transport
        self._log_setting = log
        self._log: TaskRecorder | None = None
        self._lock = threading.Lock()
        self._claimed: set[str] = set()
        self._inputs: dict[str, Mapping[str, Any]] = {}
        self._attempts: dict[tuple[str, tuple[tuple[str, str], ...]], _Attempt] = {}
        self._secrets: set[str] = set(creds.secrets())
        self._session: Session | None = None
        self._auth: httpx.Auth | None = None
        self._http = self._storage_http = self._identity_http = None
        self._reconcile_skew = RECONCILE_CLOCK_SKEW
        self._start()

    def _start(self) -> None:
        """The end of the constructor: ``Client`` runs ``_op_start`` here, ``AsyncClient`` in
        ``open()``."""
        raise NotImplementedError

    def _open_identity(self) -> IdentityAuth | None:
        """The identity login (on its own connection, each client its own kind) for username
        credentials; ``None`` for a bare token, which needs no login."""
        raise NotImplementedError

    def _op_start(self, identity: IdentityAuth | None) -> Op[None]:
        """The start-up both clients run: log in through ``identity`` (a bare token sends
        nothing), take the session and open the API connections at its endpoints."""
        auth: httpx.Auth
        if identity is None:
            auth, session = self._token_login()
        else:
            auth, session = identity, (yield from identity.op_login())
        self._open_http(self._adopt(auth, session))

    # -- what the client is connected to -----------------------------------------------------

    @property
    def endpoint(self) -> str | None:
        """The Cloud Images endpoint (``.../v2``); ``None`` before an async client logs in."""
        return None if self._session is None else self._session.image_endpoint

    @property
    def storage_url(self) -> str | None:
        """The Cloud Files storage URL (``.../v1/MossoCloudFS_...``), if known. No secrets."""
        return None if self._session is None else self._session.files_endpoint

    @property
    def tenant_id(self) -> str | None:
        """Your tenant (the ``owner`` of your images), if known: from the login, or with a bare
        token from ``tenant_id=`` or a ``.../MossoCloudFS_<digits>`` storage URL."""
        return None if self._session is None else self._session.tenant_id

    @property
    def region(self) -> str | None:
        """The region this client works in (as the catalog spells it), if known: after a
        login always; with a bare token only when given (``region=``, ``RAX_REGION``)."""
        return None if self._session is None else self._session.region

    @property
    def regions(self) -> tuple[str, ...]:
        """Every region the login's service catalog offers (empty for a bare token)."""
        return catalog_regions(self._session)

    @property
    def servicenet(self) -> bool:
        """True when Cloud Files is reached over ServiceNet (the catalog's ``internalURL``)."""
        return self._servicenet

    def in_region(self, region: str) -> Self:
        """The same login in another region: a client sharing this one's auth (one token, one
        renewal), counters and audit log, with that region's endpoints; no request is sent.
        ``UnknownRegion`` (listing the catalog's regions) for a region not offered,
        ``MissingSetting`` for a bare token (it has no catalog). Close it on its own; its
        logins go through this client's identity connection, so close this one last."""
        if self._session is None:
            raise ConfigurationError("the client has not logged in yet: await client.open() "
                                     "first")
        session = region_session(self._session, region, servicenet=self._servicenet)
        self.log  # noqa: B018 - made now if it is the default, so the twin shares it
        twin = copy.copy(self)
        twin._fork(session)
        return twin

    def _fork(self, session: Session) -> None:
        """Make a fresh copy of a client its own: ``session``'s endpoints, its own connections
        and task bookkeeping; the auth, stats, log and secrets stay shared."""
        self._session = session
        self.__dict__.pop("ops", None)  # a cached SyncOps/AsyncOps would drive the original
        self._claimed = set()
        self._attempts = {}
        self._identity_http = None  # the original's: closing the twin leaves it open
        self._http = self._storage_http = None
        self._open_http(session)

    def _open_http(self, session: Session) -> None:
        """Open the API connections at the session's endpoints (each client its own kind)."""
        raise NotImplementedError

    @property
    def log(self) -> TaskRecorder | None:
        """The audit log every observed task goes to (a ``TaskLog``), or ``None``."""
        if self._log is None and self._log_setting is True:
            with self._lock:
                if self._log is None:
                    from imgtools._tasklog import TaskLog

                    self._log = TaskLog()
        elif self._log is None and self._log_setting not in (None, False, True):
            self._log = self._log_setting  # type: ignore[assignment]
        return self._log

    def __repr__(self) -> str:
        who = self._creds.username or self._creds.source
        return (f"{type(self).__name__}(endpoint={self.endpoint!r}, user={who!r}, "
                f"tenant={self.tenant_id!r}, region={self.region!r})")

    def _token_login(self) -> tuple[httpx.Auth, Session]:
        """A token needs no login: its auth and session (``endpoint`` + ``token`` credentials)."""
        creds = self._creds
        assert creds.token is not None and creds.endpoint is not None
        return TokenAuth(creds.token), Session(token=creds.token, image_endpoint=creds.endpoint)

    def _adopt(self, auth: httpx.Auth, session: Session) -> Session:
        """Take the session (and the auth that keeps it) after login; the session settled."""
        if self._creds.files_endpoint:  # an explicit FILES_ENDPOINT beats the catalog
            session.files_endpoint = self._creds.files_endpoint
        if self._creds.tenant_id and not session.tenant_id:
            session.tenant_id = self._creds.tenant_id
        session = settle(session, self._creds, servicenet=self._servicenet)
        if not self._verify:
            for url in (session.image_endpoint, session.files_endpoint):
                host = httpx.URL(url).host if url else "localhost"
                if not is_loopback(host):
                    raise ConfigurationError(f"verify=False is allowed for loopback addresses "
                                             f"only, not {host}")
        self._secrets.add(session.token.reveal())
        self._session = session
        self._auth = auth
        return session

    def _identity_options(self) -> dict[str, Any]:
        """The options of an identity connection (no auth, no base URL), but its transport."""
        return {"timeout": self._timeout, "verify": _verify(self._verify)}

    def _client_options(self, base_url: str) -> dict[str, Any]:
        """The options of an API connection at ``base_url`` (after login), but its transport."""
        return {"base_url": base_url, "auth": self._auth, "verify": _verify(self._verify),
                "timeout": self._timeout, "follow_redirects": False,
                "headers": {"Accept": "application/json", "User-Agent": USER_AGENT}}

    def _retry_options(self, *, renew: bool = False) -> dict[str, Any]:
        """Options of a ``RetryTransport``; ``renew``: for API requests, which carry the token
        (every repeated attempt gets the current one when the client can log in again)."""
        renewer = self._auth if renew and isinstance(self._auth, IdentityAuth) else None
        return {"retries": self._retries, "backoff_initial": DEFAULT_RETRY_BACKOFF_INITIAL,
                "backoff_maximum": DEFAULT_RETRY_BACKOFF_MAXIMUM,
                "retry_after_cap": DEFAULT_RETRY_AFTER_CAP, "stats": self.stats,
                "renewer": renewer}

    def _wait_timeout(self, timeout: Timeout) -> float | None:
        return _check_timeout(timeout, self.wait_timeout)

    # -- answers, errors, the log -------------------------------------------------------------

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret and secret in text:
                text = text.replace(secret, "********")
        return text

    def _check(self, response: httpx.Response) -> httpx.Response:
        """The response if 2xx/3xx, else the matching ``APIError``, secrets scrubbed."""
        try:
            return raise_for_status(response, redact=self._secrets)
        except APIError as exc:
            message = exc.message
            extra: dict[str, Any] = {}
            if isinstance(exc, RateLimited):
                extra["retry_after"] = exc.retry_after
            if isinstance(exc, AuthError) and exc.status_code == 401:
                if self._creds.kind == "token":
                    message += (" -- the token has expired (or was revoked): get a new one, or "
                                "connect with username + API key so imgtools can renew it")
                else:
                    message += " -- refused even after logging in again"
                    extra["renewable"] = True
            raise type(exc)(message, status_code=exc.status_code, method=exc.method,
                            path=exc.path, request_id=exc.request_id, **extra) from None

    def _transport_error(self, request: httpx.Request, exc: httpx.HTTPError) -> TransportError:
        sent = not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
        detail = self._redact(str(exc)) or type(exc).__name__
        return TransportError(f"{request.method} {request.url.path}: {type(exc).__name__}: "
                              f"{detail}", request_sent=sent)

    def _record(self, tasks: list[Task]) -> None:
        for task in tasks:
            if task.input is not None:
                self._inputs[task.id] = task.input
        log = self.log
        if log is None or not tasks:
            return
        try:
            if getattr(log, "records_origin", False):  # a TaskLog: say where they were seen
                from imgtools._taskfields import origin_of

                log.record(tasks, origin=origin_of(self))  # type: ignore[call-arg]
            else:
                log.record(tasks)
        except Exception:  # the audit log must not break an export; say so loudly instead
            logger.warning("could not record %d task(s) in the audit log", len(tasks),
                           exc_info=True)

    # -- URLs ---------------------------------------------------------------------------------

    def _follow(self, link: str) -> str:
        """Resolve a ``next`` link; refuse one that points at another host (the token would go
        with it)."""
        endpoint = self.endpoint
        assert endpoint is not None
        base = httpx.URL(endpoint)
        if link.startswith(("http://", "https://")):
            url = httpx.URL(link)
            if (url.scheme, url.host, url.port) != (base.scheme, base.host, base.port):
                raise ResponseError(f"refusing to follow a paging link to another host "
                                    f"({url.host})")
            return link
        root = endpoint[: -len("/v2")] if endpoint.endswith("/v2") else endpoint
        if link.startswith(("/v2/", "/v2?")):
            return root + link
        if link.startswith("/"):
            return f"{base.scheme}://{base.netloc.decode('ascii')}{link}"
        return endpoint + "/" + link

    def _http_request(self, method: str, url: str, *, storage: bool = False,
                      **kwargs: Any) -> Send:
        client = self._storage_http if storage else self._http
        if client is None:
            raise MissingSetting(
                "no Cloud Files storage URL: set FILES_ENDPOINT (or pass files_endpoint=), or "
                "log in with username + API key so the service catalog gives it",
                setting="files_endpoint")
        return Send(client.build_request(method, url, **kwargs), storage=storage)

    # -- operations (written once, driven by both clients) ------------------------------------

    def _op_get_task(self, task_id: str) -> Op[tuple[Task, float | None]]:
        response = yield self._http_request("GET", _path("tasks", task_id))
        self._check(response)
        task = Task.from_json(_json(response), stub=False)
        if task.id.lower() != task_id.lower():
            # Never let another task's body stand in for this one.
            raise ResponseError(f"GET /v2/tasks/{task_id} answered with task {task.id}")
        self._record([task])
        return task, retry_after_seconds(response.headers.get("retry-after"))

    def _op_fetch(self, url: str, params: Mapping[str, Any] | None) -> Op[httpx.Response]:
        response = yield self._http_request("GET", url, params=params)
        return self._check(response)

    def _read_page(self, response: httpx.Response, key: str, seen: set[str] | None,
                   fast: Callable[[bytes], Any] | None = None
                   ) -> tuple[list[Any], str | None, float | None]:
        """A fetched listing page's items and resolved ``next``; ``seen`` (the links followed
        so far) catches a ``next`` that leads back to a page already read, which would never
        end. ``fast``: see ``_Listing``."""
        body = None if fast is None else fast(response.content)
        if body is None:
            body = _json(response)
        if not isinstance(body, dict) or not isinstance(body.get(key), list):
            raise ResponseError(f"GET {response.request.url.path}: expected a JSON object with a "
                                f"{key!r} list")
        link = body.get("next")
        next_url = self._follow(link) if isinstance(link, str) and link else None
        if next_url is not None and seen is not None:
            if next_url in seen:
                raise ResponseError(f"GET {response.request.url.path}: the 'next' link leads "
                                    "back to a page already read; the listing would never end")
            seen.add(next_url)
        return body[key], next_url, retry_after_seconds(response.headers.get("retry-after"))

    def _op_page(self, url: str, params: Mapping[str, Any] | None, key: str,
                 seen: set[str] | None = None
                 ) -> Op[tuple[list[Any], str | None, float | None]]:
        """One page of a listing and its resolved ``next`` (see ``_read_page``)."""
        response = yield from self._op_fetch(url, params)
        return self._read_page(response, key, seen)

    def _guess_next(self, response: httpx.Response, seen: set[str]) -> str | None:
        """The page after ``response``, from its raw bytes, if it is safe to request before
        the page is decoded: on this host (``_follow``), not a page already read, and the
        same listing (same path), so that a wrong guess costs one discarded GET of it."""
        content = response.content
        # The service puts ``next`` after the list: look from the end (a C scan, where a
        # regex search from the start walks the whole page in Python's engine).
        found = _NEXT_LINK.match(content, max(content.rfind(b'"next"'), 0))
        if found is None:
            return None
        try:
            url = self._follow(found[1].decode("ascii"))
        except (UnicodeDecodeError, ResponseError):
            return None  # decoding the page says what is wrong with it
        if url in seen or httpx.URL(url).path != response.request.url.path:
            return None
        return url

    def _op_listing_page(self, listing: _Listing[T]) -> Op[T | None]:
        """The next page of ``listing``, ``None`` after the last one.

        The page after it is requested while this one is decoded (its link
        guessed from the raw bytes, ``_guess_next``), so the client's parsing overlaps the
        service's work on the next page instead of adding to it. The decoded ``next`` (checked
        as always) decides: a wrong guess is discarded and the right page fetched. A failed
        request ahead is raised when its page is asked for, as if it were sent only then."""
        response, listing.ahead = listing.ahead, None
        if isinstance(response, ImgToolsError):
            raise response
        if response is None:
            if listing.url is None:
                return None
            response = yield from self._op_fetch(listing.url, listing.query)
            listing.query = None
        guess = self._guess_next(response, listing.seen)
        if guess is None:
            page, listing.url = self._read_listed(response, listing)
            return page
        fetched, read = yield Gather((self._op_fetch(guess, None),
                                      _op_value(self._read_listed, response, listing)))
        if isinstance(read, ImgToolsError):
            raise read
        page, listing.url = read
        if listing.url == guess:
            listing.ahead = fetched
        return page

    def _read_listed(self, response: httpx.Response, listing: _Listing[T]
                     ) -> tuple[T, str | None]:
        items, next_url, _ = self._read_page(response, listing.key, listing.seen, listing.fast)
        return listing.shape(items), next_url

    def _op_status_pages(self, status: TaskStatus
                         ) -> Op[list[tuple[list[Any], float | None]]]:
        """Every page of the task list with this status, newest first: ``(items, retry_after)``
        per page."""
        url: str | None = "tasks"
        query: dict[str, Any] | None = {"status": status.value, "limit": DEFAULT_TASKS_PAGE_SIZE,
                                        "sort_key": "created_at", "sort_dir": "desc"}
        seen: set[str] = set()
        pages: list[tuple[list[Any], float | None]] = []
        while url is not None:
            items, url, retry_after = yield from self._op_page(url, query, "tasks", seen)
            query = None
            pages.append((items, retry_after))
        return pages

    def _op_get_image(self, image_id: str) -> Op[Image]:
        response = yield self._http_request("GET", _path("images", image_id))
        self._check(response)
        return Image.from_json(_json(response))

    def _op_export_of(self, task: Task | ExportTask | AsyncExportTask | str
                      ) -> Op[tuple[str, int | None]]:
        """The export location of a finished export task and its image's size (``None`` when
        the image is gone: the export can still be checked on its own)."""
        if isinstance(task, ExportTask | AsyncExportTask):
            task = task.task if task.done and task.task is not None else task.id
        if isinstance(task, str):
            task, _ = yield from self._op_get_task(validate_task_id(task))
        final, location = resolve_export(task)
        if final.is_stub:
            final, _ = yield from self._op_get_task(final.id)
            final, location = resolve_export(final)
        if final.image_id is None:
            return location, None
        try:
            image = yield from self._op_get_image(final.image_id)
        except NotFound:
            return location, None
        return location, image.size

    def _op_preflight(self, image_id: str, container: str, *, create_container: bool
                      ) -> Op[None]:
        try:
            image = yield from self._op_get_image(image_id)
        except NotFound:
            raise NotExportable(f"cannot export image {image_id}: no such image (or it is not "
                                "visible to you)", reason="image not found") from None
        verdict = self.exportability(image)
        if not verdict.ok:
            assert verdict.reason is not None
            raise NotExportable(f"cannot export image {image_id}: {verdict.reason}",
                                reason=verdict.reason)
        response = yield self._http_request("HEAD", _path(container), storage=True)
        if response.status_code == 404:
            if not create_container:
                raise ContainerNotFound(
                    f"container {container!r} does not exist in Cloud Files: create it, or pass "
                    "create_container=True", reason="container not found")
            yield from self._op_put_container(container)
        else:
            self._check(response)
        name = f"{image_id}.vhd"
        response = yield self._http_request("HEAD", _path(container, name), storage=True)
        if response.status_code == 404:
            return
        self._check(response)
        raise ExportExists(f"{container}/{name} already exists: this image was already exported "
                           "to that container; delete the object (and its segments) or choose "
                           "another container", reason="export exists")

    def _op_put_container(self, container: str) -> Op[None]:
        response = yield self._http_request("PUT", _path(container), storage=True,
                                            headers={"Content-Length": "0"})
        self._check(response)

    def _claim(self, task: Task) -> bool:
        with self._lock:
            if task.id in self._claimed:
                return False
            self._claimed.add(task.id)
            return True

    @staticmethod
    def _export_task(image_id: str, container: str) -> tuple[dict[str, str], str, str]:
        """An export's task input, how to name it, and what to check before trying again."""
        return ({"image_uuid": image_id, "receiving_swift_container": container},
                f"export image {image_id} to container {container!r}",
                f"whether {container}/{image_id}.vhd exists")

    def _op_earlier(self, task_type: str, task_input: Mapping[str, Any], what: str,
                    check: str) -> Op[Task | None]:
        """Asked again after a ``TaskNotConfirmed``: the task of that attempt, if the service
        made it (before anything else, such as a preflight that would now find its export).
        ``None`` when there was no such attempt or it made no task; ``TaskNotConfirmed`` again
        when looking fails, since sending another POST could make a duplicate."""
        attempt = self._attempts.get(_attempt_key(task_type, task_input))
        if attempt is None:
            return None
        try:
            found = yield from self._op_look_up(attempt)
        except ImgToolsError as exc:
            raise self._not_confirmed(attempt, f"looking for the task of the earlier attempt "
                                      f"failed ({exc})", what, check) from None
        if found is not None:
            self._attempts.pop(_attempt_key(task_type, task_input), None)
        return found

    def _op_create_task(self, task_type: str, task_input: Mapping[str, Any], what: str, *,
                        live: bool, check: str) -> Op[Task]:
        """``POST /v2/tasks``: ends in the task, or, once the POST may have been sent, in a
        ``TaskNotConfirmed`` that can look the task up later (never in another error).

        With ``live``, it first looks for a live task of the same type and input that no caller
        of this client got back (one started by another process, or whose answer was lost
        there) and returns it, so asking again from a new process makes no duplicate."""
        key = _attempt_key(task_type, task_input)
        if live:
            try:
                found = yield from self._op_find_task(task_type, task_input, None)
            except ImgToolsError as exc:
                # Only a help against another process's lost answer: go on without it.
                logger.info("%s: could not list live tasks first (%s)", what, exc)
            else:
                if found is not None:
                    logger.info("%s: a live task is already doing it: %s", what, found.id)
                    return found
        body = {"type": task_type, "input": dict(task_input)}
        refusals = 0
        while True:
            began = time.time()
            status: int | None = None
            retry_after: float | None = None
            try:
                response = yield self._http_request("POST", "tasks", json=body)
            except TransportError as exc:
                if exc.request_sent is False:
                    raise  # the connection never opened: nothing to reconcile
                cause = f"the answer was lost ({exc})"
            else:
                status = response.status_code
                retry_after = retry_after_seconds(response.headers.get("retry-after"))
                if 200 <= status < 300:
                    try:
                        task = Task.from_json(_json(response), stub=False)
                    except ImgToolsError as exc:
                        cause = f"the answer could not be read ({exc})"
                    else:
                        self._claim(task)
                        self._record([task])
                        self._attempts.pop(key, None)
                        return task
                elif status in (413, 429) and refusals < self._retries:
                    # An over-limit refusal: the request was not carried out; wait and resend.
                    refusals += 1
                    self.stats.retried(f"POST {status}")
                    yield Sleep(min(retry_after if retry_after is not None
                                     else self._backoff(refusals), DEFAULT_RETRY_AFTER_CAP))
                    continue
                elif status < 500:
                    self._check(response)
                    raise ResponseError(f"POST /v2/tasks: unexpected status {status}")
                else:
                    cause = f"the service answered {status}"
            attempt = self._attempts.setdefault(key, _Attempt(task_type, dict(task_input),
                                                              began))
            found, problem = yield from self._op_reconcile(attempt, began, cause)
            if found is not None:
                self._attempts.pop(key, None)
                return found
            if problem is None and status == 503 and refusals < self._retries:
                # 503: the service says it did not take the request, and the listing agrees.
                refusals += 1
                self.stats.retried("POST 503")
                yield Sleep(min(retry_after if retry_after is not None
                                 else self._backoff(refusals), DEFAULT_RETRY_AFTER_CAP))
                continue
            if problem is not None:
                cause += f"; looking for the task failed ({problem})"
            raise self._not_confirmed(attempt, cause, what, check)

    def _not_confirmed(self, attempt: _Attempt, cause: str, what: str, check: str
                       ) -> TaskNotConfirmed:
        since = datetime.fromtimestamp(attempt.posted_at - self._reconcile_skew, UTC)
        error = {"export": ExportNotConfirmed,
                 "import": ImportNotConfirmed}.get(attempt.task_type, TaskNotConfirmed)
        return error(
            f"POST /v2/tasks ({what}): {cause}, and no such {attempt.task_type} task was found "
            f"created since {since:%Y-%m-%d %H:%M:%S} UTC. It may still appear: call the "
            f"error's lookup(), or ask again (the same client looks for it first), or check "
            f"client.tasks(type={attempt.task_type!r}) and {check} before trying again",
            task_type=attempt.task_type, input=dict(attempt.input),
            posted_at=datetime.fromtimestamp(attempt.posted_at, UTC),
            lookup=self._lookup(attempt))

    def _lookup(self, attempt: _Attempt) -> Callable[[], Any]:
        """The ``lookup`` of a ``TaskNotConfirmed``: each client runs ``_op_look_up``."""
        raise NotImplementedError

    @staticmethod
    def _backoff(attempt: int) -> float:
        if testing.is_testing():
            return 0.0
        ceiling = min(DEFAULT_RETRY_BACKOFF_MAXIMUM, DEFAULT_RETRY_BACKOFF_INITIAL * 2.0 ** attempt)
        return ceiling * random.random()

    def _op_reconcile(self, attempt: _Attempt, began: float, cause: str
                      ) -> Op[tuple[Task | None, ImgToolsError | None]]:
        """Find the task a lost POST may have created, asking again through trouble that may
        pass (``RECONCILE_ATTEMPTS`` times): the task or ``None`` (certainly not created since
        ``began``), and the error that kept it from looking, if any."""
        logger.info("POST /v2/tasks (%s): %s; looking for the task", attempt.task_type, cause)
        if not testing.is_testing():
            yield Sleep(RECONCILE_SETTLE)
        since = datetime.fromtimestamp(began - self._reconcile_skew, UTC)
        problem: ImgToolsError | None = None
        for tries in range(RECONCILE_ATTEMPTS):
            if tries:
                yield Sleep(self._backoff(tries))
            try:
                found = yield from self._op_find_task(attempt.task_type, attempt.input, since)
            except ImgToolsError as exc:
                problem = exc
                if not _transient(exc):
                    break
            else:
                if found is not None:
                    attempt.task = found
                    self.stats.add("reconciled")
                return found, None
        return None, problem

    def _op_look_up(self, attempt: _Attempt) -> Op[Task | None]:
        """The task of a ``TaskNotConfirmed`` attempt, or ``None`` if none was created since;
        once found, the same task every time."""
        if attempt.task is None:
            since = datetime.fromtimestamp(attempt.posted_at - self._reconcile_skew, UTC)
            attempt.task = yield from self._op_find_task(attempt.task_type, attempt.input, since)
        return attempt.task

    def _op_find_task(self, task_type: str, task_input: Mapping[str, Any],
                      since: datetime | None) -> Op[Task | None]:
        """The newest task of this type and input that no caller of this client got back:
        among those created since ``since`` (listed newest first back to it), or with
        ``since=None`` among the live ones (pending, then processing). The list gives stubs:
        details are fetched only for candidates whose input neither this client nor the audit
        log knows. Claims what it returns."""
        candidates: list[str] = []
        # Not ?type=...: upstream Glance refuses any type filter but "import".
        queries: list[dict[str, Any]]
        if since is None:
            queries = [{"status": s, "sort_key": "created_at", "sort_dir": "desc",
                        "limit": DEFAULT_TASKS_PAGE_SIZE} for s in ("pending", "processing")]
        else:
            queries = [{"sort_key": "created_at", "sort_dir": "desc", "limit": 100}]
        for params in queries:
            url: str | None = "tasks"
            query: dict[str, Any] | None = params
            seen: set[str] = set()
            while url is not None:
                items, url, _ = yield from self._op_page(url, query, "tasks", seen)
                query = None
                for item in items:
                    if not isinstance(item, dict):
                        continue
                    if since is not None:
                        created = parse_time(item.get("created_at"))
                        if created is None or created < since:
                            url = None
                            break
                    task_id = item.get("id")
                    if item.get("type") == task_type and isinstance(task_id, str) \
                            and task_id not in candidates:
                        candidates.append(task_id)
        matches: list[Task] = []
        for task_id in candidates:
            with self._lock:
                if task_id in self._claimed:
                    continue
            known = self._known_input(task_id)
            if known is not None and not _same_input(known, task_input):
                continue  # its input cannot have changed
            try:
                task, _ = yield from self._op_get_task(task_id)
            except NotFound:
                continue
            if task.input is not None and _same_input(task.input, task_input):
                matches.append(task)
        for task in sorted(matches, key=lambda t: t.created_at, reverse=True):
            if self._claim(task):
                logger.info("found the %s task %s", task_type, task.id)
                return task
        return None

    def _known_input(self, task_id: str) -> Mapping[str, Any] | None:
        """A task's input as this client or its audit log saw it, without a request."""
        known = self._inputs.get(task_id)
        if known is not None:
            return known
        get = getattr(self.log, "get", None)  # a TaskLog has it; any recorder may not
        if get is None:
            return None
        try:
            task = get(task_id)
        except Exception:  # the log is a help here, never a reason to fail
            return None
        if isinstance(task, Task) and task.input is not None:
            self._inputs[task_id] = task.input
            return task.input
        return None

    def _task_params(self, type: str | None, status: str | TaskStatus | None, sort_key: str,
                     sort_dir: str, page_size: int) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": validate_page_size(page_size),
                                  "sort_key": validate_task_sort_key(sort_key),
                                  "sort_dir": validate_sort_dir(sort_dir)}
        if type is not None:
            params["type"] = validate_task_type(type)
        if status is not None:
            params["status"] = validate_task_status(status).value
        return params

    @staticmethod
    def _image_params(filters: Mapping[str, Any]) -> dict[str, Any]:
        params = {k: v for k, v in filters.items() if v is not None}
        if "limit" in params:
            params["limit"] = validate_page_size(params["limit"], field="limit")
        else:
            params["limit"] = DEFAULT_IMAGES_PAGE_SIZE
        return params

    # -- no I/O -------------------------------------------------------------------------------

    def exportability(self, image: Image) -> Exportability:
        """Whether ``image`` can be exported by you, and why not (no request).

        It must be ``active``, owned by your tenant (base images and images shared with you
        cannot be exported), and its ``com.rackspace__1__options`` must be ``"0"`` if present
        (others mean a licensing or billing restriction, such as Windows or Red Hat).
        """
        if image.status != "active":
            return Exportability(False, f"its status is {image.status!r}, not 'active'",
                                 "not_active")
        tenant = self.tenant_id
        if tenant is not None:
            if image.owner != tenant:
                return Exportability(False, f"it belongs to tenant {image.owner!r}, not to you "
                                     f"({tenant!r}); only the owner can export an image",
                                     "not_owner")
        elif image.visibility in ("public", "community", "shared"):
            return Exportability(False, f"it is a {image.visibility} image; only images you own "
                                 "can be exported", "not_owner")
        options = image.options
        if options is not None and options != "0":
            return Exportability(False, "licensing or billing restrictions "
                                 f"(com.rackspace__1__options = {options!r})", "restricted")
        return Exportability(True)


def _handle(client: Client, task: Task) -> ExportTask | ImportTask:
    """The handle of a task's own kind."""
    return ImportTask(client, task) if task.type == "import" else ExportTask(client, task)


class Ops:
    """The operations a client is made of, as ``_ops`` generators, and what they share: the
    interface waiting loops (``_polling``) are written against. Plumbing: for drivers and
    tests, not for everyday use."""

    def __init__(self, client: _BaseClient[Any]) -> None:
        self._client = client

    @property
    def poll(self) -> PollPolicy:
        """The client's default ``PollPolicy``."""
        return self._client.poll

    def wait_limit(self, timeout: Timeout) -> float | None:
        """``timeout`` checked, or the client's default deadline for ``DEFAULT``."""
        return self._client._wait_timeout(timeout)

    def get_task(self, task_id: str) -> Op[tuple[Task, float | None]]:
        """One task in full and the answer's ``Retry-After``; recorded in the audit log."""
        return self._client._op_get_task(task_id)

    def status_pages(self, status: TaskStatus) -> Op[list[tuple[list[Any], float | None]]]:
        """Every page of the task list with this status."""
        return self._client._op_status_pages(status)

    def record(self, tasks: list[Task]) -> None:
        """Put observed tasks in the audit log (a failing log only warns)."""
        self._client._record(tasks)


class SyncOps(Ops):
    """``Ops`` of a ``Client``: ``run`` drives an operation with blocking I/O."""

    _client: Client

    def run(self, op: Op[T]) -> T:
        return self._client._run(op)


class AsyncOps(Ops):
    """``Ops`` of an ``AsyncClient``: ``run`` drives an operation with awaits."""

    _client: AsyncClient

    async def run(self, op: Op[T]) -> T:
        return await self._client._run(op)


def _ahandle(client: AsyncClient, task: Task) -> AsyncExportTask | AsyncImportTask:
    return (AsyncImportTask(client, task) if task.type == "import"
            else AsyncExportTask(client, task))


# -- the sync client --------------------------------------------------------------------------


class Client(_BaseClient[httpx.BaseTransport]):
    """A blocking Cloud Images client. Prefer ``imgtools.connect()``.

    Options are keyword-only: credentials (see ``connect``), ``timeout`` per HTTP request
    (seconds, default 30), ``retries`` per idempotent request (default 5), ``poll`` (the default
    ``PollPolicy``), ``wait_timeout`` (default deadline of waits, 3600 s), ``log`` (``True``: the
    default ``TaskLog``; ``False``: none; or any object with ``record``), ``verify`` (TLS; off
    only for loopback), ``transport`` (an ``httpx`` transport to send through, for tests).
    Safe to share between threads.
    """

    _identity_http: httpx.Client | None

    def _start(self) -> None:
        # Log in now, so that bad credentials fail at construction, not at the first call.
        identity = self._open_identity()
        try:
            run(self._op_start(identity), identity.send if identity else self._send)
        except BaseException:
            self.close()
            raise

    def _open_identity(self) -> IdentityAuth | None:
        if self._creds.kind != "identity":
            return None
        self._identity_http = httpx.Client(transport=self._transport(),
                                           **self._identity_options())
        return IdentityAuth(self._creds, stats=self.stats, sync_client=self._identity_http)

    def _open_http(self, session: Session) -> None:
        assert session.image_endpoint is not None
        self._http = httpx.Client(transport=self._transport(),
                                  **self._client_options(session.image_endpoint))
        if session.files_endpoint:
            self._storage_http = httpx.Client(transport=self._transport(bulk=True),
                                              **self._client_options(session.files_endpoint))

    def _transport(self, *, bulk: bool = False) -> RetryTransport:
        inner: httpx.BaseTransport
        if self._inner is not None:
            inner = self._inner
        elif bulk:  # Cloud Files: segment bodies are large, read them with C code
            inner = BulkTransport(verify=_verify(self._verify))
        else:
            inner = httpx.HTTPTransport(verify=_verify(self._verify))
        # Before login (the identity connection) there is no auth yet: nothing to renew.
        return RetryTransport(inner, **self._retry_options(renew=True))

    @property
    def _storage(self) -> httpx.Client:
        """An ``httpx.Client`` based at the storage URL, with the same auth and retries."""
        if self._storage_http is None:
            self._http_request("HEAD", "", storage=True)  # raises the explanation
        storage: httpx.Client = self._storage_http
        return storage

    # -- the driver -------------------------------------------------------------------------

    @functools.cached_property
    def ops(self) -> SyncOps:
        """The client's operations and their driver (plumbing: see ``Ops``)."""
        return SyncOps(self)

    def _run(self, op: Op[T]) -> T:
        return run(op, self._send)

    def _send(self, step: Send) -> httpx.Response:
        http = self._storage_http if step.storage else self._http
        try:
            response: httpx.Response = http.send(step.request)
        except httpx.HTTPError as exc:
            raise self._transport_error(step.request, exc) from None
        return response

    # -- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connections (the client cannot be used afterwards)."""
        for http in (self._http, self._storage_http, self._identity_http):
            if http is not None:
                http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- images -----------------------------------------------------------------------------

    def images(self, **filters: Any) -> Iterator[Image]:
        """Every image the filters select (``name=``, ``status=``, ``visibility=``, ``owner=``,
        ``tag=``, ``sort_key=``, ``sort_dir=``, ``limit=`` page size, ...), following ``next``."""
        params = self._image_params(filters)

        def generate() -> Iterator[Image]:
            url: str | None = "images"
            query: dict[str, Any] | None = params
            seen: set[str] = set()
            while url is not None:
                items, url, _ = self._run(self._op_page(url, query, "images", seen))
                query = None
                yield from (Image.from_json(item) for item in items)

        return generate()

    def get_image(self, image_id: str) -> Image:
        """One image by id (``NotFound`` if it does not exist or is not visible to you)."""
        return self._run(self._op_get_image(validate_image_id(image_id)))

    # -- tasks ------------------------------------------------------------------------------

    def get_task(self, task_id: str) -> Task:
        """One task in full (with ``input``, ``result``, ``message``); recorded in the log."""
        task, _ = self._run(self._op_get_task(validate_task_id(task_id)))
        return task

    def _lookup(self, attempt: _Attempt) -> Callable[[], TaskHandle | None]:
        def lookup() -> TaskHandle | None:
            task = self._run(self._op_look_up(attempt))
            return None if task is None else _handle(self, task)

        return lookup

    def iter_task_pages(self, *, type: str | None = None, status: str | TaskStatus | None = None,
                        sort_key: str = "created_at", sort_dir: str = "desc",
                        page_size: int = DEFAULT_TASKS_PAGE_SIZE) -> Iterator[list[dict[str, Any]]]:
        """Every page of the task list as the service sent it (lists of stub dicts), for fast
        bulk reading (e.g. into a DataFrame). Not parsed, not recorded in the log. Each page is
        decoded while the next one is on its way (so a caller that stops early has made one
        request more than it used)."""
        return self._task_pages(self._task_params(type, status, sort_key, sort_dir, page_size),
                                _as_listed)

    def _task_pages(self, params: dict[str, Any], shape: Callable[[list[Any]], T],
                    fast: Callable[[bytes], Any] | None = None) -> Iterator[T]:
        """The pages of the task listing ``params`` selects, each made into ``shape(items)``
        beside the decoding (while the next page is on its way)."""
        def generate() -> Iterator[T]:
            listing = _Listing("tasks", params, "tasks", shape, fast=fast)
            while True:
                op = self._op_listing_page(listing)
                page = self._run(op)
                if page is None:
                    return
                yield page

        return generate()

    def _shaped_task_pages(self, shape: Callable[[list[Any]], T],
                           fast: Callable[[bytes], Any] | None = None) -> Iterator[T]:
        """Every page of ``iter_task_pages()``, each made into ``shape(items)`` (for
        ``history``: a frame's columns taken while the next page is on its way), decoded by
        ``fast`` where it can (see ``_Listing``)."""
        return self._task_pages(self._task_params(None, None, "created_at", "desc",
                                                  DEFAULT_TASKS_PAGE_SIZE), shape, fast)

    def tasks(self, *, type: str | None = None, status: str | TaskStatus | None = None,
              sort_key: str = "created_at", sort_dir: str = "desc",
              page_size: int = DEFAULT_TASKS_PAGE_SIZE) -> Iterator[Task]:
        """Every task (stubs: no ``input``/``result``/``message``), newest first by default,
        following ``next``; ``page_size`` 1 to 1000. Each page is recorded in the log."""
        pages = self.iter_task_pages(type=type, status=status, sort_key=sort_key,
                                     sort_dir=sort_dir, page_size=page_size)

        def generate() -> Iterator[Task]:
            for page in pages:
                parsed = [Task.from_json(item) for item in page]
                self._record(parsed)
                yield from parsed

        return generate()

    # -- exports ----------------------------------------------------------------------------

    def begin_export(self, image_id: str, container: str, *, create_container: bool = False,
                     preflight: bool = True) -> ExportTask:
        """Start exporting ``image_id`` into ``container``; returns at once with the task.

        Arguments are checked locally first (``ValidationError``, nothing sent). The preflight
        (on by default) raises ``NotExportable``, ``ContainerNotFound`` or ``ExportExists``
        before ``POST /v2/tasks``; ``create_container=True`` creates a missing container.
        With the preflight, a live export of the same image to the same container that no
        caller of this client got back (started by another process) is returned instead of
        starting another. A lost answer is reconciled, never resent blindly: the task, or
        ``ExportNotConfirmed`` (``.lookup()`` finds the task later; asking again for the same
        pair looks for it first).
        """
        image_id, container = validate_export_args(image_id, container)
        task_input, what, check = self._export_task(image_id, container)
        earlier = self._run(self._op_earlier("export", task_input, what, check))
        if earlier is not None:
            return ExportTask(self, earlier)
        if preflight:
            self._run(self._op_preflight(image_id, container, create_container=create_container))
        elif create_container:
            self._run(self._op_put_container(container))
        return ExportTask(self, self._run(self._op_create_task("export", task_input, what,
                                                               live=preflight, check=check)))

    def export(self, image_id: str, container: str, *, create_container: bool = False,
               preflight: bool = True, timeout: Timeout = DEFAULT,
               poll: PollPolicy | None = None,
               on_update: OnUpdate | None = None) -> Task:
        """``begin_export(...)`` then ``wait(...)``: the finished task, or ``TaskFailed`` /
        ``TaskTimeout``."""
        limit = self._wait_timeout(timeout)
        handle = self.begin_export(image_id, container, create_container=create_container,
                                   preflight=preflight)
        return handle.wait(limit, poll=poll, on_update=on_update)

    def resume(self, task_id: str) -> ExportTask | ImportTask:
        """Follow a task created elsewhere (one GET): an ``ImportTask`` for an import, else an
        ``ExportTask``."""
        handle = ExportTask.resume(self, task_id)
        return _handle(self, handle.task) if handle.task is not None else handle

    # -- imports ----------------------------------------------------------------------------

    def begin_import(self, location: str, *, name: str, format: str = "vhd",
                     preflight: bool = True) -> ImportTask:
        """Start importing the VHD at ``location`` (``container/object`` in this region's
        Cloud Files) as a new image called ``name``; returns at once with the task.

        Arguments are checked locally first (``ValidationError``, nothing sent). The preflight
        (on by default) raises ``ImportSourceNotFound``, ``ImportTooLarge`` (over
        ``IMPORT_SIZE_LIMIT``; a DLO counts its segments) or ``ImportInProgress`` before
        ``POST /v2/tasks``. A lost answer is reconciled as for exports: the task, or
        ``ImportNotConfirmed`` (never a second import).
        """
        container, obj, task_input = validate_import_args(location, name, format)
        what, check = describe_import(task_input)
        earlier = self._run(self._op_earlier("import", task_input, what, check))
        if earlier is not None:
            return ImportTask(self, earlier)
        if preflight:
            self._run(op_import_preflight(self, container, obj, task_input))
        return ImportTask(self, self._run(self._op_create_task("import", task_input, what,
                                                               live=preflight, check=check)))

    def import_(self, location: str, *, name: str, format: str = "vhd", preflight: bool = True,
                timeout: Timeout = DEFAULT, poll: PollPolicy | None = None,
                on_update: OnUpdate | None = None) -> Task:
        """``begin_import(...)`` then ``wait(...)``: the finished task (``task.image_id`` is
        the new image), or ``ImportFailed`` (``.failure``: an ``ImportFailure``) /
        ``TaskTimeout``."""
        limit = self._wait_timeout(timeout)
        handle = self.begin_import(location, name=name, format=format, preflight=preflight)
        return handle.wait(limit, poll=poll, on_update=on_update)

    def wait_all(self, tasks: Iterable[TaskRef], *, timeout: Timeout = DEFAULT,
                 poll: PollPolicy | None = None,
                 on_progress: OnProgress | None = None) -> WaitAllResult:
        """Follow many tasks (``ExportTask``s, ``Task``s or ids) until all finish or the deadline.

        Each round lists the ``pending`` and ``processing`` tasks (pages of 1000) instead of one
        GET per task, and GETs in full only the tasks that left those lists. Never raises for a
        failed task: the ``WaitAllResult`` sorts them into succeeded, failed, timed out and
        errors. ``on_progress(WaitProgress)`` is called after every round.
        """
        return wait_all(self, tasks, timeout=timeout, poll=poll, on_progress=on_progress)

    # -- transfers (imgtools.transfer) -------------------------------------------------------

    def transfer(self, image_id: str, *, to: str | Client, wait: bool = True,
                 name: str | None = None, properties: Sequence[str] | None = None,
                 cleanup: CleanupPolicy = DEFAULT_CLEANUP,
                 container: str = DEFAULT_TRANSFER_CONTAINER,
                 target_container: str | None = None,
                 listing_delay: float = DEFAULT_LISTING_DELAY,
                 workers: int = DEFAULT_COPY_WORKERS, store: TransferStore | None = None,
                 on_step: OnStep | None = None, progress: Progress | None = None) -> Transfer:
        """Move an image to another region (``to="IAD"``) or account (``to=`` its client):
        export, copy, import, metadata, verify, cleanup; see ``imgtools.transfer``. Runs every
        step unless ``wait=False``; ``TransferFailed`` names the step, the state is saved and
        ``resume_transfer(id)`` continues.

        ``name``: the new image's (default: the source's); ``properties``: the source
        properties re-applied (default: ``DEFAULT_PROPERTIES`` and the user's own keys);
        ``cleanup``: what is deleted after the import succeeded (``CLEANUP_POLICIES``);
        ``container``: where the export goes at the source, and the copy at the target unless
        ``target_container``; ``listing_delay``: seconds between reads of the source listing
        until it is stable; ``workers``: segments copied at once; ``store``: the transfers
        record (default: beside the audit log); ``on_step(step, state)``;
        ``progress(done_bytes, total_bytes)`` during the copy (called from its threads)."""
        handle = begin_transfer(self, image_id, to=to, name=name, properties=properties,
                                cleanup=cleanup, container=container,
                                target_container=target_container,
                                listing_delay=listing_delay, workers=workers, store=store,
                                on_step=on_step, progress=progress)
        if wait:
            handle.run()
        return handle

    def resume_transfer(self, transfer_id: str, *, to: str | Client | None = None,
                        wait: bool = True, listing_delay: float = DEFAULT_LISTING_DELAY,
                        workers: int = DEFAULT_COPY_WORKERS, store: TransferStore | None = None,
                        on_step: OnStep | None = None,
                        progress: Progress | None = None) -> Transfer:
        """Continue a recorded transfer from its last completed step (the options as for
        ``transfer``; ``to``: the target's client when it is another account's)."""
        handle = resume_transfer(self, transfer_id, to=to, listing_delay=listing_delay,
                                 workers=workers, store=store, on_step=on_step,
                                 progress=progress)
        if wait:
            handle.run()
        return handle

    def transfer_all(self, images: Iterable[str], *, to: str | Client,
                     name: str | None = None, properties: Sequence[str] | None = None,
                     cleanup: CleanupPolicy = DEFAULT_CLEANUP,
                     container: str = DEFAULT_TRANSFER_CONTAINER,
                     target_container: str | None = None,
                     listing_delay: float = DEFAULT_LISTING_DELAY,
                     workers: int = DEFAULT_COPY_WORKERS, store: TransferStore | None = None,
                     on_step: OnStep | None = None,
                     progress: Progress | None = None) -> list[Transfer]:
        """Transfer many images (the options as for ``transfer``), following their export
        tasks, then their import tasks, with batch polling (``wait_all``) in each region. A
        transfer that fails is left failed and resumable; the others go on. Every handle is
        returned."""
        return transfer_all(self, images, to=to, name=name, properties=properties,
                            cleanup=cleanup, container=container,
                            target_container=target_container, listing_delay=listing_delay,
                            workers=workers, store=store, on_step=on_step, progress=progress)

    # -- Cloud Files ------------------------------------------------------------------------

    @property
    def files(self) -> Files:
        """Cloud Files: containers and objects in your account (needs the storage URL)."""
        return Files(self._storage)

    def verify_export(self, task: Task | ExportTask | str, *,
                      progress: Progress | None = None) -> ExportReport:
        """Check an export: the manifest exists, its segments are listed without gaps, they
        add up to the image size, and each one hashes to its listed MD5. Returns the report
        (``report.ok``, ``report.problems``); raises only when it cannot look at all."""
        location, size = self._run(self._op_export_of(task))
        return self.files.verify_export(location, expected_bytes=size, progress=progress)

    def download_export(self, task: Task | ExportTask | str, dest: str | os.PathLike[str], *,
                        resume: bool = True, progress: bool | Progress = True,
                        workers: int = DEFAULT_DOWNLOAD_WORKERS,
                        fsync: bool = False, convert: str | None = None) -> DownloadResult:
        """Download an export to ``dest``, segment by segment, each checked against its MD5.

        Bytes go to ``<dest>.part`` and are renamed to ``dest`` only when complete and
        verified; an interrupted download resumes with ``Range`` + ``If-Range`` unless
        ``resume=False``. ``progress``: ``True`` draws a ``tqdm.auto`` bar, or pass a callback
        ``(bytes_done, bytes_total)``. Raises ``ChecksumMismatch`` on a bad segment.
        ``fsync`` (default false): flush to disk before the rename (see ``Files.download_export``).
        ``convert`` (``"raw"``/``"qcow2"``): also convert it with qemu-img, checked, into
        ``result.converted`` (the VHD is kept); no qemu-img is a ``ConfigurationError`` before
        any request, a failed conversion a ``ConversionError``.
        """
        check_convert(convert)
        location, size = self._run(self._op_export_of(task))
        close: Any = None
        callback: Progress | None
        if progress is True:
            total = size if size is not None else 0
            callback, close = tqdm_progress(total, os.path.basename(os.fspath(dest)))
        else:
            callback = progress or None
        try:
            return self.files.download_export(location, dest, expected_bytes=size,
                                              resume=resume, workers=workers,
                                              progress=callback, fsync=fsync,
                                              convert=convert)
        finally:
            if close is not None:
                close()

    def leftovers(self, *, protected: Iterable[str] = (),
                  containers: Iterable[str] | None = None) -> LeftoversReport:
        """The export manifests and segments in the account that nothing still needs, with
        bytes and age (``imgtools._leftovers``). Exports of tasks still pending/processing and
        of unfinished transfers in the audit log are always left out, and so is every
        ``<container>/<object>`` in ``protected``. Lists; deletes nothing."""
        keep = check_protected(protected) | self._in_use()
        return find_leftovers(self.files, protected=keep, containers=containers)

    def delete_leftovers(self, report: LeftoversReport, *,
                         protected: Iterable[str] = ()) -> DeleteReport:
        """Delete exactly what ``report`` (from ``leftovers``) lists, except what a task or
        transfer has started to use since (checked again now) or ``protected`` names."""
        keep = check_protected(protected) | self._in_use()
        return delete_leftovers(self.files, report, protected=keep)

    def _in_use(self) -> set[str]:
        running = self.ops.run(op_running_exports(self.ops))
        return running | running_transfer_locations(getattr(self.log, "path", None))

    def image_file(self, image_id: str) -> Iterator[bytes]:
        """The image's own bytes (``GET /v2/images/{id}/file``), streamed in chunks."""
        image_id = validate_image_id(image_id)

        def generate() -> Iterator[bytes]:
            request = self._http.build_request("GET", _path("images", image_id, "file"),
                                               extensions={READ_BODY_EXTENSION: False})
            try:
                response = self._http.send(request, stream=True)
                try:
                    self._check(response)
                    yield from response.iter_bytes(DEFAULT_DOWNLOAD_CHUNK)
                finally:
                    response.close()
            except httpx.HTTPError as exc:  # as every other call: a TransportError, token-free
                raise self._transport_error(request, exc) from None

        return generate()


# -- the async client -------------------------------------------------------------------------


class AsyncClient(_BaseClient[httpx.AsyncBaseTransport]):
    """The awaitable twin of ``Client``: the same methods, ``await``-ed (iterators are ``async
    for``). Prefer ``await imgtools.connect_async()``, or ``async with AsyncClient(...)``.
    Safe in Jupyter's event loop: it never blocks it."""

    _identity_http: httpx.AsyncClient | None

    def _start(self) -> None:
        # A constructor cannot await: open() logs in, on first use.
        self._ready_lock: asyncio.Lock | None = None
        self._blocking: list[httpx.Client] = []
        self._blocking_storage: httpx.Client | None = None

    def _transport(self) -> AsyncRetryTransport:
        inner = self._inner if self._inner is not None else httpx.AsyncHTTPTransport(
            verify=_verify(self._verify))
        # Before login (the identity connection) there is no auth yet: nothing to renew.
        return AsyncRetryTransport(inner, **self._retry_options(renew=True))

    async def open(self) -> AsyncClient:
        """Log in (with username + API key) and open the connections; idempotent."""
        if self._http is not None:
            return self
        if self._ready_lock is None:
            self._ready_lock = asyncio.Lock()
        async with self._ready_lock:
            if self._http is None:  # another task may have opened it while this one waited
                identity = self._open_identity()
                try:
                    await arun(self._op_start(identity),
                               identity.asend if identity else self._asend)
                except BaseException:
                    if self._identity_http is not None:  # a later open() makes a new one
                        await self._identity_http.aclose()
                        self._identity_http = None
                    raise
        return self

    def _open_identity(self) -> IdentityAuth | None:
        if self._creds.kind != "identity":
            return None
        self._identity_http = httpx.AsyncClient(transport=self._transport(),
                                                **self._identity_options())
        return IdentityAuth(self._creds, stats=self.stats, async_client=self._identity_http)

    def _open_http(self, session: Session) -> None:
        assert session.image_endpoint is not None
        if session.files_endpoint:
            self._storage_http = httpx.AsyncClient(
                transport=self._transport(), **self._client_options(session.files_endpoint))
        # Last: a set _http is what tells open() the client is ready.
        self._http = httpx.AsyncClient(transport=self._transport(),
                                       **self._client_options(session.image_endpoint))

    def _fork(self, session: Session) -> None:
        # The original's locks and worker-thread connections are its own.
        self._ready_lock = None
        self._blocking = []
        self._blocking_storage = None
        super()._fork(session)

    @property
    def _storage(self) -> httpx.AsyncClient:
        """An ``httpx.AsyncClient`` based at the storage URL, with the same auth and retries
        (after ``open()``)."""
        if self._storage_http is None:
            self._http_request("HEAD", "", storage=True)  # raises the explanation
        storage: httpx.AsyncClient = self._storage_http
        return storage

    @functools.cached_property
    def ops(self) -> AsyncOps:
        """The client's operations and their driver (plumbing: see ``Ops``)."""
        return AsyncOps(self)

    async def _run(self, op: Op[T]) -> T:
        await self.open()
        return await arun(op, self._asend)

    async def _asend(self, step: Send) -> httpx.Response:
        http = self._storage_http if step.storage else self._http
        try:
            response: httpx.Response = await http.send(step.request)
        except httpx.HTTPError as exc:
            raise self._transport_error(step.request, exc) from None
        return response

    async def aclose(self) -> None:
        """Close the connections."""
        for http in (self._http, self._storage_http, self._identity_http):
            if http is not None:
                await http.aclose()
        for blocking in self._blocking:
            blocking.close()

    def _storage_blocking(self) -> httpx.Client:
        """A blocking client at the storage URL, sharing this client's auth and counters: bulk
        Cloud Files transfers run on worker threads (``AsyncFiles``), not on the event loop."""
        if self._blocking_storage is not None:
            return self._blocking_storage
        self._storage  # noqa: B018 - raises the explanation when there is no storage URL
        session = self._session
        assert session is not None and session.files_endpoint and self._auth is not None
        auth = self._auth
        if isinstance(auth, IdentityAuth) and auth._sync_client is None:
            # Re-logins from a worker thread need a blocking identity connection of their own.
            identity = httpx.Client(
                transport=RetryTransport(httpx.HTTPTransport(verify=_verify(self._verify)),
                                         **self._retry_options()),
                **self._identity_options())
            self._blocking.append(identity)
            auth._sync_client = identity
        storage = httpx.Client(
            transport=RetryTransport(BulkTransport(verify=_verify(self._verify)),
                                     **self._retry_options(renew=True)),
            **self._client_options(session.files_endpoint))
        self._blocking.append(storage)
        self._blocking_storage = storage
        return storage

    async def __aenter__(self) -> AsyncClient:
        return await self.open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- images -----------------------------------------------------------------------------

    def images(self, **filters: Any) -> AsyncIterator[Image]:
        """As ``Client.images``; ``async for image in client.images(...)``."""
        params = self._image_params(filters)

        async def generate() -> AsyncIterator[Image]:
            url: str | None = "images"
            query: dict[str, Any] | None = params
            seen: set[str] = set()
            while url is not None:
                items, url, _ = await self._run(self._op_page(url, query, "images", seen))
                query = None
                for item in items:
                    yield Image.from_json(item)

        return generate()

    async def get_image(self, image_id: str) -> Image:
        """As ``Client.get_image``."""
        return await self._run(self._op_get_image(validate_image_id(image_id)))

    # -- tasks ------------------------------------------------------------------------------

    async def get_task(self, task_id: str) -> Task:
        """As ``Client.get_task``."""
        task, _ = await self._run(self._op_get_task(validate_task_id(task_id)))
        return task

    def _lookup(self, attempt: _Attempt) -> Callable[[], Any]:
        async def lookup() -> AsyncTaskHandle | None:
            task = await self._run(self._op_look_up(attempt))
            return None if task is None else _ahandle(self, task)

        return lookup

    def iter_task_pages(self, *, type: str | None = None, status: str | TaskStatus | None = None,
                        sort_key: str = "created_at", sort_dir: str = "desc",
                        page_size: int = DEFAULT_TASKS_PAGE_SIZE
                        ) -> AsyncIterator[list[dict[str, Any]]]:
        """As ``Client.iter_task_pages``."""
        return self._task_pages(self._task_params(type, status, sort_key, sort_dir, page_size),
                                _as_listed)

    def _task_pages(self, params: dict[str, Any], shape: Callable[[list[Any]], T],
                    fast: Callable[[bytes], Any] | None = None) -> AsyncIterator[T]:
        """As ``Client._task_pages``."""
        async def generate() -> AsyncIterator[T]:
            listing = _Listing("tasks", params, "tasks", shape, fast=fast)
            while True:
                op = self._op_listing_page(listing)
                page = await self._run(op)
                if page is None:
                    return
                yield page

        return generate()

    def _shaped_task_pages(self, shape: Callable[[list[Any]], T],
                           fast: Callable[[bytes], Any] | None = None) -> AsyncIterator[T]:
        """As ``Client._shaped_task_pages``."""
        return self._task_pages(self._task_params(None, None, "created_at", "desc",
                                                  DEFAULT_TASKS_PAGE_SIZE), shape, fast)

    def tasks(self, *, type: str | None = None, status: str | TaskStatus | None = None,
              sort_key: str = "created_at", sort_dir: str = "desc",
              page_size: int = DEFAULT_TASKS_PAGE_SIZE) -> AsyncIterator[Task]:
        """As ``Client.tasks``."""
        pages = self.iter_task_pages(type=type, status=status, sort_key=sort_key,
                                     sort_dir=sort_dir, page_size=page_size)

        async def generate() -> AsyncIterator[Task]:
            async for page in pages:
                parsed = [Task.from_json(item) for item in page]
                self._record(parsed)
                for task in parsed:
                    yield task

        return generate()

    # -- exports ----------------------------------------------------------------------------

    async def begin_export(self, image_id: str, container: str, *,
                           create_container: bool = False,
                           preflight: bool = True) -> AsyncExportTask:
        """As ``Client.begin_export``."""
        image_id, container = validate_export_args(image_id, container)
        task_input, what, check = self._export_task(image_id, container)
        earlier = await self._run(self._op_earlier("export", task_input, what, check))
        if earlier is not None:
            return AsyncExportTask(self, earlier)
        if preflight:
            await self._run(self._op_preflight(image_id, container,
                                               create_container=create_container))
        elif create_container:
            await self._run(self._op_put_container(container))
        return AsyncExportTask(self, await self._run(self._op_create_task(
            "export", task_input, what, live=preflight, check=check)))

    async def export(self, image_id: str, container: str, *, create_container: bool = False,
                     preflight: bool = True, timeout: Timeout = DEFAULT,
                     poll: PollPolicy | None = None, on_update: OnUpdate | None = None) -> Task:
        """As ``Client.export``."""
        limit = self._wait_timeout(timeout)
        handle = await self.begin_export(image_id, container, create_container=create_container,
                                         preflight=preflight)
        return await handle.wait(limit, poll=poll, on_update=on_update)

    async def resume(self, task_id: str) -> AsyncExportTask | AsyncImportTask:
        """As ``Client.resume``."""
        handle = await AsyncExportTask.resume(self, task_id)
        return _ahandle(self, handle.task) if handle.task is not None else handle

    # -- imports ----------------------------------------------------------------------------

    async def begin_import(self, location: str, *, name: str, format: str = "vhd",
                           preflight: bool = True) -> AsyncImportTask:
        """As ``Client.begin_import``."""
        container, obj, task_input = validate_import_args(location, name, format)
        what, check = describe_import(task_input)
        earlier = await self._run(self._op_earlier("import", task_input, what, check))
        if earlier is not None:
            return AsyncImportTask(self, earlier)
        if preflight:
            await self._run(op_import_preflight(self, container, obj, task_input))
        return AsyncImportTask(self, await self._run(self._op_create_task(
            "import", task_input, what, live=preflight, check=check)))

    async def import_(self, location: str, *, name: str, format: str = "vhd",
                      preflight: bool = True, timeout: Timeout = DEFAULT,
                      poll: PollPolicy | None = None,
                      on_update: OnUpdate | None = None) -> Task:
        """As ``Client.import_``."""
        limit = self._wait_timeout(timeout)
        handle = await self.begin_import(location, name=name, format=format,
                                         preflight=preflight)
        return await handle.wait(limit, poll=poll, on_update=on_update)

    async def wait_all(self, tasks: Iterable[TaskRef], *, timeout: Timeout = DEFAULT,
                       poll: PollPolicy | None = None,
                       on_progress: OnProgress | None = None) -> WaitAllResult:
        """As ``Client.wait_all``."""
        return await async_wait_all(self, tasks, timeout=timeout, poll=poll,
                                    on_progress=on_progress)

    # -- transfers (imgtools.transfer) -------------------------------------------------------

    async def transfer(self, image_id: str, *, to: str | AsyncClient, wait: bool = True,
                       name: str | None = None, properties: Sequence[str] | None = None,
                       cleanup: CleanupPolicy = DEFAULT_CLEANUP,
                       container: str = DEFAULT_TRANSFER_CONTAINER,
                       target_container: str | None = None,
                       listing_delay: float = DEFAULT_LISTING_DELAY,
                       workers: int = DEFAULT_COPY_WORKERS, store: TransferStore | None = None,
                       on_step: OnStep | None = None,
                       progress: Progress | None = None) -> AsyncTransfer:
        """As ``Client.transfer``, awaited."""
        handle = await abegin_transfer(self, image_id, to=to, name=name, properties=properties,
                                       cleanup=cleanup, container=container,
                                       target_container=target_container,
                                       listing_delay=listing_delay, workers=workers,
                                       store=store, on_step=on_step, progress=progress)
        if wait:
            await handle.run()
        return handle

    async def resume_transfer(self, transfer_id: str, *, to: str | AsyncClient | None = None,
                              wait: bool = True, listing_delay: float = DEFAULT_LISTING_DELAY,
                              workers: int = DEFAULT_COPY_WORKERS,
                              store: TransferStore | None = None,
                              on_step: OnStep | None = None,
                              progress: Progress | None = None) -> AsyncTransfer:
        """As ``Client.resume_transfer``, awaited."""
        handle = await aresume_transfer(self, transfer_id, to=to, listing_delay=listing_delay,
                                        workers=workers, store=store, on_step=on_step,
                                        progress=progress)
        if wait:
            await handle.run()
        return handle

    async def transfer_all(self, images: Iterable[str], *, to: str | AsyncClient,
                           name: str | None = None, properties: Sequence[str] | None = None,
                           cleanup: CleanupPolicy = DEFAULT_CLEANUP,
                           container: str = DEFAULT_TRANSFER_CONTAINER,
                           target_container: str | None = None,
                           listing_delay: float = DEFAULT_LISTING_DELAY,
                           workers: int = DEFAULT_COPY_WORKERS,
                           store: TransferStore | None = None, on_step: OnStep | None = None,
                           progress: Progress | None = None) -> list[AsyncTransfer]:
        """As ``Client.transfer_all``, awaited (the same operation)."""
        return await atransfer_all(self, images, to=to, name=name, properties=properties,
                                   cleanup=cleanup, container=container,
                                   target_container=target_container,
                                   listing_delay=listing_delay, workers=workers, store=store,
                                   on_step=on_step, progress=progress)

    # -- Cloud Files ------------------------------------------------------------------------

    @property
    def files(self) -> AsyncFiles:
        """As ``Client.files``, awaited (after ``open()``); transfers run on worker threads."""
        return AsyncFiles(Files(self._storage_blocking()))

    async def leftovers(self, *, protected: Iterable[str] = (),
                        containers: Iterable[str] | None = None) -> LeftoversReport:
        """As ``Client.leftovers``, awaited; the listing runs on a worker thread."""
        keep = check_protected(protected) | await self._in_use()
        return await asyncio.to_thread(find_leftovers, Files(self._storage_blocking()),
                                       protected=keep, containers=containers)

    async def delete_leftovers(self, report: LeftoversReport, *,
                               protected: Iterable[str] = ()) -> DeleteReport:
        """As ``Client.delete_leftovers``, awaited."""
        keep = check_protected(protected) | await self._in_use()
        return await asyncio.to_thread(delete_leftovers, Files(self._storage_blocking()),
                                       report, protected=keep)

    async def _in_use(self) -> set[str]:
        running = await self.ops.run(op_running_exports(self.ops))
        transfers = await asyncio.to_thread(running_transfer_locations,
                                            getattr(self.log, "path", None))
        return running | transfers

    async def verify_export(self, task: Task | AsyncExportTask | str, *,
                            progress: Progress | None = None) -> ExportReport:
        """As ``Client.verify_export``, awaited."""
        location, size = await self._run(self._op_export_of(task))
        return await self.files.verify_export(location, expected_bytes=size, progress=progress)

    async def download_export(self, task: Task | AsyncExportTask | str,
                              dest: str | os.PathLike[str], *, resume: bool = True,
                              progress: Progress | None = None,
                              workers: int = DEFAULT_DOWNLOAD_WORKERS,
                              fsync: bool = False, convert: str | None = None) -> DownloadResult:
        """As ``Client.download_export``, awaited; ``progress`` is a callback (called from a
        worker thread) or ``None``: no tqdm bar, a notebook draws its own widget."""
        check_convert(convert)
        location, size = await self._run(self._op_export_of(task))
        return await self.files.download_export(location, dest, expected_bytes=size,
                                                resume=resume, workers=workers,
                                                progress=progress, fsync=fsync,
                                                convert=convert)

    def image_file(self, image_id: str) -> AsyncIterator[bytes]:
        """As ``Client.image_file``: ``async for chunk in client.image_file(id)``."""
        image_id = validate_image_id(image_id)

        async def generate() -> AsyncIterator[bytes]:
            await self.open()
            request = self._http.build_request("GET", _path("images", image_id, "file"),
                                               extensions={READ_BODY_EXTENSION: False})
            try:
                response = await self._http.send(request, stream=True)
                try:
                    self._check(response)
                    async for chunk in response.aiter_bytes(DEFAULT_DOWNLOAD_CHUNK):
                        yield chunk
                finally:
                    await response.aclose()
            except httpx.HTTPError as exc:
                raise self._transport_error(request, exc) from None

        return generate()

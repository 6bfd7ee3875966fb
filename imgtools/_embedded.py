"""The bridge between the client and the embedded emulator: the one module that uses both.

The client modules never import the emulator and the emulator never imports the client (the
import-linter contracts in ``pyproject.toml`` check it). Whatever needs the two together is
here, decided once:

- ``connect`` / ``connect_async``: with ``emulator=True`` (or ``IMGTOOLS_EMULATOR=1``) and no
  credentials set, the emulator started in the background (once per process) and its demo user;
- the demo user: the first of the emulator's own users (``imgtools.emulator.DEFAULT_USERS``);
- where tasks seen through an emulator are recorded: a log beside the emulator's data
  (``emulator_log_path``), never the log that real-service tasks use, unless ``log=`` or
  ``IMGTOOLS_LOG`` names one;
- the rule "poll fast against a service on this machine" (``poll_policy``);
- the environment that makes a notebook kernel log in to an emulator (``emulator_environ``),
  and the emulator's command line (``run_emulator``).

The emulator itself loads only when one is started, so ``import imgtools`` stays light.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from imgtools._auth import is_loopback, resolve_credentials
from imgtools._client import AsyncClient, Client, TaskRecorder
from imgtools._config import DEFAULT_RETRIES, DEFAULT_TIMEOUT, DEFAULT_WAIT_TIMEOUT
from imgtools._exceptions import ConfigurationError
from imgtools._polling import PollPolicy
from imgtools._tasklog import LOG_ENV, TaskLog

if TYPE_CHECKING:
    from imgtools.emulator import EmulatorHandle, User

__all__ = [
    "CREDENTIAL_VARIABLES",
    "EMULATOR_ENV",
    "EMULATOR_LOG_NAME",
    "background_emulator",
    "connect",
    "connect_async",
    "connect_to",
    "demo_user",
    "emulator_environ",
    "emulator_log_path",
    "emulator_wanted",
    "is_local",
    "poll_policy",
    "run_emulator",
    "start_local",
]

logger = logging.getLogger("imgtools")

#: ``IMGTOOLS_EMULATOR=1`` asks for the emulator when no credentials are set.
EMULATOR_ENV = "IMGTOOLS_EMULATOR"
#: The audit log of tasks seen through an emulator, inside that emulator's data dir: it lives
#: and goes with the emulator's own state.
EMULATOR_LOG_NAME = "imgtools-tasks.sqlite"
#: Every variable the client reads credentials from; cleared when the emulator stands in, so a
#: half-remembered real token can never mix with the emulator's login.
CREDENTIAL_VARIABLES = ("API_ENDPOINT", "AUTH_TOKEN", "FILES_ENDPOINT", "RAX_USERNAME",
                        "RAX_API_KEY", "RAX_REGION", "IMGTOOLS_USERNAME", "IMGTOOLS_API_KEY",
                        "OS_USERNAME", "OS_PASSWORD", "OS_AUTH_URL", "OS_REGION_NAME",
                        "IMGTOOLS_IDENTITY_URL", "IMGTOOLS_TENANT_ID", "OS_TENANT_ID",
                        "OS_PROJECT_ID")
_CREDENTIAL_OPTIONS = ("endpoint", "token", "files_endpoint", "username", "api_key", "password",
                       "region", "identity_url", "tenant_id")


# -- decided once -------------------------------------------------------------------------------


def demo_user() -> User:
    """The emulator's demo user: the first of its default users."""
    from imgtools.emulator import DEFAULT_USERS

    return DEFAULT_USERS[0]


def emulator_wanted(emulator: bool | None, environ: Mapping[str, str]) -> bool:
    """``emulator`` if given, else whether ``IMGTOOLS_EMULATOR`` says yes."""
    if emulator is not None:
        return emulator
    return environ.get(EMULATOR_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def is_local(target: object) -> bool:
    """True when ``target`` (a client, or a service URL) is on this machine (an emulator)."""
    endpoint = target if isinstance(target, str) else getattr(target, "endpoint", None)
    if not endpoint:
        return False
    return is_loopback(httpx.URL(endpoint).host)


def poll_policy(target: object) -> PollPolicy | None:
    """The one "poll fast on loopback" rule: ``PollPolicy.fast()`` for a service on this
    machine (``target``: a client or a URL), else ``None`` (the client's own policy, which
    keeps to the provider's 30 s ceiling)."""
    return PollPolicy.fast() if is_local(target) else None


def emulator_log_path(data_dir: str | os.PathLike[str]) -> Path:
    """Where tasks seen through the emulator over ``data_dir`` are recorded."""
    return Path(data_dir) / EMULATOR_LOG_NAME


def _emulator_log(log: TaskRecorder | bool | None, data_dir: Path,
                  environ: Mapping[str, str]) -> TaskRecorder | bool | None:
    # ``True`` asks for "the default log"; seen through an emulator that is the one beside its
    # data. An explicit ``log=`` or ``IMGTOOLS_LOG`` still wins.
    if log is True and not environ.get(LOG_ENV):
        return TaskLog(emulator_log_path(data_dir))
    return log


# -- starting one -------------------------------------------------------------------------------

_EMULATOR_LOCK = threading.Lock()
_EMULATOR: EmulatorHandle | None = None


def start_local(*, data_dir: str | os.PathLike[str] | None = None, subprocess: bool = True,
                **settings: Any) -> EmulatorHandle:
    """Start an emulator on a free loopback port (``settings``: ``EmulatorConfig`` fields);
    over a fresh temporary data dir, removed when it stops, unless ``data_dir`` is given."""
    from imgtools.emulator import EmulatorConfig, start_emulator

    return start_emulator(config=EmulatorConfig(**settings),
                          data_dir=None if data_dir is None else Path(data_dir),
                          subprocess=subprocess)


def background_emulator() -> EmulatorHandle:
    """The emulator this process started (once), closed at interpreter exit."""
    global _EMULATOR
    with _EMULATOR_LOCK:
        if _EMULATOR is None:
            handle = start_local()
            # close() stops it and removes its temporary data dir (and so its log).
            atexit.register(handle.close)
            logger.info("started the local emulator at %s", handle.url)
            _EMULATOR = handle
        return _EMULATOR


def run_emulator(argv: Sequence[str]) -> int:
    """``imgtools emulator ...``: the emulator's own command line, in the foreground."""
    from imgtools.emulator import main

    return main(list(argv))


def emulator_environ(handle: EmulatorHandle,
                     base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default ``os.environ``) with credentials that log in to ``handle`` as its demo
    user, no other credentials, and ``IMGTOOLS_LOG`` beside its data unless ``base`` names a
    log: what a notebook kernel started against the emulator gets."""
    source = os.environ if base is None else base
    env = {k: v for k, v in source.items() if k not in CREDENTIAL_VARIABLES and k != EMULATOR_ENV}
    user = handle.config.users[0]
    env.update({"RAX_USERNAME": user.username, "RAX_API_KEY": user.api_key,
                "IMGTOOLS_IDENTITY_URL": handle.identity_url})
    if not env.get(LOG_ENV):
        env[LOG_ENV] = str(emulator_log_path(handle.data_dir))
    return env


# -- connecting ---------------------------------------------------------------------------------


def _no_credentials(options: Mapping[str, Any]) -> bool:
    try:
        found = resolve_credentials(**{k: options[k] for k in _CREDENTIAL_OPTIONS},
                                    environ=os.environ)
    except ConfigurationError:
        return False  # half-set credentials: let the client say what is missing
    return found is None


def _plan(options: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The client's options (``connect``'s arguments less ``emulator``), and whether the
    background emulator stands in (asked for, and no credentials anywhere)."""
    emulator = options.pop("emulator")
    return options, emulator_wanted(emulator, os.environ) and _no_credentials(options)


def _on(handle: EmulatorHandle, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` logged in to ``handle`` as its demo user, polling and recording as the
    bridge decides for an emulator."""
    user = handle.config.users[0]
    return {**options, "username": user.username, "api_key": user.api_key,
            "identity_url": handle.identity_url,
            "poll": options.get("poll") or poll_policy(handle.url),
            "log": _emulator_log(options.get("log", True), handle.data_dir, os.environ)}


def connect(*, endpoint: str | None = None, token: str | None = None,
            files_endpoint: str | None = None, username: str | None = None,
            api_key: str | None = None, password: str | None = None, region: str | None = None,
            identity_url: str | None = None, tenant_id: str | None = None,
            emulator: bool | None = None, timeout: float = DEFAULT_TIMEOUT,
            retries: int = DEFAULT_RETRIES, poll: PollPolicy | None = None,
            wait_timeout: float | None = DEFAULT_WAIT_TIMEOUT,
            log: TaskRecorder | bool | None = True, verify: bool = True,
            transport: httpx.BaseTransport | None = None,
            servicenet: bool | None = None) -> Client:
    """A ``Client`` from the first credentials found: arguments (``endpoint`` + ``token``, or
    ``username`` + ``api_key``/``password`` with ``region`` and ``identity_url``), then
    ``API_ENDPOINT`` + ``AUTH_TOKEN`` (+ ``FILES_ENDPOINT``), then ``RAX_USERNAME`` +
    ``RAX_API_KEY`` (+ ``RAX_REGION``).

    ``region``: the region to work in (default: the user's default region); one login serves
    every region (``client.in_region("IAD")``). ``servicenet=True`` (or ``RAX_SERVICENET=1``)
    reaches Cloud Files over ServiceNet (the catalog's ``internalURL``).

    With none, ``emulator=True`` (or ``IMGTOOLS_EMULATOR=1``) starts the local emulator in the
    background (stopped at exit), logs in as its demo user, polls fast, and records into a log
    beside the emulator's data (not your default log); with credentials set, they are used, so
    the same notebook runs against the real service. Otherwise ``ConfigurationError`` says how
    to set credentials.
    """
    options, embedded = _plan(dict(locals()))
    if embedded:
        options = _on(background_emulator(), options)
    return Client(**options)


async def connect_async(*, endpoint: str | None = None, token: str | None = None,
                        files_endpoint: str | None = None, username: str | None = None,
                        api_key: str | None = None, password: str | None = None,
                        region: str | None = None, identity_url: str | None = None,
                        tenant_id: str | None = None, emulator: bool | None = None,
                        timeout: float = DEFAULT_TIMEOUT, retries: int = DEFAULT_RETRIES,
                        poll: PollPolicy | None = None,
                        wait_timeout: float | None = DEFAULT_WAIT_TIMEOUT,
                        log: TaskRecorder | bool | None = True, verify: bool = True,
                        transport: httpx.AsyncBaseTransport | None = None,
                        servicenet: bool | None = None) -> AsyncClient:
    """As ``connect``, for an ``AsyncClient`` (logged in and ready when it returns)."""
    options, embedded = _plan(dict(locals()))
    if embedded:
        # Starting it blocks for a moment: keep the event loop free meanwhile.
        options = _on(await asyncio.to_thread(background_emulator), options)
    return await AsyncClient(**options).open()


def connect_to(handle: EmulatorHandle, **options: Any) -> Client:
    """A ``Client`` logged in to the emulator ``handle`` as its demo user, polling fast and
    recording beside its data (``options``: as ``connect``'s, e.g. ``log=``)."""
    return Client(**_on(handle, options))

"""Credentials: where they come from, identity v2.0 and the catalog, re-authentication on 401,
and secrets kept out of reprs, logs, exceptions and URLs."""

from __future__ import annotations

import asyncio
import logging
import pickle
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import imgtools
from imgtools import AuthError, ConfigurationError, NotFound, TaskStatus
from imgtools._auth import Secret, normalise_image_endpoint, resolve_credentials
from imgtools._config import DEFAULT_IDENTITY_URL
from imgtools.emulator import EmulatorHandle, start_emulator
from tests.client_support import (
    FAST,
    MISSING,
    SMALL,
    WEB,
    AsyncRecorder,
    Recorder,
    clear_faults,
    fresh_container,
    make_client,
)


@pytest.fixture(scope="module")
def emu(emulator_in_subprocess: EmulatorHandle) -> EmulatorHandle:
    """This module's emulator: the client tests' one, in a subprocess (tests/conftest.py)."""
    return emulator_in_subprocess


# -- where credentials come from --------------------------------------------------------------


def resolve(env: dict[str, str] | None = None, **args: Any) -> Any:
    return resolve_credentials(environ=env or {}, **args)


def test_no_credentials_at_all() -> None:
    assert resolve() is None


def test_connect_without_credentials_explains_both_ways_and_the_emulator(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IMGTOOLS_EMULATOR", raising=False)
    with pytest.raises(ConfigurationError) as info:
        imgtools.connect()
    text = str(info.value)
    for needle in ("API_ENDPOINT", "AUTH_TOKEN", "FILES_ENDPOINT", "RAX_USERNAME", "RAX_API_KEY",
                   "emulator=True", "python -m imgtools.emulator"):
        assert needle in text


def test_arguments_beat_the_environment() -> None:
    env = {"API_ENDPOINT": "https://env.example/v2", "AUTH_TOKEN": "env-token",
           "RAX_USERNAME": "envuser", "RAX_API_KEY": "envkey"}
    creds = resolve(env, endpoint="https://arg.example", token="arg-token")
    assert creds.kind == "token" and creds.source == "arguments"
    assert creds.endpoint == "https://arg.example/v2" and creds.token.reveal() == "arg-token"
    creds = resolve(env, username="u", api_key="k", region="dfw")
    assert creds.kind == "identity" and creds.username == "u" and creds.region == "dfw"


def test_api_endpoint_and_token_from_the_environment() -> None:
    env = {"API_ENDPOINT": "https://dfw.images.api.rackspacecloud.com/v2/",
           "AUTH_TOKEN": "tok", "FILES_ENDPOINT": "https://storage.example/v1/MossoCloudFS_x",
           "RAX_USERNAME": "ignored", "RAX_API_KEY": "ignored"}
    creds = resolve(env)
    assert creds.kind == "token" and "API_ENDPOINT" in creds.source
    assert creds.endpoint == "https://dfw.images.api.rackspacecloud.com/v2"
    assert creds.files_endpoint == "https://storage.example/v1/MossoCloudFS_x"


@pytest.mark.parametrize("given", ["https://h.example", "https://h.example/",
                                   "https://h.example/v2", "https://h.example/v2/"])
def test_root_and_v2_endpoints_are_the_same(given: str) -> None:
    assert normalise_image_endpoint(given) == "https://h.example/v2"


@pytest.mark.parametrize(("env", "source"), [
    ({"RAX_USERNAME": "u", "RAX_API_KEY": "k"}, "RAX_USERNAME"),
    ({"IMGTOOLS_USERNAME": "u", "IMGTOOLS_API_KEY": "k"}, "IMGTOOLS_USERNAME"),
    ({"OS_USERNAME": "u", "OS_PASSWORD": "p"}, "OS_USERNAME"),
])
def test_username_and_key_from_the_environment(env: dict[str, str], source: str) -> None:
    env = {**env, "RAX_REGION": "LON", "IMGTOOLS_IDENTITY_URL": "https://id.example/v2.0"}
    creds = resolve(env)
    assert creds.kind == "identity" and source in creds.source
    assert creds.region == "LON" and creds.identity_url == "https://id.example/v2.0"
    assert (creds.password is not None) == (source == "OS_USERNAME")


def test_rackspace_identity_by_default() -> None:
    creds = resolve({"RAX_USERNAME": "u", "RAX_API_KEY": "k"})
    assert creds.identity_url == DEFAULT_IDENTITY_URL == \
        "https://identity.api.rackspacecloud.com/v2.0"


@pytest.mark.parametrize(("env", "args", "missing"), [
    ({}, {"endpoint": "https://h.example"}, "token"),
    ({}, {"token": "t"}, "endpoint"),
    ({}, {"username": "u"}, "API key"),
    ({"API_ENDPOINT": "https://h.example"}, {}, "AUTH_TOKEN"),
    ({"AUTH_TOKEN": "t"}, {}, "API_ENDPOINT"),
    ({"RAX_USERNAME": "u"}, {}, "RAX_API_KEY"),
    ({"RAX_API_KEY": "secret-key"}, {}, "RAX_USERNAME"),
])
def test_half_given_credentials_are_an_error(env: dict[str, str], args: dict[str, str],
                                             missing: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve(env, **args)
    assert missing in str(info.value)
    assert "secret-key" not in str(info.value)


@pytest.mark.parametrize(("url", "problem"), [
    ("https://user:hunter2@h.example", "must not carry"),
    ("http://h.example", "unencrypted"),
    ("ftp://h.example", "http(s)"),
    ("https://h.example/v2?x=1", "query"),
    ("not a url", "http(s)"),
])
def test_bad_endpoints(url: str, problem: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve(endpoint=url, token="t")
    assert problem in str(info.value)
    assert "hunter2" not in str(info.value)


def test_plain_http_is_for_loopback_only() -> None:
    for host in ("127.0.0.1", "localhost", "[::1]", "127.5.6.7"):
        assert resolve(endpoint=f"http://{host}:8777", token="t").endpoint.startswith("http://")


def test_tls_verification_can_be_off_only_for_loopback() -> None:
    imgtools.connect(endpoint="http://127.0.0.1:1", token="t", verify=False, log=False).close()
    with pytest.raises(ConfigurationError) as info:
        imgtools.connect(endpoint="https://images.example", token="t", verify=False, log=False)
    assert "loopback" in str(info.value)


# -- identity v2.0 against the emulator -------------------------------------------------------


def test_login_picks_the_default_region_from_the_catalog(emu: EmulatorHandle) -> None:
    with make_client(emu) as c:
        assert c.endpoint == emu.image_endpoint
        assert c.storage_url == emu.storage_url("100001")
        assert c.tenant_id == "100001"


def test_region_and_password_login(emu: EmulatorHandle) -> None:
    with make_client(emu, api_key=None, password="demo-key", region="dfw") as c:
        # Each region has its own images: DFW's web image, not the default region's.
        dfw_web = emu.image_id("web", region="DFW")
        assert c.endpoint == emu.image_endpoint_for("DFW") and dfw_web != WEB
        assert c.get_image(dfw_web).id == dfw_web
    with pytest.raises(ConfigurationError) as info:
        make_client(emu, region="LON")
    assert "LON" in str(info.value) and "ORD" in str(info.value)


def test_bad_api_key_is_refused_without_echoing_it(emu: EmulatorHandle) -> None:
    with pytest.raises(AuthError) as info:
        make_client(emu, api_key="wrong-key-9f8e7d")
    assert "'demo'" in str(info.value)
    assert "wrong-key-9f8e7d" not in str(info.value) + repr(info.value)


def test_expired_token_is_renewed_once_and_the_request_retried(emu: EmulatorHandle) -> None:
    with make_client(emu) as c:
        assert c.get_image(WEB).id == WEB
        emu.advance_clock(25 * 3600)  # every token issued so far is now expired
        assert c.get_image(WEB).id == WEB
        assert c.stats.reauths == 1


def test_concurrent_requests_meeting_an_expired_token_log_in_once(emu: EmulatorHandle) -> None:
    with make_client(emu) as c:
        c.get_image(WEB)
        emu.advance_clock(25 * 3600)
        errors: list[BaseException] = []
        barrier = threading.Barrier(8)

        def work() -> None:
            try:
                barrier.wait()
                c.get_image(WEB)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert c.stats.reauths == 1


def _async_client(emu: EmulatorHandle, transport: AsyncRecorder) -> imgtools.AsyncClient:
    return imgtools.AsyncClient(username="demo", api_key="demo-key",
                                identity_url=emu.identity_url, log=False, transport=transport)


def _logins(recorder: AsyncRecorder) -> int:
    return sum(r.url.path == "/v2.0/tokens" for r in recorder.requests)


@pytest.mark.anyio
async def test_concurrent_async_requests_meeting_an_expired_token_log_in_once(
        emu: EmulatorHandle) -> None:
    recorder = AsyncRecorder()
    async with _async_client(emu, recorder) as c:
        await c.get_image(WEB)
        emu.advance_clock(25 * 3600)
        images = await asyncio.gather(*(c.get_image(WEB) for _ in range(8)))
        assert [image.id for image in images] == [WEB] * 8
        assert c.stats.reauths == 1
    assert _logins(recorder) == 2


@pytest.mark.anyio
async def test_concurrent_opens_of_an_async_client_log_in_once(emu: EmulatorHandle) -> None:
    recorder = AsyncRecorder()
    c = _async_client(emu, recorder)
    try:
        opened = await asyncio.gather(*(c.open() for _ in range(5)))
        assert all(o is c for o in opened) and c.endpoint is not None
        assert _logins(recorder) == 1
    finally:
        await c.aclose()


def test_a_bare_token_is_not_renewed(emu: EmulatorHandle) -> None:
    token = emu.token("demo")
    with imgtools.connect(endpoint=emu.url, token=token, log=False) as c:
        assert c.get_image(WEB).id == WEB
        emu.advance_clock(25 * 3600)
        with pytest.raises(AuthError) as info:
            c.get_image(WEB)
        assert info.value.status_code == 401
        assert "the token has expired" in str(info.value) and "get a new one" in str(info.value)
        assert token not in str(info.value)
        assert not info.value.renewable
        assert c.stats.reauths == 0
        # A wait ends with that error too: nothing can renew a bare token.
        with pytest.raises(AuthError, match="the token has expired"):
            c.wait_all([MISSING])


@pytest.fixture(scope="module")
def short_token_emu() -> Iterator[EmulatorHandle]:
    """Tokens live one second: shorter than the retries of one request."""
    with start_emulator(config=FAST.replace(token_ttl=1.0), subprocess=True) as handle:
        yield handle


def test_a_token_expiring_during_retries_never_ends_a_request_or_a_wait(
        short_token_emu: EmulatorHandle) -> None:
    emu = short_token_emu
    with make_client(emu, retries=10) as c:
        task = c.export(SMALL, fresh_container(), create_container=True)
        try:
            # Seeded: five 503s, a pass, five 503s, a pass. The backoff of five retries
            # (several seconds) outlasts every token, so each pass needs a token renewed
            # during the retries of the same request.
            emu.set_faults(paths="/v2/tasks/", error_503=0.5, seed=1239)
            assert c.get_task(task.id).status is TaskStatus.SUCCESS
            emu.set_faults(paths="/v2/tasks/", error_503=0.5, seed=1239)
            result = c.wait_all([task.id])
        finally:
            clear_faults(emu)
        assert [t.id for t in result.succeeded] == [task.id] and result.ok
        assert c.stats.reauths >= 1
        assert c.stats.retry_reasons["503"] >= 10


def test_token_and_files_endpoint_from_the_environment(emu: EmulatorHandle,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_ENDPOINT", emu.image_endpoint)
    monkeypatch.setenv("AUTH_TOKEN", emu.token("demo"))
    monkeypatch.setenv("FILES_ENDPOINT", emu.storage_url("100001"))
    monkeypatch.setenv("IMGTOOLS_TENANT_ID", "100001")
    with imgtools.connect(log=False) as c:
        assert c.storage_url == emu.storage_url("100001")
        task = c.begin_export(WEB, fresh_container(), create_container=True)
        assert task.wait(poll=imgtools.PollPolicy.fast()).image_id == WEB


def test_without_a_storage_url_the_preflight_says_what_to_set(emu: EmulatorHandle) -> None:
    with imgtools.connect(endpoint=emu.url, token=emu.token("demo"), log=False) as c:
        assert c.storage_url is None
        with pytest.raises(ConfigurationError) as info:
            c.begin_export(WEB, "exports")
        assert "FILES_ENDPOINT" in str(info.value)


def test_emulator_true_with_credentials_uses_the_credentials(emu: EmulatorHandle,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    monkeypatch.setenv("API_ENDPOINT", emu.url)
    monkeypatch.setenv("AUTH_TOKEN", emu.token("demo"))
    import imgtools._embedded as client_module

    with imgtools.connect(emulator=True, log=False) as c:
        assert c.endpoint == emu.image_endpoint
    assert client_module._EMULATOR is None  # nothing started


# -- secrets ----------------------------------------------------------------------------------


def test_secret_is_masked() -> None:
    s = Secret("hunter2")
    assert "hunter2" not in repr(s) + str(s) + f"{s}" + f"{s!r}"
    assert s.reveal() == "hunter2"
    with pytest.raises(TypeError):
        pickle.dumps(s)
    creds = resolve(username="u", api_key="hunter2")
    assert "hunter2" not in repr(creds)


def test_no_secret_in_reprs_logs_errors_or_urls(emu: EmulatorHandle,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "imgtools", ""):
        logging.getLogger(name).setLevel(logging.DEBUG)
    recorder = Recorder()
    texts: list[str] = []
    with make_client(emu, transport=recorder, api_key="demo-key") as c:
        texts += [repr(c), str(c), repr(c._auth), repr(c.stats)]
        c.get_image(WEB)
        list(c.tasks(page_size=5))
        for call in (lambda: c.get_image(MISSING), lambda: c.get_task(MISSING)):
            with pytest.raises(NotFound) as info:
                call()
            texts += [str(info.value), repr(info.value)]
        emu.advance_clock(25 * 3600)
        c.get_image(WEB)  # re-authenticates
        assert c.stats.reauths == 1
        tokens = [r.headers["X-Auth-Token"] for r in recorder.requests
                  if "X-Auth-Token" in r.headers]
    assert len(set(tokens)) == 2
    secrets = ["demo-key", *tokens]
    texts += [str(r.url) for r in recorder.requests]
    texts.append(caplog.text)
    assert "GET" in caplog.text  # the logs were captured at all
    for text in texts:
        for secret in secrets:
            assert secret not in text


def test_a_server_echoing_the_token_is_redacted() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        token = request.headers["X-Auth-Token"]
        return httpx.Response(400, json={"message": f"bad token {token} for you"})

    c = imgtools.connect(endpoint="http://127.0.0.1:9", token="s3cr3t-t0ken", log=False,
                         transport=httpx.MockTransport(handler))
    with c, pytest.raises(imgtools.APIError) as info:
        c.get_task(MISSING)
    assert "s3cr3t-t0ken" not in str(info.value) + info.value.message
    assert "********" in str(info.value)

"""Secrets: tokens, API keys and passwords never appear in reprs, exception messages, DEBUG
logs, DataFrames, CLI output or notebook outputs; TLS verification is on by default and can be
turned off only for loopback addresses.

One emulator with a user who logs in with a password and another with an API key, both with
unusual secrets that cannot appear by chance, and tokens that expire so re-authentication (a
second token) happens too.
"""

from __future__ import annotations

import io
import json
import logging
import re
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import imgtools
from imgtools import TaskLog, history
from imgtools.cli import main
from imgtools.emulator import DEFAULT_USERS, EmulatorConfig, EmulatorHandle, User, start_emulator
from imgtools.emulator.seed import image_id_for
from tests.client_support import MISSING, Recorder, fresh_container

KEY = "k3y-Q9v7x2LmZ8"  # the API-key user's key
PASSWORD = "pa55-W0rd-Hq4t"  # the password user's password
KEY_USER = User("keyuser", KEY, "100011")
PW_USER = User("pwuser", "pw-api-key-Rt6y", "100012", password=PASSWORD)
CONFIG = EmulatorConfig(users=(*DEFAULT_USERS, KEY_USER, PW_USER), image_size=64 * 1024,
                        segment_size=16 * 1024, export_speed=64 * 1024 * 1024,
                        pending_delay=0.1, tick=0.01)
NOTEBOOKS = Path(__file__).parents[2] / "notebooks"


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorHandle]:
    with start_emulator(config=CONFIG) as handle:
        yield handle


def _debug_logging(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("", "httpx", "httpcore", "imgtools", "imgtools.emulator", "urllib3"):
        logging.getLogger(name).setLevel(logging.DEBUG)


def _no_secret(texts: list[str], secrets: list[str]) -> None:
    for text in texts:
        for secret in secrets:
            assert secret not in text, (secret[:3] + "...", text[:200])


def _tokens(recorder: Recorder) -> list[str]:
    return sorted({r.headers["X-Auth-Token"] for r in recorder.requests
                   if "X-Auth-Token" in r.headers})


@pytest.mark.parametrize("login", ["api_key", "password"])
def test_no_secret_anywhere_in_a_session(emu: EmulatorHandle, login: str, tmp_path: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    """A whole session (export, wait, errors, a re-login, a frame of the log) with DEBUG logs."""
    _debug_logging(caplog)
    user = KEY_USER if login == "api_key" else PW_USER
    secret = KEY if login == "api_key" else PASSWORD
    creds = {"api_key": KEY} if login == "api_key" else {"password": PASSWORD}
    recorder = Recorder()
    log = TaskLog(tmp_path / "log.sqlite")
    texts: list[str] = []
    image = image_id_for(user.tenant_id, "small")
    with imgtools.connect(username=user.username, identity_url=emu.identity_url, log=log,
                          poll=imgtools.PollPolicy.fast(), transport=recorder,
                          **creds) as client:  # type: ignore[arg-type]
        handle = client.begin_export(image, fresh_container("sec"), create_container=True)
        final = handle.wait(timeout=30)
        texts += [repr(client), str(client), repr(client._creds), repr(client._auth),
                  repr(client._session), repr(handle), repr(final), repr(client.stats),
                  repr(client.stats.snapshot()), str(client.verify_export(final))]
        for call in (lambda: client.get_task(MISSING), lambda: client.get_image(MISSING),
                     lambda: client.files.head_container("no-such"),
                     lambda: client.begin_export(image, "no-such")):
            with pytest.raises(imgtools.ImgToolsError) as info:
                call()
            texts += [str(info.value), repr(info.value), str(info.value.args)]
        emu.advance_clock(CONFIG.token_ttl + 60)  # every token expires: a second login
        texts.append(repr(client.get_task(final.id)))
        assert client.stats.reauths >= 1
        frame = history.tasks_frame(client)
        texts += [frame.to_string(), frame.to_csv(), frame.to_json(date_format="iso"),
                  history.log_frame(log).to_csv(), history.events_frame(log).to_csv(),
                  history.merged(client, log).to_csv(),
                  *[t.to_csv() for t in history.summary(frame).tables.values()]]
        texts.append(history.style_tasks(frame).to_html())
        tokens = _tokens(recorder)
    assert len(tokens) >= 2  # the test saw the tokens it looks for
    texts += [str(r.url) for r in recorder.requests]
    texts += [caplog.text, log.path.read_bytes().decode("latin-1") if hasattr(log, "path")
              else ""]
    log.export(tmp_path / "log.jsonl")
    texts.append((tmp_path / "log.jsonl").read_text())
    assert "GET" in caplog.text  # DEBUG logs were captured at all
    _no_secret(texts, [secret, *tokens])


def test_no_secret_in_identity_errors_even_when_the_server_echoes_it(
        caplog: pytest.LogCaptureFixture) -> None:
    """An identity service that puts the API key or password into its error answer."""
    _debug_logging(caplog)

    def echo(request: httpx.Request) -> httpx.Response:
        body = request.content.decode()
        return httpx.Response(500, json={"identityFault": {"message": f"cannot parse {body}",
                                                           "code": 500}})

    for creds in ({"api_key": KEY}, {"password": PASSWORD}):
        with pytest.raises(imgtools.ImgToolsError) as info:
            imgtools.connect(username="someone", identity_url="http://127.0.0.1:9/v2.0",
                             log=False, retries=0, transport=httpx.MockTransport(echo),
                             **creds)  # type: ignore[arg-type]
        _no_secret([str(info.value), repr(info.value), caplog.text], [KEY, PASSWORD])


def test_no_secret_in_configuration_errors() -> None:
    for url in (f"https://user:{PASSWORD}@identity.example.com/v2.0",
                f"http://user:{PASSWORD}@127.0.0.1:9/v2"):
        for kwargs in ({"identity_url": url, "username": "u", "api_key": KEY},
                       {"endpoint": url, "token": KEY}):
            with pytest.raises(imgtools.ConfigurationError) as info:
                imgtools.connect(log=False, **kwargs)  # type: ignore[arg-type]
            _no_secret([str(info.value), repr(info.value)], [KEY, PASSWORD])


def test_no_secret_in_transport_errors(caplog: pytest.LogCaptureFixture) -> None:
    _debug_logging(caplog)
    client = imgtools.connect(endpoint="http://127.0.0.1:9/v2", token=KEY, log=False,
                              retries=1)  # nothing listens on port 9
    with client, pytest.raises(imgtools.TransportError) as info:
        client.get_task(MISSING)
    _no_secret([str(info.value), repr(info.value), caplog.text], [KEY])


def _cli(*argv: str, capsys: pytest.CaptureFixture[str]) -> str:
    out = io.StringIO()
    main(list(argv), out=out)
    captured = capsys.readouterr()
    return out.getvalue() + captured.out + captured.err


def test_no_secret_in_cli_output(emu: EmulatorHandle, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch,
                                 caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    _debug_logging(caplog)
    monkeypatch.setenv("RAX_USERNAME", KEY_USER.username)
    monkeypatch.setenv("RAX_API_KEY", KEY)
    monkeypatch.setenv("IMGTOOLS_IDENTITY_URL", emu.identity_url)
    image = image_id_for(KEY_USER.tenant_id, "small")
    texts = [_cli("export", image, "--container", fresh_container("cli"), "--create-container",
                  "--wait", "--format", "json", capsys=capsys)]
    task_id = json.loads(texts[0])["id"]
    for argv in (("task", task_id), ("tasks",), ("tasks", "--format", "json"),
                 ("tasks", "--format", "csv"), ("tasks", "--from", "all"), ("audit",),
                 ("verify", task_id), ("download", task_id, str(tmp_path / "x.vhd")),
                 ("task", MISSING), ("wait", MISSING), ("export", image, "--container", "a/b")):
        texts.append(_cli(*argv, capsys=capsys))
    monkeypatch.setenv("RAX_API_KEY", KEY + "-wrong")
    texts.append(_cli("tasks", capsys=capsys))
    monkeypatch.delenv("RAX_USERNAME")
    monkeypatch.delenv("RAX_API_KEY")
    token = emu.token(KEY_USER.username)
    monkeypatch.setenv("API_ENDPOINT", emu.image_endpoint)
    monkeypatch.setenv("AUTH_TOKEN", token)
    texts += [_cli("tasks", capsys=capsys), _cli("task", MISSING, capsys=capsys)]
    emu.advance_clock(CONFIG.token_ttl + 60)  # the bare token is now refused
    texts.append(_cli("tasks", capsys=capsys))
    texts.append(caplog.text)
    assert any(task_id in t for t in texts)  # the commands did print things
    _no_secret(texts, [KEY, KEY + "-wrong", token])


# Emulator tokens are 32 hex digits; real ones are longer hex or base64 strings.
_TOKENISH = re.compile(r"\b[0-9a-f]{32}\b")


def test_no_secret_in_committed_notebook_outputs() -> None:
    notebooks = sorted(NOTEBOOKS.glob("*.ipynb"))
    assert notebooks
    for path in notebooks:
        cells = json.loads(path.read_text())["cells"]
        outputs = json.dumps([c.get("outputs", []) for c in cells])
        for secret in (KEY, PASSWORD, "other-key"):
            assert secret not in outputs, path.name
        assert not _TOKENISH.findall(outputs), path.name  # no token printed into an output
        assert "X-Auth-Token" not in outputs, path.name


def _ssl_context_of(client: imgtools.Client) -> Any:
    transport: Any = client._http._transport  # RetryTransport -> HTTPTransport -> pool
    return transport._transport._pool._ssl_context


def test_tls_verification_is_on_by_default() -> None:
    client = imgtools.connect(endpoint="https://images.example.com/v2", token=KEY, log=False)
    with client:
        context = _ssl_context_of(client)
        assert isinstance(context, ssl.SSLContext)
        assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname


def test_turning_verification_off_is_for_loopback_only(emu: EmulatorHandle) -> None:
    for host in ("images.example.com", "10.0.0.5", "192.168.1.20"):
        with pytest.raises(imgtools.ConfigurationError, match="loopback"):
            imgtools.connect(endpoint=f"https://{host}/v2", token=KEY, log=False, verify=False)
    with pytest.raises(imgtools.ConfigurationError):  # plain http is refused off loopback too
        imgtools.connect(endpoint="http://images.example.com/v2", token=KEY, log=False)
    # Explicit, and on loopback: allowed.
    with imgtools.connect(username="demo", api_key="demo-key", identity_url=emu.identity_url,
                          log=False, verify=False) as client:
        assert client.get_image(image_id_for("100001", "web")).id
        assert _ssl_context_of(client) is None or \
            _ssl_context_of(client).verify_mode is ssl.CERT_NONE

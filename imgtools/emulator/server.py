"""Start and control an emulator: ``start_emulator`` returns an ``EmulatorHandle``.

Two modes: a subprocess (``python -m imgtools.emulator``, killable with SIGKILL, the
default) or a uvicorn server in a thread of this process (cheap, for notebooks and tests
that need no crash). Either way the listening socket is bound here first, so the port is
known at once and ``restart`` comes back on the same port and data dir.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess as sp
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from imgtools.emulator.config import EmulatorConfig
from imgtools.emulator.seed import seeded_image_bytes

__all__ = ["EmulatorHandle", "start_emulator"]

#: Seconds to wait for a started emulator to answer (more when it has much to seed).
READY_TIMEOUT = 30.0
#: The slowest seeding of image bytes allowed for, in bytes per second (an eighth of this
#: machine's speed: a loaded CI machine must not fail a start that is merely slow).
SEEDING_BYTES_PER_S = 20 * 1024 * 1024


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted sockets inherit this on Linux; without it a response written as headers then
    # body can wait 40 ms for the client's delayed ACK.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def _uvicorn_server(app: Any) -> Any:
    import uvicorn

    from imgtools.emulator.sendfile import SendfileProtocol

    # No access log: request lines would be noise, and the server must never log a token.
    # SendfileProtocol: object bodies go out through sendfile(2), not through Python; that is
    # asyncio's loop.sendfile, so the loop is asyncio's even where uvloop is installed.
    config = uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False,
                            timeout_keep_alive=30, server_header=False, http=SendfileProtocol,
                            loop="asyncio")
    return uvicorn.Server(config)


class EmulatorHandle:
    """A running emulator; use as a context manager, or call ``close``."""

    def __init__(self, config: EmulatorConfig, data_dir: Path, host: str, port: int,
                 use_subprocess: bool, owns_data_dir: bool) -> None:
        self.config = config
        self.data_dir = data_dir
        self.host = host
        self.port = port
        self.subprocess = use_subprocess
        self._owns_data_dir = owns_data_dir
        self._process: sp.Popen[bytes] | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._log: Any = None
        #: Ports of the regions after the default one (which is ``port``); kept on restart.
        self.region_ports: dict[str, int] = {}

    # -- addresses --------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def identity_url(self) -> str:
        return f"{self.url}/v2.0"

    @property
    def image_endpoint(self) -> str:
        """The default region's Cloud Images endpoint (the root ``/v2``)."""
        return f"{self.url}/v2"

    @property
    def regions(self) -> tuple[str, ...]:
        """The regions served; the first is the default one."""
        return self.config.regions

    @property
    def default_region(self) -> str:
        return self.config.regions[0]

    def _region(self, region: str | None) -> str:
        if region is None:
            return self.default_region
        for name in self.config.regions:
            if name.upper() == region.upper():
                return name
        raise KeyError(f"the emulator serves no region {region!r} "
                       f"(it serves {', '.join(self.config.regions)})")

    def region_url(self, region: str | None = None) -> str:
        """``http://host:port`` of ``region`` (``None``: the default region, ``url``); each
        region listens on its own port."""
        name = self._region(region)
        port = self.port if name == self.default_region else self.region_ports.get(name)
        if not port:
            raise RuntimeError(f"region {name} has no port yet: start the emulator first")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{port}"

    def image_endpoint_for(self, region: str | None = None) -> str:
        """``region``'s Cloud Images endpoint, as the catalog gives it (``None``: default)."""
        return f"{self.region_url(region)}/v2"

    def storage_url(self, tenant_id: str, region: str | None = None, *,
                    servicenet: bool = False) -> str:
        """A Cloud Files account's URL in ``region`` (``None``: the default region), as the
        catalog's ``publicURL``, or its ``internalURL`` with ``servicenet=True``."""
        from imgtools.emulator.regions import internal_storage_url, storage_url

        base = self.region_url(region)
        return internal_storage_url(base, tenant_id) if servicenet else \
            storage_url(base, tenant_id)

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def __repr__(self) -> str:
        mode = "subprocess" if self.subprocess else "thread"
        return f"<EmulatorHandle {self.url} {mode} data_dir={str(self.data_dir)!r}>"

    # -- small HTTP helper (stdlib, so the handle works before any client exists) -----------
    def request(self, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None, timeout: float = 30.0
                ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            data = None if body is None else json.dumps(body).encode()
            hdrs = {"Content-Type": "application/json", **(headers or {})} if data else \
                dict(headers or {})
            conn.request(method, path, body=data, headers=hdrs)
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, \
                response.read()
        finally:
            conn.close()

    def _json(self, method: str, path: str, body: Any = None) -> Any:
        status, _, data = self.request(method, path, body)
        if status >= 400:
            raise RuntimeError(f"{method} {path} -> {status}: {data[:200]!r}")
        return json.loads(data) if data else None

    def token(self, username: str = "demo", api_key: str | None = None) -> str:
        """A fresh token for a configured user (the API key is looked up when omitted)."""
        if api_key is None:
            matches = [u for u in self.config.users if u.username == username]
            if not matches:
                raise KeyError(f"no emulator user {username!r}")
            api_key = matches[0].api_key
        body = {"auth": {"RAX-KSKEY:apiKeyCredentials": {"username": username,
                                                         "apiKey": api_key}}}
        token: str = self._json("POST", "/v2.0/tokens", body)["access"]["token"]["id"]
        return token

    def tenant_of(self, username: str = "demo") -> str:
        return next(u.tenant_id for u in self.config.users if u.username == username)

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = self._json("GET", "/_emulator/stats")
        return data

    def reset_stats(self) -> None:
        self.request("DELETE", "/_emulator/stats")

    def info(self) -> dict[str, Any]:
        data: dict[str, Any] = self._json("GET", "/_emulator/info")
        return data

    def set_faults(self, **changes: Any) -> dict[str, Any]:
        """Change fault settings while running; ``reset=True`` clears them first."""
        data: dict[str, Any] = self._json("POST", "/_emulator/faults", changes)
        return data

    def clear_faults(self) -> None:
        self.set_faults(reset=True)

    def advance_clock(self, seconds: float) -> None:
        """Move the emulator's clock forward (tokens and tasks expire sooner)."""
        self._json("POST", "/_emulator/clock", {"advance": seconds})

    def image_id(self, slug: str = "web", tenant_id: str | None = None,
                 region: str | None = None) -> str:
        """The id of a seeded image: web, db, small, windows, rhel, old (deactivated), or the
        public base-ubuntu and base-windows; in ``region`` (``None``: the default region)."""
        from imgtools.emulator.seed import BASE_IMAGES_OWNER, BASE_SPECS, image_id_for

        name = self._region(region)
        if tenant_id is None:
            is_base = slug in {spec.slug for spec in BASE_SPECS}
            tenant_id = BASE_IMAGES_OWNER if is_base else self.tenant_of("demo")
        return image_id_for(tenant_id, slug, self.config.seed,
                            "" if name == self.default_region else name)

    # -- life cycle -------------------------------------------------------------------------
    def start(self) -> EmulatorHandle:
        socks: dict[str, socket.socket] = {}
        try:
            for region in self.config.regions:
                wanted = self.port if region == self.default_region else \
                    self.region_ports.get(region, 0)
                socks[region] = bind_socket(self.host, wanted)
                bound = socks[region].getsockname()[1]
                if region == self.default_region:
                    self.port = bound
                else:
                    self.region_ports[region] = bound
        except BaseException:
            for sock in socks.values():
                sock.close()
            raise
        try:
            if self.subprocess:
                self._spawn(socks)
            else:
                self._run_thread(socks)
            self._wait_ready()
        finally:
            if self.subprocess:
                for sock in socks.values():
                    sock.close()  # the child has its own copies
        return self

    def _ports(self) -> dict[str, int]:
        return {region: self.port if region == self.default_region else
                self.region_ports[region] for region in self.config.regions}

    def _spawn(self, socks: dict[str, socket.socket]) -> None:
        config_path = self.data_dir / "emulator-config.json"
        config_path.write_text(self.config.to_json())
        config_path.chmod(0o600)
        sock = socks[self.default_region]
        cmd = [sys.executable, "-m", "imgtools.emulator", "--config", str(config_path),
               "--data-dir", str(self.data_dir), "--host", self.host, "--port", str(self.port),
               "--fd", str(sock.fileno()), "--parent-pid", str(os.getpid())]
        for region, other in socks.items():
            if region != self.default_region:
                cmd += ["--region-fd", f"{region}={other.fileno()}"]
        self._log = open(self.data_dir / "emulator.log", "ab")  # noqa: SIM115 - kept open
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMGTOOLS_EMULATOR_")}
        self._process = sp.Popen(cmd, stdout=self._log, stderr=sp.STDOUT, env=env,
                                 pass_fds=tuple(s.fileno() for s in socks.values()))

    def _run_thread(self, socks: dict[str, socket.socket]) -> None:
        from imgtools.emulator.app import build_app

        app, _ = build_app(self.config, self.data_dir, self._ports())
        server = _uvicorn_server(app)
        self._server = server

        def run() -> None:
            try:
                server.run(sockets=list(socks.values()))
            finally:
                for sock in socks.values():
                    sock.close()

        self._thread = threading.Thread(target=run, name="imgtools-emulator", daemon=True)
        self._thread.start()

    def _wait_ready(self) -> None:
        # Seeding history and images happens before the first answer: allow for it (~10k
        # tasks/s; image bytes are generated, hashed and written at about 160 MiB/s here: a
        # 1 GiB image_size seeds 6.25 GiB in about 40 s).
        histories = len(self.config.regions) * len({u.tenant_id for u in self.config.users})
        timeout = (READY_TIMEOUT + self.config.seed_tasks * histories / 2000
                   + seeded_image_bytes(self.config) / SEEDING_BYTES_PER_S)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"emulator exited with {self._process.returncode}; see "
                                   f"{self.data_dir / 'emulator.log'}:\n{self.log_tail()}")
            if self._thread is not None and not self._thread.is_alive():
                raise RuntimeError("emulator thread stopped during start-up")
            with contextlib.suppress(OSError, http.client.HTTPException):
                status, _, _ = self.request("GET", "/_emulator/stats", timeout=2.0)
                if status == 200:
                    return
            time.sleep(0.05)
        self.close()
        raise RuntimeError(f"emulator did not answer within {timeout:.0f} s")

    def log_tail(self, lines: int = 30) -> str:
        path = self.data_dir / "emulator.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """Stop abruptly: SIGKILL the subprocess (in thread mode, stop without grace)."""
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                self._process.send_signal(signal.SIGKILL)
            self._process.wait(timeout=10)
            self._process = None
        if self._server is not None:
            # No SIGKILL for a thread: stop serving at once; the worker's in-memory jobs are
            # lost just as in a crash (their tasks stay 'processing' in the database).
            self._server.should_exit = True
            if self._thread is not None:
                self._thread.join(timeout=10)
            self._server, self._thread = None, None

    def stop(self) -> None:
        """Stop gracefully (SIGTERM; the worker finishes its step, state is kept)."""
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except sp.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
            self._process = None
        if self._server is not None:
            self._server.should_exit = True
            if self._thread is not None:
                self._thread.join(timeout=15)
            self._server, self._thread = None, None

    def restart(self, config: EmulatorConfig | None = None) -> EmulatorHandle:
        """Start again on the same port and data dir (after ``kill`` or ``stop``)."""
        self.kill()
        if config is not None:
            self.config = config
        return self.start()

    def close(self) -> None:
        self.stop()
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._owns_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> EmulatorHandle:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def start_emulator(config: EmulatorConfig | None = None, data_dir: str | Path | None = None,
                   port: int = 0, subprocess: bool = True,
                   host: str = "127.0.0.1") -> EmulatorHandle:
    """Start an emulator on ``host:port`` (0 = a free port) over ``data_dir`` (a fresh temp
    dir, removed at close, when ``None``) and wait until it answers."""
    owns = data_dir is None
    path = Path(tempfile.mkdtemp(prefix="imgtools-emulator-")) if data_dir is None \
        else Path(data_dir)
    path.mkdir(parents=True, exist_ok=True)
    handle = EmulatorHandle(config or EmulatorConfig(), path, host, port, subprocess, owns)
    try:
        return handle.start()
    except BaseException:
        if owns:
            shutil.rmtree(path, ignore_errors=True)
        raise

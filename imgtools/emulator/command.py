"""The emulator's command line (``python -m imgtools.emulator``, ``imgtools emulator``): run
it in the foreground.

Settings, lowest precedence first: defaults, ``--config FILE`` (JSON), environment variables
``IMGTOOLS_EMULATOR_<FIELD>`` (e.g. ``IMGTOOLS_EMULATOR_EXPORT_SPEED``,
``IMGTOOLS_EMULATOR_FAULT_ERROR_503``), then command-line flags (``--export-speed``,
``--fault-error-503``). Run with ``--help`` for the full list.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

from imgtools.emulator.config import EmulatorConfig, FaultSettings, User

__all__ = ["ENV_PREFIX", "banner", "build_parser", "config_from", "main"]

ENV_PREFIX = "IMGTOOLS_EMULATOR_"
_SIMPLE = {"int": int, "float": float, "str": str}


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _fields() -> list[tuple[str, str, str, bool]]:
    """``(flag, env, type, is_fault)`` for every scalar setting."""
    out = []
    for f in dataclasses.fields(EmulatorConfig):
        if f.type in _SIMPLE:
            name = f.name.replace("_", "-")
            out.append((name, f.name.upper(), str(f.type), False))
    for f in dataclasses.fields(FaultSettings):
        name = "fault-" + f.name.replace("_", "-")
        out.append((name, "FAULT_" + f.name.upper(), str(f.type), True))
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m imgtools.emulator",
        description="Local Cloud Images + Cloud Files + identity emulator. Every setting can "
                    f"also come from the environment as {ENV_PREFIX}<NAME>.")
    parser.add_argument("--host", default=os.environ.get(ENV_PREFIX + "HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get(ENV_PREFIX + "PORT",
                                                                       "8777")))
    parser.add_argument("--data-dir", default=os.environ.get(ENV_PREFIX + "DATA_DIR"),
                        help="state directory (default: a new temporary one)")
    parser.add_argument("--config", help="JSON file of settings (as EmulatorConfig.to_json)")
    parser.add_argument("--fd", type=int, help=argparse.SUPPRESS)  # inherited listening socket
    parser.add_argument("--user", action="append", metavar="NAME:API_KEY:TENANT[:ROLES]",
                        help="a user (repeat; replaces the demo users)")
    parser.add_argument("--region", action="append",
                        help="region served (repeat; the first is the default region)")
    parser.add_argument("--region-port", action="append", metavar="REGION=PORT", default=[],
                        help="port of a region after the first (default: --port + its "
                             "position, or any free port with --port 0)")
    # Inherited listening sockets of the regions after the first.
    parser.add_argument("--region-fd", action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--quiet", action="store_true", help="no start-up banner")
    parser.add_argument("--parent-pid", type=int, default=None,
                        help="stop when this process is gone (for an emulator started in the "
                             "background by a kernel or a script)")
    for flag, env, kind, _ in _fields():
        if kind == "bool":
            parser.add_argument(f"--{flag}", action=argparse.BooleanOptionalAction,
                                default=None, help=f"env {ENV_PREFIX}{env}")
        else:
            parser.add_argument(f"--{flag}", type=_SIMPLE[kind], default=None,
                                help=f"env {ENV_PREFIX}{env}")
    return parser


def config_from(args: argparse.Namespace, environ: dict[str, str]) -> EmulatorConfig:
    base = EmulatorConfig()
    if args.config:
        base = EmulatorConfig.from_json(Path(args.config).read_text())
    top: dict[str, Any] = {}
    faults: dict[str, Any] = {}
    for flag, env, kind, is_fault in _fields():
        attr = flag.removeprefix("fault-").replace("-", "_") if is_fault else \
            flag.replace("-", "_")
        value = getattr(args, flag.replace("-", "_"))
        if value is None and ENV_PREFIX + env in environ:
            raw = environ[ENV_PREFIX + env]
            value = _bool(raw) if kind == "bool" else _SIMPLE[kind](raw)
        if value is not None:
            (faults if is_fault else top)[attr] = value
    users = args.user or [u for u in environ.get(ENV_PREFIX + "USERS", "").split(",") if u]
    if users:
        top["users"] = tuple(User.parse(u) for u in users)
    regions = args.region or [r for r in environ.get(ENV_PREFIX + "REGIONS", "").split(",")
                              if r]
    if regions:
        top["regions"] = tuple(regions)
    return base.replace(faults=base.faults.replace(**faults), **top)


def banner(url: str, config: EmulatorConfig, data_dir: Path,
           region_urls: dict[str, str] | None = None) -> str:
    urls = region_urls or {config.regions[0]: url}
    lines = [
        "imgtools emulator (Cloud Images + Cloud Files + identity)",
        f"  url:        {url}",
        f"  identity:   {url}/v2.0/tokens",
        f"  images:     {url}/v2",
        f"  data dir:   {data_dir}",
        "  users (username / API key / tenant / Cloud Files URL):",
    ]
    for user in config.users:
        lines.append(f"    {user.username} / {user.api_key} / {user.tenant_id} / "
                     f"{url}/v1/MossoCloudFS_{user.tenant_id}")
    lines.append(f"  stats:      {url}/_emulator/stats")
    lines.append("  regions (the first is the default; each has its own images, tasks, files):")
    for region, base in urls.items():
        lines.append(f"    {region}: images {base}/v2, files {base}/v1/MossoCloudFS_<tenant>, "
                     f"ServiceNet {base}/snet/v1/MossoCloudFS_<tenant>")
    return "\n".join(lines)


def _pairs(items: list[str], what: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        name, sep, number = item.partition("=")
        if not sep or not name or not number.isdigit():
            raise ValueError(f"{what} wants REGION=NUMBER, got {item!r}")
        out[name] = int(number)
    return out


def _region_sockets(args: argparse.Namespace, config: EmulatorConfig
                    ) -> dict[str, socket.socket]:
    """The listening sockets of the regions after the first: inherited, or bound here."""
    from imgtools.emulator.server import bind_socket

    fds = _pairs(args.region_fd, "--region-fd")
    ports = _pairs(args.region_port, "--region-port")
    socks: dict[str, socket.socket] = {}
    for position, region in enumerate(config.regions[1:], start=1):
        if region in fds:
            socks[region] = socket.socket(fileno=fds[region])
        else:
            port = ports.get(region, args.port + position if args.port else 0)
            socks[region] = bind_socket(args.host, port)
    return socks


def main(argv: list[str] | None = None) -> int:
    """Run the emulator until interrupted; ``argv`` as on the command line (``--help`` lists
    every option). Returns the exit status: 0, or 2 when it cannot listen."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from(args, dict(os.environ))
    except (ValueError, TypeError) as exc:
        parser.error(str(exc))
    data_dir = Path(args.data_dir) if args.data_dir else \
        Path(tempfile.mkdtemp(prefix="imgtools-emulator-"))
    data_dir.mkdir(parents=True, exist_ok=True)

    from imgtools.emulator.app import build_app
    from imgtools.emulator.server import _uvicorn_server, bind_socket

    if args.fd is not None:
        sock = socket.socket(fileno=args.fd)
    else:
        try:
            sock = bind_socket(args.host, args.port)
        except OSError as exc:
            print(f"cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
            return 2
    try:
        others = _region_sockets(args, config)
    except (OSError, ValueError) as exc:
        sock.close()
        print(f"cannot listen for every region: {exc}", file=sys.stderr)
        return 2
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    ports = {config.regions[0]: port, **{r: s.getsockname()[1] for r, s in others.items()}}
    app, _ = build_app(config, data_dir, ports)
    server = _uvicorn_server(app)
    if not args.quiet:
        urls = {r: f"http://{shown}:{p}" for r, p in ports.items()}
        print(banner(f"http://{shown}:{port}", config, data_dir, urls), flush=True)
    if args.parent_pid is not None:
        _watch_parent(args.parent_pid, server)
    server.run(sockets=[sock, *others.values()])
    return 0


def _watch_parent(parent_pid: int, server: Any) -> None:
    """Shut down when the parent ends, however it ends: a SIGKILLed kernel runs no atexit, and
    an orphaned emulator would hold its port and data dir forever."""
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        server.should_exit = True

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


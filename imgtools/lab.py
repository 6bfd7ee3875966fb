"""``python -m imgtools.lab``: the local emulator and JupyterLab on ``notebooks/``, wired together.

The emulator is started first; JupyterLab (and so every kernel it starts) gets an environment
that logs in to it as the demo user, so the notebooks run unchanged against it. The emulator
stops when JupyterLab exits. ``--real`` skips the emulator and keeps your own credentials.

The helpers here are also what the notebooks and the browser test use: ``poll_policy`` (fast
polling against a local service only), ``lab_argv`` and ``write_lab_settings``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from imgtools._auth import is_loopback
from imgtools._config import DEMO_API_KEY, DEMO_USERNAME
from imgtools._polling import PollPolicy

__all__ = [
    "CREDENTIAL_VARIABLES",
    "emulator_environ",
    "is_local",
    "lab_argv",
    "main",
    "notebooks_dir",
    "poll_policy",
    "write_lab_settings",
]

#: Every variable the client reads credentials from; cleared when the emulator stands in, so a
#: half-remembered real token can never mix with the emulator's login.
CREDENTIAL_VARIABLES = ("API_ENDPOINT", "AUTH_TOKEN", "FILES_ENDPOINT", "RAX_USERNAME",
                        "RAX_API_KEY", "RAX_REGION", "IMGTOOLS_USERNAME", "IMGTOOLS_API_KEY",
                        "OS_USERNAME", "OS_PASSWORD", "OS_AUTH_URL", "OS_REGION_NAME",
                        "IMGTOOLS_IDENTITY_URL", "IMGTOOLS_TENANT_ID", "OS_TENANT_ID",
                        "OS_PROJECT_ID")

#: Seeded task history for ``make lab``, so the audit notebook has something to show.
LAB_SEED_TASKS = 300
#: Keep finished tasks 30 days in the lab emulator (the service keeps them 48 h), so the
#: seeded history spreads over weeks and the per-day chart means something.
LAB_TASK_TTL = 30 * 86400.0


def notebooks_dir() -> Path:
    """``notebooks/`` of this checkout."""
    return Path(__file__).resolve().parent.parent / "notebooks"


def is_local(client: Any) -> bool:
    """True when the client talks to a service on this machine (the emulator)."""
    endpoint = getattr(client, "endpoint", None)
    if not endpoint:
        return False
    return is_loopback(httpx.URL(endpoint).host)


def poll_policy(client: Any) -> PollPolicy | None:
    """``PollPolicy.fast()`` for a local emulator, else ``None`` (the client's default, which
    respects the provider's 30 s ceiling)."""
    return PollPolicy.fast() if is_local(client) else None


def emulator_environ(identity_url: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default ``os.environ``) with credentials that log in to the emulator at
    ``identity_url`` as its demo user, and no other credentials."""
    env = {k: v for k, v in (os.environ if base is None else base).items()
           if k not in CREDENTIAL_VARIABLES and k != "IMGTOOLS_EMULATOR"}
    env.update({"RAX_USERNAME": DEMO_USERNAME, "RAX_API_KEY": DEMO_API_KEY,
                "IMGTOOLS_IDENTITY_URL": identity_url})
    return env


def write_lab_settings(settings_dir: str | os.PathLike[str], *,
                       windowing_mode: str | None = None,
                       fetch_news: str = "false") -> Path:
    """Write JupyterLab's ``overrides.json`` into ``settings_dir`` (pass it as
    ``--LabApp.app_settings_dir``): no news toast and, if given, the notebook windowing mode
    (``"none"`` keeps cells that are off screen in the page, which a browser test needs)."""
    overrides: dict[str, dict[str, str]] = {
        "@jupyterlab/apputils-extension:notification": {"fetchNews": fetch_news}}
    if windowing_mode is not None:
        overrides["@jupyterlab/notebook-extension:tracker"] = {"windowingMode": windowing_mode}
    path = Path(settings_dir)
    path.mkdir(parents=True, exist_ok=True)
    target = path / "overrides.json"
    target.write_text(json.dumps(overrides, indent=2) + "\n")
    return target


def lab_argv(root_dir: str | os.PathLike[str], *, port: int, token: str | None = None,
             app_settings_dir: str | os.PathLike[str] | None = None, ip: str = "127.0.0.1",
             open_browser: bool = False, expose_app: bool = False,
             python: str = sys.executable) -> list[str]:
    """The command line of a JupyterLab server on ``ip:port`` serving ``root_dir``.

    ``--allow-root`` because CI runs as root; ``port_retries=0`` so the server fails instead
    of quietly moving to another port than the one the caller waits on.
    """
    argv = [python, "-m", "jupyterlab", f"--ServerApp.root_dir={root_dir}", f"--ip={ip}",
            f"--port={port}", "--ServerApp.port_retries=0", "--allow-root"]
    if not open_browser:
        argv.append("--no-browser")
    if token is not None:
        argv.append(f"--IdentityProvider.token={token}")
    if app_settings_dir is not None:
        argv.append(f"--LabApp.app_settings_dir={app_settings_dir}")
    if expose_app:
        argv.append("--LabApp.expose_app_in_browser=True")
    return argv


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m imgtools.lab",
        description="Start the local emulator and JupyterLab on notebooks/; the notebooks log in "
                    "to the emulator. The emulator stops when JupyterLab exits.")
    parser.add_argument("--port", type=int, default=8888, help="JupyterLab's port (8888)")
    parser.add_argument("--ip", default="127.0.0.1", help="JupyterLab's address (127.0.0.1)")
    parser.add_argument("--notebooks", type=Path, default=None,
                        help="the folder to serve (default: notebooks/ of this checkout)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="keep the emulator's state here (default: a temporary folder)")
    parser.add_argument("--seed-tasks", type=int, default=LAB_SEED_TASKS,
                        help=f"past tasks to seed for the audit notebook ({LAB_SEED_TASKS})")
    parser.add_argument("--real", action="store_true",
                        help="no emulator: the notebooks use the credentials in your "
                             "environment")
    parser.add_argument("--browser", action="store_true", help="open a web browser")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    root = (args.notebooks or notebooks_dir()).resolve()
    if not root.is_dir():
        print(f"imgtools.lab: no notebooks folder at {root}", file=sys.stderr)
        return 2
    settings = Path(tempfile.mkdtemp(prefix="imgtools-lab-settings-"))
    write_lab_settings(settings)
    command = lab_argv(root, port=args.port, ip=args.ip, app_settings_dir=settings,
                       open_browser=args.browser)
    if args.real:
        return _run(command, dict(os.environ))

    from imgtools.emulator import EmulatorConfig, start_emulator

    config = EmulatorConfig(seed_tasks=args.seed_tasks, task_ttl=LAB_TASK_TTL)
    with start_emulator(config=config, data_dir=args.data_dir) as emu:
        print(f"imgtools.lab: emulator at {emu.url} (user {DEMO_USERNAME}); "
              f"starting JupyterLab on {root}", flush=True)
        return _run(command, emulator_environ(emu.identity_url))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _run(command: list[str], env: dict[str, str]) -> int:
    # SIGTERM to us ends like Ctrl-C: JupyterLab first, then (by the caller) the emulator.
    signal.signal(signal.SIGTERM, _interrupt)
    process = subprocess.Popen(command, env=env)
    try:
        return process.wait()
    except KeyboardInterrupt:
        # SIGTERM makes JupyterLab shut its kernels down and exit without asking.
        process.terminate()
        try:
            return process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()


if __name__ == "__main__":
    raise SystemExit(main())

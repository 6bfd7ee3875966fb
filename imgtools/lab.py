"""``imgtools lab`` / ``python -m imgtools.lab``: the local emulator and JupyterLab on the
notebooks, wired together.

``imgtools lab FOLDER`` works in FOLDER (default ``./imgtools-lab``): the notebooks that ship
with imgtools are copied into ``FOLDER/notebooks/`` (those already there are kept as they
are, edits and all), and what they write goes to ``FOLDER/runs/``. Nothing is ever written
into the installed package. In a checkout, ``make lab`` runs it on the checkout itself.

The emulator is started first; JupyterLab (and so every kernel it starts) gets an environment
that logs in to it as the demo user and records into the audit log beside the emulator's data,
so the notebooks run unchanged against it and never touch your own log. The emulator stops
when JupyterLab exits. ``--real`` skips the emulator and keeps your own credentials.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from imgtools._embedded import (
    CREDENTIAL_VARIABLES,
    emulator_environ,
    is_local,
    poll_policy,
    start_local,
)

__all__ = [
    "CREDENTIAL_VARIABLES",
    "DEFAULT_FOLDER",
    "emulator_environ",
    "is_local",
    "lab_argv",
    "main",
    "notebooks_dir",
    "poll_policy",
    "prepare_folder",
    "write_lab_settings",
]

#: Seeded task history for the lab, so the audit notebook has something to show.
LAB_SEED_TASKS = 300
#: Keep finished tasks 30 days in the lab emulator (the service keeps them 48 h), so the
#: seeded history spreads over weeks and the per-day chart means something.
LAB_TASK_TTL = 30 * 86400.0
#: The working folder when none is named, relative to the current directory.
DEFAULT_FOLDER = "imgtools-lab"
#: Inside the working folder: the notebooks (their outputs go to ``../runs``, beside them).
NOTEBOOKS = "notebooks"


def notebooks_dir() -> Path:
    """The notebooks that ship with imgtools: ``imgtools/notebooks`` of an installed wheel,
    else ``notebooks/`` of this checkout (an editable install). Read them, never write there."""
    shipped = Path(str(resources.files("imgtools"))) / NOTEBOOKS
    if shipped.is_dir():
        return shipped
    return Path(__file__).resolve().parent.parent / NOTEBOOKS


def _protected() -> list[Path]:
    # The installed package and the interpreter's library folders: never a working folder.
    paths = [Path(__file__).resolve().parent]
    for key in ("purelib", "platlib", "stdlib"):
        if key in sysconfig.get_paths():
            paths.append(Path(sysconfig.get_paths()[key]).resolve())
    return paths


def prepare_folder(folder: str | os.PathLike[str]) -> Path:
    """Make ``folder`` a lab working folder and return its ``notebooks/``: every shipped
    notebook not already there is copied in; those there are left untouched.

    Raises ``ValueError`` for a folder inside the installed package or site-packages."""
    root = Path(folder).expanduser().resolve()
    for protected in _protected():
        if root == protected or protected in root.parents:
            raise ValueError(f"{root} is inside {protected}; name a working folder of yours")
    target = root / NOTEBOOKS
    source = notebooks_dir()
    if target.resolve() == source.resolve():
        return target  # a checkout's own notebooks/: nothing to copy
    target.mkdir(parents=True, exist_ok=True)
    for book in sorted(source.glob("*.ipynb")):
        if not (target / book.name).exists():
            shutil.copyfile(book, target / book.name)
    return target


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
             default_url: str | None = None, python: str = sys.executable) -> list[str]:
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
    if default_url is not None:
        argv.append(f"--ServerApp.default_url={default_url}")
    return argv


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Start the local emulator and JupyterLab on the imgtools notebooks, copied "
                    "into a working folder of yours; the notebooks log in to the emulator. The "
                    "emulator stops when JupyterLab exits.")
    parser.add_argument("folder", nargs="?", type=Path, default=Path(DEFAULT_FOLDER),
                        help=f"the working folder: notebooks/ in it gets the notebooks that "
                             f"are not there yet, runs/ what they write (default: "
                             f"./{DEFAULT_FOLDER})")
    parser.add_argument("--port", type=int, default=8888, help="JupyterLab's port (8888)")
    parser.add_argument("--ip", default="127.0.0.1", help="JupyterLab's address (127.0.0.1)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="keep the emulator's state (and the audit log of its tasks) here "
                             "(default: a temporary folder)")
    parser.add_argument("--seed-tasks", type=int, default=LAB_SEED_TASKS,
                        help=f"past tasks to seed for the audit notebook ({LAB_SEED_TASKS})")
    parser.add_argument("--real", action="store_true",
                        help="no emulator: the notebooks use the credentials in your "
                             "environment")
    parser.add_argument("--browser", action="store_true", help="open a web browser")
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m imgtools.lab") -> int:
    args = _parser(prog).parse_args(argv)
    try:
        notebooks = prepare_folder(args.folder)
    except (ValueError, OSError) as exc:
        print(f"imgtools lab: {exc}", file=sys.stderr)
        return 2
    root = notebooks.parent
    settings = Path(tempfile.mkdtemp(prefix="imgtools-lab-settings-"))
    write_lab_settings(settings)
    command = lab_argv(root, port=args.port, ip=args.ip, app_settings_dir=settings,
                       open_browser=args.browser, default_url=f"/lab/tree/{NOTEBOOKS}")
    if args.real:
        return _run(command, dict(os.environ))

    with start_local(seed_tasks=args.seed_tasks, task_ttl=LAB_TASK_TTL,
                     data_dir=args.data_dir) as emu:
        env = emulator_environ(emu)
        print(f"imgtools lab: emulator at {emu.url} (user {env['RAX_USERNAME']}, audit log "
              f"{env['IMGTOOLS_LOG']}); starting JupyterLab on {notebooks}", flush=True)
        return _run(command, env)


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

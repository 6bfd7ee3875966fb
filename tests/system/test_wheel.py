"""The toolkit as users get it: the wheel, installed into a fresh venv, run from a directory
far from this checkout. It holds the notebooks; ``imgtools lab --help``, the demo and the
notebooks (headless, against the emulator each kernel starts) work from it, and nothing is
written into site-packages.

Fast set-up: the wheel goes in with ``--no-deps``; its dependencies come from this venv's
site-packages through a ``.pth`` line (not as a site dir, so this checkout's editable install
stays out of sight).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from imgtools._embedded import CREDENTIAL_VARIABLES

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Installed:
    wheel: Path
    python: Path
    bin: Path
    site: Path
    work: Path
    env: dict[str, str]

    def run(self, *argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(argv), cwd=self.work, env=self.env, capture_output=True,
                              text=True, timeout=timeout)


def _tree(path: Path) -> dict[str, int]:
    return {str(p.relative_to(path)): p.stat().st_size for p in path.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    tmp = tmp_path_factory.mktemp("wheel")
    # Built from a copy of what the sdist needs, so the build leaves nothing in the checkout.
    source = tmp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("imgtools", "notebooks"):
        shutil.copytree(ROOT / name, source / name,
                        ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w",
                    str(tmp / "dist"), str(source)], check=True, capture_output=True,
                   timeout=300)
    wheel = next((tmp / "dist").glob("imgtools-*.whl"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                    "--quiet", "--no-deps", str(wheel)], check=True, capture_output=True,
                   timeout=300)
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; "
                                "print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "_imgtools_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    work = tmp / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in CREDENTIAL_VARIABLES and k not in ("PYTHONPATH", "IMGTOOLS_EMULATOR")}
    env["IMGTOOLS_LOG"] = str(tmp / "audit-log.sqlite")
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    yield Installed(wheel, python, venv / "bin", site, work, env)


def test_the_wheel_holds_the_notebooks(installed: Installed) -> None:
    names = zipfile.ZipFile(installed.wheel).namelist()
    assert sorted(n.rsplit("/", 1)[1] for n in names
                  if n.startswith("imgtools/notebooks/")) == NOTEBOOKS
    assert "imgtools/py.typed" in names


def test_the_installed_package_is_the_wheels(installed: Installed) -> None:
    run = installed.run(str(installed.python), "-c", "import imgtools, imgtools.lab; "
                        "print(imgtools.__file__); print(imgtools.lab.notebooks_dir())")
    assert run.returncode == 0, run.stderr
    module, notebooks = run.stdout.split()
    assert Path(module).is_relative_to(installed.site)
    assert Path(notebooks) == installed.site / "imgtools" / "notebooks"


def test_lab_help_from_the_command_and_the_module(installed: Installed) -> None:
    for argv in ([str(installed.bin / "imgtools"), "lab", "--help"],
                 [str(installed.python), "-m", "imgtools.lab", "--help"]):
        run = installed.run(*argv)
        assert run.returncode == 0, run.stderr
        assert "working folder" in run.stdout and "--real" in run.stdout


def test_the_demo_runs(installed: Installed) -> None:
    run = installed.run(str(installed.python), "-m", "imgtools.demo")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "identical" in run.stdout and "OK" in run.stdout


def test_the_notebooks_run_headless_from_a_lab_folder(installed: Installed) -> None:
    """The lab's working folder, made by the installed package, then every notebook run by
    papermill in it with no credentials (each kernel starts its own emulator); the package in
    site-packages is byte for byte what the wheel put there."""
    package = installed.site / "imgtools"
    before = _tree(package)
    made = installed.run(str(installed.python), "-c",
                         "from imgtools.lab import prepare_folder; print(prepare_folder('lab'))")
    assert made.returncode == 0, made.stderr
    folder = installed.work / "lab" / "notebooks"
    assert Path(made.stdout.strip()) == folder
    assert sorted(p.name for p in folder.glob("*.ipynb")) == NOTEBOOKS
    code = ("import sys, papermill as pm\n"
            "for name in sys.argv[1:]:\n"
            "    pm.execute_notebook(name, 'ran-' + name, cwd='.', progress_bar=False,\n"
            "                        kernel_name='python3')\n")
    run = subprocess.run([str(installed.python), "-c", code, *NOTEBOOKS], cwd=folder,
                         env=installed.env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    for name in NOTEBOOKS:
        assert (folder / f"ran-{name}").stat().st_size > 0
    # The notebooks' outputs went to the lab folder's runs/, nothing into the package.
    assert (installed.work / "lab" / "runs" / "notebooks" / "tasks-audit.csv").exists()
    assert _tree(package) == before


def test_the_lab_never_takes_site_packages_as_its_folder(installed: Installed) -> None:
    run = installed.run(str(installed.bin / "imgtools"), "lab", str(installed.site / "x"))
    assert run.returncode == 2 and "name a working folder of yours" in run.stderr
    assert not (installed.site / "x").exists()

"""The package metadata: pyproject and environment.yml list the same runtime dependencies."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[]", requirement.strip(), maxsplit=1)[0].lower()


def _pyproject_runtime() -> dict[str, str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {_name(r): r.replace(" ", "") for r in data["project"]["dependencies"]}


def _environment_conda() -> dict[str, str]:
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = lines.index("dependencies:")
    deps = {}
    for line in lines[start + 1 :]:
        item = line.strip()
        if not item.startswith("- ") or line.startswith("      "):
            continue
        req = item[2:].strip()
        if req in ("pip", "pip:") or req.startswith("python"):
            continue
        deps[_name(req)] = req.replace(" ", "")
    return deps


def test_environment_yml_matches_pyproject() -> None:
    assert _environment_conda() == _pyproject_runtime()


def test_environment_yml_installs_the_dev_extra() -> None:
    assert "-e .[dev]" in (ROOT / "environment.yml").read_text()


def test_requires_python_311() -> None:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert data["project"]["requires-python"] == ">=3.11"

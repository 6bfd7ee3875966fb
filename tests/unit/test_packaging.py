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


# -- what ships ---------------------------------------------------------------------------


def test_the_package_list_names_every_package_on_disk() -> None:
    """pyproject lists the packages by hand (to map notebooks/ into imgtools/notebooks): a new
    subpackage must be added there, or the wheel would lack it."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(data["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts)
               for p in (ROOT / "imgtools").rglob("__init__.py")}
    assert listed == on_disk | {"imgtools.notebooks"}
    assert data["tool"]["setuptools"]["package-dir"] == {"imgtools.notebooks": "notebooks"}


def test_the_layer_contracts_name_every_module() -> None:
    """A new module must take its place in the layers: the emulator may import none of the
    package's other modules (so each is listed there), and lint-imports checks the rest."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = {c["name"]: c for c in data["tool"]["importlinter"]["contracts"]}
    emulator = next(c for c in contracts.values()
                    if c.get("source_modules") == ["imgtools.emulator"])
    modules = {f"imgtools.{p.stem}" for p in (ROOT / "imgtools").glob("*.py")
               if p.stem not in ("__init__", "__main__")}
    assert modules <= set(emulator["forbidden_modules"])

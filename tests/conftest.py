"""Shared fixtures and the kind markers.

Every test gets its own audit log path, so no test writes the user's log. Each test is marked
with its folder's kind (``unit``, ``emulator``, ``integration``, ``system``), so
``pytest -m unit`` runs the unit tests alone.

The two shared emulators are two fixtures, each one per module: ``emulator_in_process`` (the
emulator tests' settings, in this process) and ``emulator_in_subprocess`` (the client tests'
settings, in a subprocess, its faults cleared after each test). A module that calls its
emulator ``emu`` says which one it is with a one-line alias fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

# The helpers' asserts explain themselves like the tests' own (before they are imported).
pytest.register_assert_rewrite("tests.client_support", "tests.emulator.helpers")

from imgtools.emulator import EmulatorHandle, start_emulator  # noqa: E402
from tests import client_support  # noqa: E402
from tests.emulator import helpers as emulator_helpers  # noqa: E402

TESTS = Path(__file__).resolve().parent
#: Each folder of tests/ and the marker its tests get (registered in pyproject.toml).
KINDS = ("unit", "emulator", "integration", "system")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(item.path).resolve()
        if not path.is_relative_to(TESTS):
            continue  # a path given on the command line outside tests/
        kind = path.relative_to(TESTS).parts[0]
        if kind not in KINDS:
            raise pytest.UsageError(
                f"{item.nodeid}: every test lives in one of tests/{{{','.join(KINDS)}}}/ "
                "(the folder gives its marker)")
        item.add_marker(kind)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("IMGTOOLS_LOG", str(tmp_path / "imgtools-log.sqlite"))
    for name in ("API_ENDPOINT", "AUTH_TOKEN", "FILES_ENDPOINT", "OS_USERNAME", "OS_PASSWORD",
                 "RAX_USERNAME", "RAX_API_KEY", "IMGTOOLS_USERNAME", "IMGTOOLS_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    yield


@pytest.fixture(scope="module")
def emulator_in_process() -> Iterator[EmulatorHandle]:
    """The emulator tests' emulator (``tests.emulator.helpers.FAST``: small images, a quick
    worker, a viewer user), in this process, one per module."""
    with start_emulator(config=emulator_helpers.FAST, subprocess=False) as handle:
        yield handle


@pytest.fixture(scope="module")
def emulator_in_subprocess() -> Iterator[EmulatorHandle]:
    """The client tests' emulator (``tests.client_support.FAST``), over real sockets in a
    subprocess, one per module. Faults switched on by a test are cleared after it."""
    with start_emulator(config=client_support.FAST, subprocess=True) as handle:
        yield handle


@pytest.fixture(autouse=True)
def _no_faults_left(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "emulator_in_subprocess" in request.fixturenames:
        client_support.clear_faults(request.getfixturevalue("emulator_in_subprocess"))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"

"""Emulator fixtures for the client tests: a fast emulator over real sockets, in a subprocess.

Loaded by test_auth.py, test_client.py and test_polling.py with
``pytest_plugins = ["fixtures_client"]``; each module gets its own emulator. Faults are switched
on per test and cleared after it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from client_support import FAST, clear_faults, make_client

import imgtools
from imgtools.emulator import EmulatorHandle, start_emulator


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorHandle]:
    with start_emulator(config=FAST, subprocess=True) as handle:
        yield handle


@pytest.fixture(autouse=True)
def _no_faults_left(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    # Plugins are global: touch only the modules that asked for these fixtures.
    mine = "fixtures_client" in getattr(request.module, "pytest_plugins", ())
    if mine and "emu" in request.fixturenames:
        clear_faults(request.getfixturevalue("emu"))


@pytest.fixture
def client(emu: EmulatorHandle) -> Iterator[imgtools.Client]:
    with make_client(emu) as c:
        yield c


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"

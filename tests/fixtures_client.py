"""Fixtures for the client tests: ``client`` and clearing faults after each test.

Loaded by test_auth.py, test_cli.py, test_client.py, test_files.py and test_polling.py with
``pytest_plugins = ["fixtures_client"]``; that name also gets them conftest.py's ``emu``: a
fast emulator over real sockets, in a subprocess, one per module. Faults are switched on per
test and cleared after it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from client_support import clear_faults, make_client

import imgtools
from imgtools.emulator import EmulatorHandle


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

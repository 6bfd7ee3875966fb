"""Fixtures of the emulator tests: httpx clients of the module's ``emu`` with and without a
token, and a fresh container."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from imgtools.emulator import EmulatorHandle
from tests.emulator.helpers import Api


@pytest.fixture(scope="module")
def anon(emu: EmulatorHandle) -> Iterator[httpx.Client]:
    """A client without a token."""
    with httpx.Client(base_url=emu.url, timeout=30.0) as client:
        yield client


# Module-scoped: an httpx client costs tens of milliseconds to build (its SSL context).
@pytest.fixture(scope="module")
def api(emu: EmulatorHandle) -> Iterator[Api]:
    client = Api(emu, "demo")
    yield client
    client.close()


@pytest.fixture(scope="module")
def other(emu: EmulatorHandle) -> Iterator[Api]:
    client = Api(emu, "other")
    yield client
    client.close()


@pytest.fixture
def container(api: Api) -> str:
    return api.container()

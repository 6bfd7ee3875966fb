"""Fixtures of the integration tests: ``client``, logged in as the demo user on the module's
``emu``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import imgtools
from imgtools.emulator import EmulatorHandle
from tests.client_support import make_client


@pytest.fixture
def client(emu: EmulatorHandle) -> Iterator[imgtools.Client]:
    with make_client(emu) as c:
        yield c

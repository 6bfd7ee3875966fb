"""Fixtures of the integration tests: ``client``, logged in as the demo user on the module's
``emu``; ``as_demo``: the environment the command line logs in with, as that user; ``iad``:
that client's twin in IAD; ``store``: a transfers record of the test's own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import imgtools
from imgtools.emulator import EmulatorHandle
from imgtools.transfer import TransferStore
from tests.client_support import make_client


@pytest.fixture
def client(emu: EmulatorHandle) -> Iterator[imgtools.Client]:
    with make_client(emu) as c:
        yield c


@pytest.fixture
def as_demo(emu: EmulatorHandle, monkeypatch: pytest.MonkeyPatch) -> EmulatorHandle:
    monkeypatch.setenv("RAX_USERNAME", "demo")
    monkeypatch.setenv("RAX_API_KEY", "demo-key")
    monkeypatch.setenv("IMGTOOLS_IDENTITY_URL", emu.identity_url)
    return emu


@pytest.fixture
def iad(client: imgtools.Client) -> Iterator[imgtools.Client]:
    twin = client.in_region("IAD")
    yield twin
    twin.close()


@pytest.fixture
def store(tmp_path: Path) -> TransferStore:
    return TransferStore(tmp_path / "log.sqlite")

"""Shared fixtures. Every test gets its own audit log path, so no test writes the user's log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from imgtools.emulator import EmulatorHandle, start_emulator


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("IMGTOOLS_LOG", str(tmp_path / "imgtools-log.sqlite"))
    for name in ("API_ENDPOINT", "AUTH_TOKEN", "FILES_ENDPOINT", "OS_USERNAME", "OS_PASSWORD",
                 "RAX_USERNAME", "RAX_API_KEY", "IMGTOOLS_USERNAME", "IMGTOOLS_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    yield


@pytest.fixture(scope="module")
def emu(request: pytest.FixtureRequest) -> Iterator[EmulatorHandle]:
    """The module's emulator, as its ``pytest_plugins`` ask: the emulator tests' one
    (``emulator_helpers``: in this process) or the client tests' one (``fixtures_client``:
    in a subprocess). Decided here because plugins are global: were ``emu`` defined in both,
    every module would get the one registered last, and a module run alone another one."""
    if "emulator_helpers" in getattr(request.module, "pytest_plugins", ()):
        from emulator_helpers import FAST as config
        subprocess = False
    else:
        from client_support import FAST as config
        subprocess = True
    with start_emulator(config=config, subprocess=subprocess) as handle:
        yield handle

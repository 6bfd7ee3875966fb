"""Shared fixtures. Every test gets its own audit log path, so no test writes the user's log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("IMGTOOLS_LOG", str(tmp_path / "imgtools-log.sqlite"))
    for name in ("API_ENDPOINT", "AUTH_TOKEN", "FILES_ENDPOINT", "OS_USERNAME", "OS_PASSWORD",
                 "RAX_USERNAME", "RAX_API_KEY", "IMGTOOLS_USERNAME", "IMGTOOLS_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    yield

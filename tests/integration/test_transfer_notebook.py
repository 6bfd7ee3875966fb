"""notebooks/04_transfer_images.ipynb under papermill against the emulator: a run with an image
that cannot be transferred (Windows) fails the notebook in its last cell, after the lineage
table, and the transfer that could go went."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from imgtools._embedded import emulator_environ, emulator_log_path
from imgtools.emulator import EmulatorConfig, start_emulator
from imgtools.lab import CREDENTIAL_VARIABLES, notebooks_dir
from imgtools.transfer import TransferStore

NOTEBOOK = notebooks_dir() / "04_transfer_images.ipynb"


def test_the_notebook_fails_when_a_transfer_failed(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import papermill as pm  # type: ignore[import-untyped]

    config = EmulatorConfig(pending_delay=0.1, export_speed=64 * 1024 * 1024)
    with start_emulator(config=config, subprocess=False) as emu:
        base = {k: v for k, v in os.environ.items()
                if k not in CREDENTIAL_VARIABLES and k != "IMGTOOLS_LOG"}
        for name, value in emulator_environ(emu, base).items():
            monkeypatch.setenv(name, value)
        out = tmp_path / "executed.ipynb"
        with pytest.raises(pm.PapermillExecutionError) as caught:
            pm.execute_notebook(str(NOTEBOOK), str(out), cwd=str(tmp_path),
                                progress_bar=False, parameters={
                                    "image_ids": [emu.image_id("windows")],
                                    "name_contains": "build-agent", "cleanup": "copy"})
        assert "RuntimeError" in caught.value.ename
        assert "transfers failed" in caught.value.evalue
        book = json.loads(out.read_text())
        lineage = next(c for c in book["cells"] if "lineage-table" in
                       c["metadata"].get("tags", []))
        text = "".join("".join(o.get("text", "")) for o in lineage["outputs"])
        assert text.startswith("1 transferred, 1 failed\n")
        assert "ORD -> IAD: build-agent snapshot (Debian 12), 10 steps" in text
        # The record is in the log beside the emulator's data, as the notebook's tasks are.
        records = TransferStore(emulator_log_path(emu.data_dir)).records()
        assert sorted(r.status for r in records) == ["done", "failed"]

"""Twenty transfers under faults, with the client SIGKILLed mid-copy and again mid-import and
the emulator SIGKILLed and restarted mid-copy and again mid-import (issue 13, "Measured"; the
scenario is in ``tests/transfer_faults_support.py``, shared with
``benchmarks/transfer_faults.py``).

It must show: every transfer done in the end (each one recorded from the start, so resumable
after each kill); exactly one export and one import task per transfer in the service (no
duplicate, none failed, none extra); every new image the source image byte for byte; no
leftover and no object in the transfer containers after cleanup; the lineage complete for
all. Prints one ``TRANSFER FAULTS ...`` line (also ``tests/artifacts/transfer_faults.json``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from imgtools.emulator import EmulatorHandle, start_emulator
from tests.transfer_faults_support import Scenario, run_scenario, summary_line, write_json

#: 20 transfers of 2 MiB, 1 MiB and 512 KiB images in 256 KiB segments: about a minute on two
#: cores.
SCENARIO = Scenario()
ARTIFACT = Path(__file__).parents[1] / "artifacts" / "transfer_faults.json"


@pytest.fixture
def emu(tmp_path: Path) -> Iterator[EmulatorHandle]:
    with start_emulator(config=SCENARIO.config(), data_dir=tmp_path / "emulator") as handle:
        yield handle


@pytest.mark.slow
def test_transfers_under_faults_and_kills(emu: EmulatorHandle, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    fig = run_scenario(emu, tmp_path, SCENARIO)
    line = summary_line(fig)
    write_json({"line": line, **fig}, ARTIFACT)
    with capsys.disabled():
        print("\n" + line)

    n = SCENARIO.transfers
    # The kills happened where they were meant to: A with every transfer recorded and none
    # done (so each one was resumable), B mid-import, with transfers left for C.
    assert fig["a_exit"] == -9 and fig["b_exit"] == -9
    assert fig["interrupted_at_a_kill"].get("copy", 0) >= 1
    assert fig["interrupted_at_b_kill"] == {"import_wait": 1}
    assert fig["recorded_at_a_kill"] == n and fig["done_at_a_kill"] < n
    # Nothing the unfinished transfers still needed was listed as a leftover then.
    assert fig["objects_at_a_kill"] > 0  # exports made, copies begun
    assert fig["leftovers_listed_at_a_kill"] == {"ORD": 0, "IAD": 0, "DFW": 0}
    assert fig["resumed_by_b"] == n - fig["done_at_a_kill"]
    assert fig["resumed_by_c"] == n - fig["done_at_b_kill"] > 0
    assert fig["emulator_restarts"] == 2  # mid-copy, then with B's import live
    # Every transfer done on resume.
    assert fig["c_exit"] == 0 and fig["not_done"] == []
    assert fig["recorded"] == n and fig["done"] == n
    # No duplicate export or import; nothing failed, nothing extra.
    assert (fig["export_tasks"], fig["import_tasks"]) == (n, n)
    assert fig["duplicate_exports"] == 0 and fig["duplicate_imports"] == 0
    assert fig["missing_tasks"] == 0 and fig["failed_tasks"] == 0 and fig["stray_tasks"] == 0
    assert fig["stray_images"] == 0  # one new image per transfer, no other
    # Every new image holds the source image's bytes.
    assert fig["wrong_bytes"] == []
    # Nothing left behind.
    assert fig["leftover_objects"] == {"ORD": 0, "IAD": 0, "DFW": 0}
    assert fig["objects_in_transfer_containers"] == {"ORD": 0, "IAD": 0, "DFW": 0}
    # The lineage is complete for all.
    assert fig["lineage_complete"] == n
    # The faults really happened (counted by the emulator, each of its lives).
    for name in ("error_503", "drop_before", "drop_after", "cut_body"):
        assert fig["faults"].get(name, 0) > 0, fig["faults"]

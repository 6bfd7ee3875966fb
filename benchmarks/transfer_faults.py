"""Transfers under faults on the emulator, with both sides killed: every one ends done (at once
or on resume), with no duplicate export or import, no image with wrong bytes, nothing left
behind after cleanup, and its lineage complete.

    .venv/bin/python benchmarks/transfer_faults.py [--transfers 20] [--image-mib 64]
                                                   [--segment-kib 1024] [--seed 20261201]
                                                   [--fault-scale 1] [--json FILE]

The scenario is the system test's (``tests/transfer_faults_support.py``), at a bigger size:
seeded faults (503s, connections dropped before and after the request was handled, bodies
cut halfway, 3-second tokens); process A starts the transfers (``transfer_all`` per round, on
threads) and is SIGKILLed mid-copy; process B resumes them from the audit log, the emulator is
SIGKILLed and restarted in the middle of one of B's copies, and B is SIGKILLed while waiting
for an import (the emulator then SIGKILLed and restarted again); process C resumes the rest
through ``AsyncClient``. Prints the figures (and writes them as JSON with ``--json``); exits 1
when any promise is broken.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imgtools.emulator import start_emulator
from tests.transfer_faults_support import (
    FAULTS,
    SEED,
    Scenario,
    run_scenario,
    summary_line,
    write_json,
)

MIB = 1024 * 1024
#: The fault probabilities ``--fault-scale`` multiplies.
FAULT_RATES = ("error_503", "drop_before", "drop_after", "cut_body")


def broken_promises(fig: dict[str, Any]) -> list[str]:
    """What the issue asks, each as a sentence when it does not hold."""
    n = fig["transfers"]
    checks = {
        "every transfer done": fig["done"] == n and not fig["not_done"],
        "one export and one import per transfer": (fig["export_tasks"], fig["import_tasks"],
                                                   fig["duplicate_exports"],
                                                   fig["duplicate_imports"],
                                                   fig["stray_tasks"],
                                                   fig["stray_images"]) == (n, n, 0, 0, 0, 0),
        "no image with wrong bytes": not fig["wrong_bytes"],
        "nothing of a running transfer listed as a leftover":
            not any(fig["leftovers_listed_at_a_kill"].values()),
        "nothing left after cleanup": not any(fig["leftover_objects"].values())
        and not any(fig["objects_in_transfer_containers"].values()),
        "lineage complete": fig["lineage_complete"] == n,
    }
    return [name for name, ok in checks.items() if not ok]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--transfers", type=int, default=20)
    parser.add_argument("--image-mib", type=float, default=64.0,
                        help="size of the 'web' image ('db' is half, 'small' a quarter)")
    parser.add_argument("--segment-kib", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--fault-scale", type=float, default=1.0,
                        help="multiply every fault probability (1: the test's)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    scenario = Scenario(transfers=args.transfers, image_size=int(args.image_mib * MIB),
                        segment_size=args.segment_kib * 1024, export_speed=256 * MIB,
                        faults=FAULTS.replace(
                            seed=args.seed, **{name: min(1.0, getattr(FAULTS, name)
                                                         * args.fault_scale)
                                               for name in FAULT_RATES}))
    with tempfile.TemporaryDirectory(prefix="imgtools-transfer-faults-") as tmp, \
            start_emulator(config=scenario.config(), data_dir=Path(tmp) / "emulator") as emu:
        fig = run_scenario(emu, Path(tmp), scenario)
    print(summary_line(fig))
    print(f"images: web {args.image_mib:g} MiB, db {args.image_mib / 2:g} MiB, small "
          f"{args.image_mib / 4:g} MiB, in {args.segment_kib} KiB segments; "
          f"{fig['export_bytes'] / MIB:.0f} MiB exported and imported, "
          f"{fig['copied_bytes'] / MIB:.0f} MiB copied "
          f"({fig['bytes_not_copied_again'] / MIB:.0f} MiB found already there on resume)")
    print(f"A (SIGKILLed mid-copy after {fig['seconds_a']} s): {fig['recorded_at_a_kill']} "
          f"recorded, {fig['done_at_a_kill']} done, steps cut off: "
          f"{fig['interrupted_at_a_kill']}; of the {fig['objects_at_a_kill']} objects in "
          f"the transfer containers then, leftovers listed {fig['leftovers_listed_at_a_kill']}")
    print(f"B: resumed {fig['resumed_by_b']}; emulator SIGKILLed and restarted at "
          f"'{fig['b_frozen_copy']}'; B SIGKILLed at {fig['b_exit'] and 'import_wait'} "
          f"(import task {fig['import_task_at_b_kill']}), {fig['done_at_b_kill']} done by then")
    print(f"C: resumed {fig['resumed_by_c']} in {fig['c_runs']} runs, "
          f"{len(fig['c_failed_runs'])} of them failed and were resumed again")
    print(f"tasks: {fig['export_tasks']} exports + {fig['import_tasks']} imports; duplicates "
          f"{fig['duplicate_exports']} + {fig['duplicate_imports']}, failed "
          f"{fig['failed_tasks']}, stray {fig['stray_tasks']}; images no transfer made "
          f"{fig['stray_images']}")
    print(f"step runs: {fig['step_runs']}, failed: {len(fig['failed_step_runs'])}")
    for failure in fig["failed_step_runs"]:
        print(f"  {failure}")
    print(f"faults counted by the emulator (all three of its lives): {fig['faults']}")
    print(f"wall time: {fig['seconds_total']} s")
    if args.json:
        write_json(fig, args.json)
    broken = broken_promises(fig)
    for name in broken:
        print(f"BROKEN: {name}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())

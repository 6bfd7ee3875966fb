"""A whole transfer on the emulator (ORD -> IAD), its wall time broken down by step.

    .venv/bin/python benchmarks/transfer_steps.py [--size-mib 256] [--segment-mib 32]

The emulator's export and import run at ``--task-mib-s`` (simulated task speed); the copy and
the manifest read-back are real bytes over sockets. Prints one line per step and the total.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import imgtools
from imgtools.emulator import EmulatorConfig, image_id_for, start_emulator
from imgtools.transfer import STEPS, TransferStore

MiB = 1024 * 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--segment-mib", type=int, default=32)
    parser.add_argument("--task-mib-s", type=float, default=1024.0)
    args = parser.parse_args(argv)
    config = EmulatorConfig(image_size=args.size_mib * MiB, segment_size=args.segment_mib * MiB,
                            export_speed=args.task_mib_s * MiB, pending_delay=0.1, tick=0.02,
                            seed_all_regions=False)
    with tempfile.TemporaryDirectory() as tmp, start_emulator(config=config) as emu, \
            imgtools.connect(username="demo", api_key="demo-key",
                             identity_url=emu.identity_url, log=False,
                             poll=imgtools.PollPolicy.fast()) as client:
        store = TransferStore(Path(tmp) / "log.sqlite")
        began = time.perf_counter()
        handle = client.transfer(image_id_for("100001", "web"), to="IAD", store=store,
                                 cleanup="both")
        total = time.perf_counter() - began
        rec = handle.record
        print(f"transfer ORD -> IAD, {rec.copy_bytes or 0} bytes in {rec.copy_segments} "
              f"segments, status {rec.status}")
        for step in STEPS:
            spans = [s.ended_at - s.started_at for s in handle.steps()
                     if s.step == step and s.ended_at is not None]
            print(f"  {step:<12} {sum(spans):8.3f} s")
        mib_s = (rec.copy_bytes or 0) / MiB / rec.copy_seconds if rec.copy_seconds else 0.0
        print(f"  {'total':<12} {total:8.3f} s   (copy {mib_s:.0f} MiB/s)")
    return 0 if rec.status == "done" else 1


if __name__ == "__main__":
    sys.exit(main())

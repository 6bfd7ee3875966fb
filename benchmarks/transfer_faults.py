"""Transfers under faults on the emulator: every one ends done (at once or after resumes), with
no duplicate export or import, no image with wrong bytes, nothing left behind after cleanup,
and its lineage complete.

    .venv/bin/python benchmarks/transfer_faults.py [--transfers 20] [--seed 13]

Faults (seeded): 503s, connections dropped before and after the request was handled (lost
answers, POSTs included), response bodies cut, tokens that live 3 seconds; every fourth
transfer is also stopped mid-copy (a ``BaseException`` from the progress callback, as a killed
process leaves it: nothing more runs, nothing is recorded as done) and resumed by a new
client. A failed run is resumed (a new client each time, as a new process would) up to
``--resumes`` times.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import imgtools
from imgtools.emulator import EmulatorConfig, start_emulator
from imgtools.transfer import TransferFailed, TransferStore

SLUGS = ("web", "db", "small")
TARGETS = ("IAD", "DFW")


class Killed(BaseException):
    """A process killed mid-copy."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transfers", type=int, default=20)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--resumes", type=int, default=10)
    args = parser.parse_args(argv)
    config = EmulatorConfig(pending_delay=0.1, export_speed=64 * 1024 * 1024,
                            image_size=1024 * 1024, segment_size=128 * 1024, tick=0.01,
                            token_ttl=3.0)
    faults: dict[str, Any] = {"error_503": 0.03, "drop_before": 0.01, "drop_after": 0.01,
                              "cut_body": 0.02, "seed": args.seed}
    figures: Counter[str] = Counter()
    with tempfile.TemporaryDirectory() as tmp, start_emulator(config=config,
                                                              subprocess=True) as emu:
        store = TransferStore(Path(tmp) / "log.sqlite")

        def connect() -> imgtools.Client:
            return imgtools.connect(username="demo", api_key="demo-key",
                                    identity_url=emu.identity_url, log=False,
                                    poll=imgtools.PollPolicy.fast(), retries=8)

        created_before = int(emu.stats()["tasks_created"])
        emu.set_faults(**faults)
        ids: list[str] = []
        for n in range(args.transfers):
            image = emu.image_id(SLUGS[n % len(SLUGS)])
            container = f"soak-{n}"
            kill = n % 4 == 3
            half = [0]

            def progress(done: int, total: int, kill: bool = kill, half: list[int] = half
                         ) -> None:
                if kill and not half[0] and done > total // 2:
                    half[0] = 1
                    raise Killed

            transfer_id = None
            with connect() as client:
                try:
                    handle = client.transfer(image, to=TARGETS[n % 2], container=container,
                                             cleanup="both", listing_delay=0, store=store,
                                             progress=progress, wait=False)
                    transfer_id = handle.id
                    handle.run()
                    figures["done at once"] += 1
                except (TransferFailed, Killed, imgtools.ImgToolsError) as exc:
                    kind = "killed mid-copy" if isinstance(exc, Killed) else "failed, resumable"
                    figures[kind] += 1
            if transfer_id is None:
                figures["refused before a record"] += 1
                continue
            ids.append(transfer_id)
            for _ in range(args.resumes):
                rec = store.get(transfer_id)
                assert rec is not None
                if rec.status == "done":
                    break
                with connect() as client:
                    try:
                        client.resume_transfer(transfer_id, listing_delay=0, store=store)
                        figures["done on resume"] += 1
                    except (TransferFailed, imgtools.ImgToolsError):
                        figures["resume failed again"] += 1
        emu.set_faults(error_503=0.0, drop_before=0.0, drop_after=0.0, cut_body=0.0)
        created = int(emu.stats()["tasks_created"]) - created_before
        records = [store.get(i) for i in ids]
        done = [r for r in records if r is not None and r.status == "done"]
        wrong, leftovers = 0, 0
        with connect() as client:
            for r in done:
                target = client.in_region(r.target_region or "")
                with target:
                    new = target.get_image(r.target_image or "")
                    data = b"".join(target.image_file(new.id))
                    if hashlib.md5(data, usedforsecurity=False).hexdigest() != r.copy_md5:
                        wrong += 1
                    for side, container in ((client, r.source_container),
                                            (target, r.target_container)):
                        with contextlib.suppress(imgtools.NotFound):
                            leftovers += len(list(side.files.objects(container)))
        lineage = sum(1 for r in done if all((r.source_region, r.source_account, r.source_image,
                                              r.import_task, r.target_region, r.target_account,
                                              r.target_image, r.copy_bytes, r.copy_md5)))
        exports = sum(1 for r in done if not r.export_reused)
        print(f"transfers: {len(ids)}, done: {len(done)}")
        for key, value in sorted(figures.items()):
            print(f"  {key}: {value}")
        print(f"tasks created: {created} (a transfer needs {exports} exports + {len(done)} "
              f"imports = {exports + len(done)}): duplicates {created - exports - len(done)}")
        print(f"images with wrong bytes: {wrong}; objects left after cleanup: {leftovers}; "
              f"lineage complete: {lineage}/{len(done)}")
        steps = store.steps()
        print(f"step runs: {len(steps)}, failed: {sum(s.outcome == 'failed' for s in steps)}")
    ok = len(done) == args.transfers and wrong == 0 and leftovers == 0 and \
        created == exports + len(done) and lineage == len(done)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

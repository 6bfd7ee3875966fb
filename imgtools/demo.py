"""``make demo``: one export, end to end, against a fresh local emulator.

Starts the emulator on a free loopback port with a new data dir, logs in as its demo user
(recording into the audit log beside the emulator's data, never your own),
creates a container, exports a demo image through the tasks API, polls the task to success,
prints the final task JSON and a one-line table row, verifies the export and compares the
downloaded bytes with the image's own; then moves the image to another region (export, streaming
copy, import, metadata, verify, cleanup) and prints each step and the lineage; then stops the
emulator.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import imgtools
from imgtools._embedded import connect_to, start_local
from imgtools.history import tasks_frame

DEMO_CONTAINER = "demo-exports"
DEMO_IMAGE_NAME = "web01"
#: Where the demo moves its image (the emulator's regions: ORD, the default, DFW and IAD).
DEMO_TARGET_REGION = "IAD"


def _md5_file(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def main() -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="imgtools-demo-") as tmp:
        work = Path(tmp)
        with start_local(data_dir=work / "emulator") as emu:
            client = connect_to(emu)
            print(f"emulator  {emu.url}  (identity {emu.identity_url}, user "
                  f"{emu.config.users[0].username}, audit log {client.log})")
            with client:
                image = next(i for i in client.images() if (i.name or "").startswith(
                    DEMO_IMAGE_NAME))
                print(f"image     {image.id}  {image.name!r}  {image.size} bytes")
                created = client.files.create_container(DEMO_CONTAINER)
                print(f"container {DEMO_CONTAINER} ({'created' if created else 'exists'})")

                handle = client.begin_export(image.id, DEMO_CONTAINER)
                print(f"task      {handle.id} created; polling")
                seen: list[str] = []

                def on_update(task: imgtools.Task) -> None:
                    if not seen or seen[-1] != task.status.value:
                        seen.append(task.status.value)
                        print(f"          {task.status.value}")

                final = handle.wait(timeout=120, on_update=on_update)
                print(json.dumps(final.to_json(), indent=2, sort_keys=True))
                row = tasks_frame([final])[["id", "type", "status", "duration", "image_id",
                                            "export_location"]]
                print(row.to_string(index=False))

                report = client.verify_export(final)
                print(f"verify    {report}")
                dest = work / f"{image.id}.vhd"
                client.download_export(final, dest, progress=False)
                digest = hashlib.md5(usedforsecurity=False)
                for chunk in client.image_file(image.id):
                    digest.update(chunk)
                image_md5 = digest.hexdigest()
                export_md5 = _md5_file(dest)
                same = image_md5 == export_md5 and dest.stat().st_size == image.size
                print(f"bytes     export md5 {export_md5}, image md5 {image_md5}: "
                      f"{'identical' if same else 'DIFFERENT'}")

                moved = client.transfer(image.id, to=DEMO_TARGET_REGION, cleanup="both")
                print(f"transfer  {moved.id}: {client.region} {image.id} -> "
                      f"{DEMO_TARGET_REGION} {moved.target_image} ({moved.status})")
                for step in moved.steps():
                    took = (step.ended_at or step.started_at) - step.started_at
                    print(f"          {step.step:<12} {step.outcome:<8} {took:6.2f} s"
                          f"{'  ' + step.detail if step.detail else ''}")
        moved_ok = moved.status == "done"
        print(f"done in {time.monotonic() - started:.1f} s; emulator stopped")
    return 0 if report.ok and same and moved_ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Download a 1 GiB Dynamic Large Object from the emulator: imgtools vs curl, same run.

    .venv/bin/python benchmarks/download.py [--size-mib 1024] [--segments 10] [--rounds 3]
                                            [--segment-mib 1000]

``--segment-mib 1000`` lays the export out as Cloud Images does (1000 MiB segments, the last
one shorter: 1000 + 24 MiB for 1 GiB); by default it is cut into ``--segments`` equal ones.

The export layout (segments ``<uuid>.vhd-00001``... plus a zero-byte manifest) is uploaded
through the Swift API, then downloaded, alternating the contenders each round:

- ``disk (dd direct)``: no download; ``dd`` writing as many bytes with ``O_DIRECT`` and an
  fsync: the most this disk takes durably, the ceiling for every row that fsyncs;
- ``curl``: one GET through the manifest (the server concatenates the segments), no checks;
- ``curl + fsync``: the same, then ``sync FILE`` (fsync): the bytes are on disk when it ends;
- ``curl + md5sum``: curl, then an MD5 of the file, the nearest thing to verifying it;
- ``imgtools``: ``download_export`` segment by segment, each MD5-checked, into ``.part``,
  then renamed (the default: no fsync, as curl), with 1 and with 2 segments at a time; and
  with 2 segments and ``fsync=True``, flushed to disk before the rename.

Each contender runs in its own process, so its peak RSS is its own. A first, uncounted round
warms the machine up (page cache, first-touch memory). Prints MiB/s (median of the rounds),
the ratio to curl's throughput, to the like-for-like curl (``curl + fsync`` for the row
that fsyncs), and peak memory.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from imgtools.emulator import EmulatorConfig, start_emulator

MiB = 1024 * 1024

CHILD = r"""
import sys, time, imgtools
endpoint, url, token, location, dest, workers, fsync = sys.argv[1:8]
# The client's own stack: auth, retry transport, Cloud Files transport, Files.
client = imgtools.connect(endpoint=endpoint, token=token, files_endpoint=url, log=False)
t0 = time.perf_counter()
client.files.download_export(location, dest, workers=int(workers), fsync=fsync == "1")
print(time.perf_counter() - t0)
"""

CONTENDERS = ["disk (dd direct)", "curl", "curl + fsync", "curl + md5sum", "imgtools x1",
              "imgtools x2", "imgtools x2 fsync"]
LIKE_FOR_LIKE = {"imgtools x1": "curl", "imgtools x2": "curl",
                 "imgtools x2 fsync": "curl + fsync"}


def upload(storage: str, token: str, container: str, name: str, size: int,
           per: int) -> str:
    """Segments of ``per`` bytes (the last one shorter) and their manifest."""
    headers = {"X-Auth-Token": token}
    with httpx.Client(base_url=storage + "/", headers=headers, timeout=120) as http:
        http.put(container).raise_for_status()
        left, n = size, 1
        rng = hashlib.sha256(b"imgtools-benchmark")
        while left > 0:
            chunk = min(per, left)
            # Cheap, non-repeating bytes: a hash chain expanded to the segment size.
            rng.update(n.to_bytes(4, "big"))
            block = rng.digest() * (MiB // 32)
            body = (block * (chunk // len(block) + 1))[:chunk]
            http.put(f"{container}/{name}-{n:05d}", content=body).raise_for_status()
            left -= chunk
            n += 1
        http.put(f"{container}/{name}", content=b"",
                 headers={"X-Object-Manifest": f"{container}/{name}-"}).raise_for_status()
    return f"{container}/{name}"


def run_measured(cmd: list[str]) -> tuple[str, int]:
    """Run ``cmd``; its stdout and its peak RSS in KiB (``VmHWM``, polled: ``ru_maxrss``
    would count the pages a child inherits from this fat parent before exec)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    peak = 0
    status = Path(f"/proc/{proc.pid}/status")
    while proc.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except (OSError, ValueError):
            pass
        time.sleep(0.005)
    out = proc.stdout.read() if proc.stdout else ""
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed with {proc.returncode}")
    return out, peak


def run_curl(url: str, token: str, dest: Path) -> tuple[float, int]:
    t0 = time.perf_counter()
    _, peak = run_measured(["curl", "-sS", "-f", "-o", str(dest), "-H",
                            f"X-Auth-Token: {token}", url])
    return time.perf_counter() - t0, peak


def run_disk(dest: Path, size: int) -> tuple[float, int]:
    """How fast this disk takes the same bytes durably, with no network and no page cache
    (``dd oflag=direct conv=fsync``): the ceiling for any download that ends with an fsync."""
    t0 = time.perf_counter()
    _, peak = run_measured(["dd", "if=/dev/zero", f"of={dest}", "bs=16M",
                            f"count={size // (16 * MiB)}", "oflag=direct", "conv=fsync",
                            "status=none"])
    return time.perf_counter() - t0, peak


def run_curl_fsync(url: str, token: str, dest: Path) -> tuple[float, int]:
    """curl, then ``sync FILE`` (coreutils fsyncs the named file): as durable as imgtools."""
    t0 = time.perf_counter()
    _, peak = run_measured(["curl", "-sS", "-f", "-o", str(dest), "-H",
                            f"X-Auth-Token: {token}", url])
    run_measured(["sync", str(dest)])
    return time.perf_counter() - t0, peak


def run_curl_md5(url: str, token: str, dest: Path) -> tuple[float, int]:
    """curl, then ``md5sum`` of the file: the same work as a verified download (it still
    checks less: one digest of the whole, with nothing to compare it to)."""
    t0 = time.perf_counter()
    _, peak = run_measured(["curl", "-sS", "-f", "-o", str(dest), "-H",
                            f"X-Auth-Token: {token}", url])
    _, peak2 = run_measured(["md5sum", str(dest)])
    return time.perf_counter() - t0, max(peak, peak2)


def run_imgtools(endpoint: str, storage: str, token: str, location: str, dest: Path,
                 workers: int, fsync: bool) -> tuple[float, int]:
    out, peak = run_measured([sys.executable, "-c", CHILD, endpoint, storage, token, location,
                              str(dest), str(workers), "1" if fsync else "0"])
    return float(out.split()[0]), peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--segments", type=int, default=10)
    parser.add_argument("--segment-mib", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("curl") is None:
        print("curl is needed for the comparison", file=sys.stderr)
        return 2
    size = args.size_mib * MiB
    work = Path(tempfile.mkdtemp(prefix="imgtools-bench-dl-"))
    config = EmulatorConfig(image_size=64 * 1024, max_object_size=size)
    try:
        with start_emulator(config=config, data_dir=work / "emu") as emu:
            token = emu.token()
            storage = emu.storage_url(emu.tenant_of("demo"))
            name = f"{uuid.uuid4()}.vhd"
            per = args.segment_mib * MiB if args.segment_mib else -(-size // args.segments)
            print(f"uploading {args.size_mib} MiB in {-(-size // per)} segments ...", flush=True)
            location = upload(storage, token, "bench", name, size, per)
            url = f"{storage}/{location}"
            results: dict[str, list[float]] = {label: [] for label in CONTENDERS}
            rss: dict[str, int] = {}
            for r in range(args.rounds + 1):
                for label in CONTENDERS:
                    dest = work / "out.vhd"
                    subprocess.run(["sync"], check=True)  # no one pays for another's writeback
                    if label == "disk (dd direct)":
                        elapsed, peak = run_disk(dest, size)
                    elif label == "curl":
                        elapsed, peak = run_curl(url, token, dest)
                    elif label == "curl + fsync":
                        elapsed, peak = run_curl_fsync(url, token, dest)
                    elif label == "curl + md5sum":
                        elapsed, peak = run_curl_md5(url, token, dest)
                    else:
                        elapsed, peak = run_imgtools(emu.image_endpoint, storage, token,
                                                     location, dest, int(label[10]),
                                                     label.endswith(" fsync"))
                    if dest.stat().st_size != size:
                        raise SystemExit(f"{label}: wrong size {dest.stat().st_size}")
                    dest.unlink()
                    if r == 0:
                        continue  # the warm-up round
                    results[label].append(size / MiB / elapsed)
                    rss[label] = max(rss.get(label, 0), peak)
                    print(f"round {r}: {label:22s} {size / MiB / elapsed:7.1f} MiB/s",
                          flush=True)
            medians = {label: statistics.median(speeds) for label, speeds in results.items()}
            print()
            print(f"{'method':22s} {'MiB/s':>8s} {'vs curl':>8s} {'vs like':>8s} {'peak RSS':>10s}")
            for label, med in medians.items():
                like = LIKE_FOR_LIKE.get(label)
                versus = f"{med / medians[like]:8.2f}" if like else f"{'':8s}"
                print(f"{label:22s} {med:8.1f} {med / medians['curl']:8.2f} {versus} "
                      f"{rss[label] / 1024:8.1f} MiB")
            print()
            print("'vs like': against curl doing the same to the disk "
                  "(curl + fsync for the row that fsyncs).")
            print(f"Target: verified download >= 0.9x curl, peak memory < 200 MB. As shipped "
                  f"(2 workers, no fsync): {medians['imgtools x2'] / medians['curl']:.2f}x curl; "
                  f"with fsync=True: {medians['imgtools x2 fsync'] / medians['curl + fsync']:.2f}x "
                  f"curl + fsync ({medians['imgtools x2 fsync'] / medians['curl']:.2f}x curl); "
                  f"peak {max(rss[k] for k in rss if k.startswith('imgtools')) / 1024:.0f} MiB.")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())

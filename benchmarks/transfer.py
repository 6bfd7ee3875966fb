"""The copy step of a transfer on the emulator: imgtools' streaming copy vs download + upload.

    .venv/bin/python benchmarks/transfer.py [--size-mib 1024] [--segments 10]
                                            [--segment-mib 1000] [--rounds 3] [--warmup 1]
                                            [--two-emulators]

A 1 GiB export is laid out in the default region (ORD) as ``benchmarks/download.py`` lays one
out (``--segments`` equal segments, or ``--segment-mib 1000`` as Cloud Images does), then
copied to another region (DFW) of the same emulator (``--two-emulators``: DFW of a second
emulator process, as real regions are separate servers; on 2 cores the three processes then
compete for CPU), alternating the contenders each round:

- ``imgtools``: ``copy_export`` in a child process, timed from outside (start-up and
  log-in included, as the peer's commands are): ``DEFAULT_COPY_WORKERS`` segments at once,
  each GET feeding its PUT, MD5-checked and sent as the ETag, nothing on local disk;
- ``swift download + upload``: what the transfer how-to describes, with python-swiftclient's
  command line: ``swift download`` of the export to a local file, then ``swift upload`` of
  the file to the other region as a DLO with segments of the same size (its defaults: 10
  segment threads, MD5 checked on upload);
- ``ceiling: PUTs from memory``: no source at all, the same number of bytes PUT to the target
  from memory as segments, ``DEFAULT_COPY_WORKERS`` at once: how fast the target takes bytes
  in, which bounds every copy (on the emulator, every region is one process, and its PUT
  intake is far slower than its ``sendfile`` GETs);
- ``floor: MD5 + PUTs from memory``: the same, except that the client hashes every byte as it
  sends it and sends the segment's MD5 as the ``ETag``, as the issue asks of the copy: less
  work than any copy that keeps those checks (no source GET, no start-up, no listing), so its
  ratio to the peer is the most any such copy can reach with this target on this machine.
  Its segments' MD5s are computed before the clock starts (a copy reads them from the source
  listing), so its CPU column counts that pass too.

Each contender runs in its own process(es): its peak RSS (``VmHWM``, polled) and the bytes it
had written to disk (``ru_oublock`` of the finished child from ``wait4``: the same count as
``write_bytes`` in ``/proc/PID/io``, taken when pages are dirtied, so no fsync is needed to
see them) are its own, and so are the CPU seconds it used (``wait4``) and those the emulator
used meanwhile (``/proc/PID/stat``). Prints seconds and MiB/s (median of the rounds), the
ratio (of the medians, and round by round), CPU seconds, disk bytes, RSS and the load average
(other processes on the machine take CPU from both contenders alike).

Where the floor is: every byte is hashed twice (MD5, about 1.4 s of CPU per GiB per pass
here), by the client as it passes and by the target to check the ``ETag``, and the peer's
upload does the same two passes. So both contenders need about the same CPU; imgtools saves
the local file's write and read and runs all its steps at once. On a machine whose cores are
busy anyway the ratio tends to the ratio of CPU seconds, which the summary prints.
Targets (issue 13): the copy >= 2x the peer's download + upload, 0 bytes on local disk,
peak RSS < 100 MiB.
"""

from __future__ import annotations

import argparse
import contextlib
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from download import MiB, upload  # the same layout as the download benchmark

from imgtools._copy import DEFAULT_COPY_WORKERS
from imgtools.emulator import EmulatorConfig, start_emulator

SOURCE, TARGET = "ORD", "DFW"

CHILD = r"""
import sys, time, imgtools
from imgtools._copy import copy_export
src_url, dst_url, image_endpoint, src_token, dst_token, location, target = sys.argv[1:8]
workers = int(sys.argv[8])
# The client's own stack for each region: auth, retry transport, Cloud Files transport.
source = imgtools.connect(endpoint=image_endpoint, token=src_token, files_endpoint=src_url,
                          log=False)
dest = imgtools.connect(endpoint=image_endpoint, token=dst_token, files_endpoint=dst_url,
                        log=False)
t0 = time.perf_counter()
result = copy_export(source.files, location, dest.files, target, listing_delay=0,
                     workers=workers)
elapsed = time.perf_counter() - t0
io = dict(line.split(": ") for line in open("/proc/self/io").read().splitlines())
print(elapsed, io["write_bytes"], result.copied, result.skipped, result.retries)
"""

CEILING = r"""
import hashlib, sys, time
from concurrent.futures import ThreadPoolExecutor
import httpx
from imgtools._bulk import BulkTransport
from imgtools._copy import DEFAULT_COPY_WORKERS
dst_url, token, container, size, per, hashed = sys.argv[1:7]
size, per, hashed = int(size), int(per), hashed == "1"
block = bytes(range(256)) * 4096  # 1 MiB
count = -(-size // per)
def length_of(n):
    return min(per, size - n * per)
def chunks(length):
    left = length
    while left:
        yield block[:min(left, len(block))]
        left -= min(left, len(block))
etags = {}
if hashed:  # before the clock: what a copy reads from the source listing
    for n in range(count):
        digest = hashlib.md5(usedforsecurity=False)
        for piece in chunks(length_of(n)):
            digest.update(piece)
        etags[n] = digest.hexdigest()
def put(n):
    length = length_of(n)
    headers = {"X-Auth-Token": token, "Content-Length": str(length)}
    if not hashed:
        http.put(f"{dst_url}/{container}/s-{n:05d}", content=chunks(length),
                 headers=headers).raise_for_status()
        return
    # As the copy does: hash every byte on its way out, send the listed MD5 as the ETag
    # (the target hashes too, and refuses a mismatch), compare at the end.
    digest = hashlib.md5(usedforsecurity=False)
    def body():
        for piece in chunks(length):
            digest.update(piece)
            yield piece
    headers["ETag"] = etags[n]
    http.put(f"{dst_url}/{container}/s-{n:05d}", content=body(),
             headers=headers).raise_for_status()
    if digest.hexdigest() != etags[n]:
        raise SystemExit("the bytes sent do not hash to the ETag")
with httpx.Client(transport=BulkTransport(), timeout=300) as http:
    http.put(f"{dst_url}/{container}", headers={"X-Auth-Token": token}).raise_for_status()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(DEFAULT_COPY_WORKERS) as pool:
        list(pool.map(put, range(count)))
print(time.perf_counter() - t0)
"""

CEILING_LABEL, FLOOR_LABEL = "ceiling: PUTs from memory", "floor: MD5 + PUTs from memory"
CONTENDERS = ["imgtools", "swift download + upload", FLOOR_LABEL, CEILING_LABEL]


CPU_SECONDS: list[float] = [0.0]  # CPU seconds of the children run since the last reset


def cpu_of(pid: int) -> float:
    """User + system CPU seconds a running process has used (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_child(cmd: list[str]) -> tuple[str, int, int]:
    """Run ``cmd``; its stdout, peak RSS in KiB (``VmHWM``, polled: ``ru_maxrss`` would count
    pages a child inherits from this fat parent before exec) and bytes it wrote to disk. Its
    CPU seconds are added to ``CPU_SECONDS``."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    peak = 0
    status = Path(f"/proc/{proc.pid}/status")
    while True:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except (OSError, ValueError):
            pass
        pid, code, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        time.sleep(0.005)
    proc.returncode = os.waitstatus_to_exitcode(code)
    CPU_SECONDS[0] += usage.ru_utime + usage.ru_stime
    out = proc.stdout.read() if proc.stdout else ""
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:3]} failed with {proc.returncode}")
    return out, peak, usage.ru_oublock * 512


def clear(storage: str, token: str, container: str) -> None:
    """Delete ``container`` and everything in it (each round copies into a fresh one)."""
    with httpx.Client(base_url=storage + "/", headers={"X-Auth-Token": token},
                      timeout=120) as http:
        listed = http.get(container, params={"format": "json"})
        if listed.status_code == 404:
            return
        listed.raise_for_status()
        for item in listed.json() if listed.status_code == 200 else []:
            http.delete(f"{container}/{item['name']}").raise_for_status()
        http.delete(container).raise_for_status()


def assembled_md5(storage: str, token: str, location: str) -> tuple[int, str]:
    """Size and MD5 of what a GET of the manifest gives."""
    import hashlib

    digest = hashlib.md5(usedforsecurity=False)
    size = 0
    with httpx.Client(headers={"X-Auth-Token": token}, timeout=120) as http, \
            http.stream("GET", f"{storage}/{location}") as response:
        response.raise_for_status()
        for chunk in response.iter_bytes(4 * MiB):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def run_imgtools(src: str, dst: str, image_endpoint: str, tokens: tuple[str, str],
                 location: str, target: str, workers: int) -> tuple[float, int, int, str]:
    t0 = time.perf_counter()
    out, peak, written = run_child([sys.executable, "-c", CHILD, src, dst, image_endpoint,
                                    *tokens, location, target, str(workers)])
    # Timed from outside, process start-up included, as the peer's two commands are.
    elapsed = time.perf_counter() - t0
    inside, self_written, _copied, skipped, retries = out.split()
    if int(skipped):
        raise SystemExit("imgtools skipped segments: the target was not fresh")
    return (elapsed, peak, max(written, int(self_written)),
            f"retries={retries} (copy_export alone: {float(inside):.2f} s)")


def run_ceiling(dst: str, token: str, container: str, size: int, per: int, *,
                hashed: bool) -> tuple[float, int, int, str]:
    """The same bytes PUT from memory to the target, as many at once as imgtools copies, no
    source at all: how fast the target takes segments in, the most any copy can reach.
    ``hashed``: the client also hashes every byte it sends and sends the ETag, as the issue
    asks of the copy: the least time any copy keeping those checks can take here."""
    out, peak, written = run_child([sys.executable, "-c", CEILING, dst, token, container,
                                    str(size), str(per), "1" if hashed else "0"])
    return float(out.split()[0]), peak, written, ""


def run_peer(src: str, dst: str, tokens: tuple[str, str], location: str, target: str,
             per: int, work: Path) -> tuple[float, int, int, str]:
    container, name = location.split("/")
    tcontainer, tname = target.split("/")
    local = work / "peer" / name
    local.parent.mkdir(exist_ok=True)
    swift = str(Path(sys.executable).with_name("swift"))
    t0 = time.perf_counter()
    _, peak1, written1 = run_child([swift, "--os-auth-token", tokens[0], "--os-storage-url",
                                    src, "download", container, name, "-o", str(local)])
    t1 = time.perf_counter()
    _, peak2, written2 = run_child([swift, "--os-auth-token", tokens[1], "--os-storage-url",
                                    dst, "upload", "--use-dlo",
                                    "--segment-size", str(per), "--object-name", tname,
                                    tcontainer, str(local)])
    t2 = time.perf_counter()
    local.unlink()
    return (t2 - t0, max(peak1, peak2), written1 + written2,
            f"(download {t1 - t0:.2f} s, upload {t2 - t1:.2f} s)")


def md5_seconds(size: int) -> float:
    """CPU seconds one MD5 pass over ``size`` bytes takes on this machine (OpenSSL's)."""
    import hashlib

    block = bytes(4 * MiB)
    digest = hashlib.md5(usedforsecurity=False)
    started = time.process_time()
    for _ in range(64):
        digest.update(block)
    return (time.process_time() - started) * size / (64 * len(block))


def _load() -> str:
    """The 1-minute load average: other processes on the machine take CPU from both sides."""
    return f"{os.getloadavg()[0]:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--segments", type=int, default=10)
    parser.add_argument("--segment-mib", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="uncounted rounds first")
    parser.add_argument("--workers", type=int, default=DEFAULT_COPY_WORKERS,
                        help="segments imgtools copies at once")
    parser.add_argument("--two-emulators", action="store_true",
                        help="the target region in a second emulator process (by default one "
                             "event loop serves the source's GETs and takes the target's PUTs)")
    args = parser.parse_args()
    size = args.size_mib * MiB
    per = args.segment_mib * MiB if args.segment_mib else -(-size // args.segments)
    work = Path(tempfile.mkdtemp(prefix="imgtools-bench-xfer-"))
    config = EmulatorConfig(image_size=64 * 1024, max_object_size=max(size, per))
    try:
        with contextlib.ExitStack() as stack:
            # Real regions are different servers; on one small machine, though, a second
            # emulator process competes with the first and the client for the same cores.
            emu = stack.enter_context(start_emulator(config=config, data_dir=work / "emu"))
            far = stack.enter_context(start_emulator(config=config, data_dir=work / "emu2")) \
                if args.two_emulators else emu
            tenant = emu.tenant_of("demo")
            tokens = (emu.token(), far.token())
            token = tokens[1]  # the target's, for checking and clearing it
            src, dst = emu.storage_url(tenant, SOURCE), far.storage_url(tenant, TARGET)
            name = f"{uuid.uuid4()}.vhd"
            print(f"uploading {args.size_mib} MiB in {-(-size // per)} segments to {SOURCE} "
                  f"({'one emulator' if far is emu else 'two emulator processes'}) ...",
                  flush=True)
            location = upload(src, tokens[0], "bench", name, size, per)
            expected = assembled_md5(src, tokens[0], location)
            speeds: dict[str, list[float]] = {label: [] for label in CONTENDERS}
            seconds: dict[str, list[float]] = {label: [] for label in CONTENDERS}
            cpu: dict[str, list[tuple[float, float]]] = {label: [] for label in CONTENDERS}
            rss: dict[str, int] = {}
            disk: dict[str, int] = {}
            for r in range(args.warmup + args.rounds):
                for label in CONTENDERS:
                    tcontainer = f"copy-{r}-{CONTENDERS.index(label)}"
                    target = f"{tcontainer}/{name}"
                    subprocess.run(["sync"], check=True)  # no one pays for another's writeback
                    servers = {e.pid for e in (emu, far) if e.pid is not None}
                    CPU_SECONDS[0] = 0.0
                    server_cpu = -sum(cpu_of(pid) for pid in servers)
                    if label == "imgtools":
                        elapsed, peak, written, note = run_imgtools(
                            src, dst, emu.image_endpoint, tokens, location, target,
                            args.workers)
                    elif label in (CEILING_LABEL, FLOOR_LABEL):
                        elapsed, peak, written, note = run_ceiling(
                            dst, token, tcontainer, size, per, hashed=label == FLOOR_LABEL)
                    else:
                        elapsed, peak, written, note = run_peer(src, dst, tokens, location,
                                                                target, per, work)
                    server_cpu += sum(cpu_of(pid) for pid in servers)
                    client_cpu = CPU_SECONDS[0]
                    if label not in (CEILING_LABEL, FLOOR_LABEL):
                        got = assembled_md5(dst, token, target)
                        if got != expected:
                            raise SystemExit(f"{label}: the copy is {got}, not {expected}")
                    clear(dst, token, tcontainer)
                    clear(dst, token, tcontainer + "_segments")
                    counted = r >= args.warmup
                    print(f"round {r + 1 - args.warmup if counted else 'warm-up'}: {label:24s} "
                          f"{elapsed:6.2f} s {size / MiB / elapsed:6.1f} MiB/s  CPU client "
                          f"{client_cpu:5.2f} s emulator {server_cpu:5.2f} s  disk "
                          f"{written / MiB:6.1f} MiB  RSS {peak / 1024:5.1f} MiB  "
                          f"load {_load()} {note}", flush=True)
                    if not counted:
                        continue
                    speeds[label].append(size / MiB / elapsed)
                    seconds[label].append(elapsed)
                    cpu[label].append((client_cpu, server_cpu))
                    rss[label] = max(rss.get(label, 0), peak)
                    disk[label] = max(disk.get(label, 0), written)
            medians = {label: statistics.median(s) for label, s in speeds.items()}
            peer = medians["swift download + upload"]
            # Each round's own ratio: the load of other processes changes between rounds.
            ratios = [p / i for i, p in zip(seconds["imgtools"],
                                            seconds["swift download + upload"], strict=True)]
            print()
            print(f"{'copy step':26s} {'s':>6s} {'MiB/s':>7s} {'vs peer':>8s} {'CPU client':>11s} "
                  f"{'CPU emulator':>13s} {'disk written':>13s} {'peak RSS':>9s}")
            for label, med in medians.items():
                client_cpu = statistics.median(c for c, _ in cpu[label])
                server_cpu = statistics.median(e for _, e in cpu[label])
                print(f"{label:26s} {statistics.median(seconds[label]):6.2f} {med:7.1f} "
                      f"{med / peer:8.2f} {client_cpu:9.2f} s {server_cpu:11.2f} s "
                      f"{disk[label] / MiB:9.1f} MiB {rss[label] / 1024:5.1f} MiB")
            print(f"imgtools vs peer, round by round: "
                  f"{', '.join(f'{x:.2f}x' for x in ratios)}; load average now {_load()}")
            print()
            work_of = {label: sum(map(statistics.median, zip(*cpu[label], strict=True)))
                       for label in ("imgtools", "swift download + upload")}
            cores = os.cpu_count() or 1
            print(f"CPU per copy, client + emulator: imgtools {work_of['imgtools']:.2f} s, peer "
                  f"{work_of['swift download + upload']:.2f} s (each MD5 pass of "
                  f"{args.size_mib} MiB alone: {md5_seconds(size):.2f} s; the copy makes two, the "
                  f"client's and the target's, as the peer's upload does). On {cores} cores the "
                  f"copy cannot take less than {work_of['imgtools'] / cores:.2f} s; on a machine "
                  f"whose cores are all busy the ratio tends to the CPU ratio, "
                  f"{work_of['swift download + upload'] / work_of['imgtools']:.2f}x.")
            ceiling = medians[CEILING_LABEL]
            print(f"imgtools reaches {medians['imgtools'] / ceiling:.2f} of what the target takes "
                  f"in at all ({ceiling:.0f} MiB/s, timed inside the PUTs). A copy that overlaps "
                  f"reading and writing at the target's intake speed beats download-then-upload "
                  f"by 1 + (shorter step / longer step): 2x only when both take as long.")
            floor = medians[FLOOR_LABEL]
            print(f"The floor, PUTs from memory that hash every byte on the way out and send the "
                  f"ETag (no source, no start-up: less work than any copy keeping the checks), "
                  f"is {floor / peer:.2f}x the peer: the most any such copy can reach on this "
                  f"machine with this target. imgtools reaches {medians['imgtools'] / floor:.2f} "
                  f"of it.")
            print(f"{args.size_mib} MiB in {-(-size // per)} segments, {SOURCE} -> {TARGET}, "
                  f"median of {args.rounds} round(s). Targets: >= 2x the peer, 0 bytes on disk, "
                  f"peak RSS < 100 MiB. imgtools: {medians['imgtools'] / peer:.2f}x, "
                  f"{disk['imgtools']} bytes on disk, {rss['imgtools'] / 1024:.0f} MiB.")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())

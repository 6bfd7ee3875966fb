"""Transfers under faults, with both sides killed: the scenario of issue 13's "Measured" point,
shared by ``tests/system/test_transfer_faults.py`` (small images, asserted) and
``benchmarks/transfer_faults.py`` (bigger images, figures printed).

The emulator (a subprocess over a data dir that survives restarts) answers with seeded faults:
503s, connections dropped before and after the request was handled (lost answers, POSTs
included), response bodies cut halfway; its tokens live three seconds. Then:

1. **Process A** starts the transfers: one ``transfer_all`` per round of distinct images (each
   round its own container and target region, IAD or DFW), the rounds on threads, one client
   each, the transfers recorded in A's audit log. Once every transfer has started, the first
   copy to pass half its bytes freezes the process (every copy's progress callback blocks from
   then on, connections open mid-segment) and A is SIGKILLed.
2. **Process B** resumes every unfinished transfer from the audit log alone, one after the
   other, each through a new client (``resume_transfer``; a failed resume is resumed again,
   as a person would). In the copy of a transfer A had not started copying (the middle one of
   those, so B finishes others first), past half its bytes, B freezes; the emulator is
   SIGKILLed and restarted on its data dir meanwhile, then B goes on. The next time B is
   waiting for an import task (``import_wait``: the task posted and recorded), B freezes
   again and is SIGKILLed; the emulator is SIGKILLed and restarted once more, that import
   task still live.
3. **Process C** resumes whatever is still unfinished, to the end (cleanup ``both``), through
   ``AsyncClient.resume_transfer`` (the same steps driven by the async driver).

Then, faults cleared, ``check`` reads the service and the audit log: every transfer done;
exactly one export and one import task per transfer in the service (none failed, none
extra); every new image's size and checksum those of the source image, and its bytes hashing
to that checksum; no leftover (``Client.leftovers``) and no object at all in the transfer
containers of any region; every step of every transfer recorded done, the lineage columns
filled, ``came_from``/``went_to`` answering.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

import imgtools
from imgtools import TaskLog
from imgtools.emulator import EmulatorConfig, EmulatorHandle, FaultSettings
from imgtools.emulator.seed import IMAGE_SPECS
from imgtools.transfer import STEPS, TransferStore, came_from, transfers_frame, went_to

#: The images moved, in each round (distinct: a round's exports share its container).
SLUGS = ("web", "db", "small")
#: Target regions, by round.
TARGETS = ("IAD", "DFW")
#: The fault draws are seeded: the same sequence of draws every run (the order requests reach
#: the emulator still varies with the threads).
SEED = 20261201
FAULTS = FaultSettings(error_503=0.05, drop_before=0.02, drop_after=0.02, cut_body=0.03,
                       seed=SEED)
#: Tries per resume loop: a transfer failing this often in a row is reported unfinished.
RESUMES = 10
#: Seconds the emulator stays down between its SIGKILL and its restart.
DOWN_SECONDS = 1.0
REGIONS = ("ORD", *TARGETS)
#: Tries to read a task's status through the faults (for a figure).
STATUS_TRIES = 30


@dataclass(frozen=True, slots=True)
class Scenario:
    """How many transfers, and how big (``web`` is ``image_size``, ``db`` half, ``small`` a
    quarter)."""

    transfers: int = 20
    image_size: int = 2 * 1024 * 1024
    segment_size: int = 256 * 1024
    export_speed: float = 32 * 1024 * 1024
    faults: FaultSettings = FAULTS
    token_ttl: float = 3.0

    def config(self) -> EmulatorConfig:
        return EmulatorConfig(pending_delay=0.2, export_speed=self.export_speed,
                              image_size=self.image_size, segment_size=self.segment_size,
                              tick=0.02, token_ttl=self.token_ttl, faults=self.faults,
                              regions=REGIONS)

    def rounds(self) -> list[dict[str, Any]]:
        """``transfer_all`` calls: images (by slug), target region, container."""
        out: list[dict[str, Any]] = []
        left, n = self.transfers, 0
        while left > 0:
            slugs = list(SLUGS[:min(left, len(SLUGS))])
            out.append({"slugs": slugs, "to": TARGETS[n % len(TARGETS)],
                        "container": f"faults-{n:02d}"})
            left -= len(slugs)
            n += 1
        return out


#: Process A: the rounds of transfer_all on threads; frozen mid-copy (then SIGKILLed).
START = """
import json, sys, threading
import imgtools
from imgtools import TaskLog
identity_url, log_path = sys.argv[1:3]
plan, total = json.loads(sys.argv[3]), int(sys.argv[4])
lock = threading.Lock()
preflights = [0]
frozen = threading.Event()

def say(line):
    with lock:
        sys.stdout.write(line + "\\n")
        sys.stdout.flush()

def on_step(step, outcome):
    if step == "preflight" and outcome == "running":
        with lock:
            preflights[0] += 1

def progress(done, total_bytes):
    if not frozen.is_set():
        with lock:
            # Only once every transfer is recorded (its preflight begun): all are resumable.
            ready = preflights[0] >= total and done > total_bytes // 2
            if ready and not frozen.is_set():
                frozen.set()
                sys.stdout.write("frozen-copy\\n")
                sys.stdout.flush()
    if frozen.is_set():
        threading.Event().wait()  # as good as dead: the test SIGKILLs the process

def run(round_):
    with imgtools.connect(username="demo", api_key="demo-key", identity_url=identity_url,
                          log=TaskLog(log_path), retries=10,
                          poll=imgtools.PollPolicy.fast()) as client:
        handles = client.transfer_all(round_["images"], to=round_["to"],
                                      container=round_["container"], cleanup="both",
                                      listing_delay=0, progress=progress, on_step=on_step)
    say("round " + json.dumps([h.status for h in handles]))

threads = [threading.Thread(target=run, args=(r,)) for r in plan]
for t in threads:
    t.start()
for t in threads:
    t.join()
say("finished")
"""

#: Processes B and C: resume every unfinished transfer, one after the other. B (``freeze``)
#: stops mid-copy until told to go on (stdin), then freezes at its next import wait; C
#: (``async``) resumes through ``AsyncClient`` (the same steps, the async driver).
RESUME = """
import asyncio, json, sys, threading
import imgtools
from imgtools import ImgToolsError, TaskLog
from imgtools.transfer import STEPS, TransferFailed, TransferStore
identity_url, log_path, mode, resumes = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
store = TransferStore(log_path)
records = [r for r in store.records() if r.status != "done"]
ids = [r.id for r in records]
copied = {s.transfer_id for s in store.steps() if s.step == "copy" and s.outcome == "done"}
before_copy = [i for i in ids if store.first_start(i, "copy") is None]
# The middle one: B finishes the transfers before it (A's cut-off copies among them) first.
# (None left whose copy A never began: one A cut off, whose copy B runs again.)
pick = before_copy or [i for i in ids if i not in copied]
armed = pick[len(pick) // 2] if mode == "freeze" else None
state = {"current": None, "went_on": False, "copy_frozen": None}
print(f"resuming {len(ids)} armed {armed}", flush=True)

def progress(done, total):
    if state["current"] == armed and not state["copy_frozen"] and done > total // 2:
        state["copy_frozen"] = armed
        print(f"frozen-copy {armed} {done} {total}", flush=True)
        sys.stdin.readline()  # the emulator is killed and restarted meanwhile
        state["went_on"] = True

def on_step(step, outcome):
    if state["went_on"] and step == "import_wait" and outcome == "running":
        print(f"frozen-import {state['current']}", flush=True)
        threading.Event().wait()  # as good as dead: the test SIGKILLs the process

out = {"resumed": len(ids), "runs": 0, "failed_runs": [], "not_done": []}
for tid in ids:
    state["current"] = tid
    for _ in range(resumes):
        if store.get(tid).status == "done":
            break
        out["runs"] += 1
        options = dict(username="demo", api_key="demo-key", identity_url=identity_url,
                       log=TaskLog(log_path), retries=10, poll=imgtools.PollPolicy.fast())
        try:
            if mode == "async":  # the same steps, driven by the async client
                async def resume():
                    async with await imgtools.connect_async(**options) as client:
                        await client.resume_transfer(tid, listing_delay=0, store=store)
                asyncio.run(resume())
            else:
                with imgtools.connect(**options) as client:
                    client.resume_transfer(tid, listing_delay=0, store=store,
                                           progress=progress, on_step=on_step)
        except (TransferFailed, ImgToolsError) as exc:
            out["failed_runs"].append(f"{tid}: {type(exc).__name__}: {exc}"[:300])
    if store.get(tid).status != "done":
        out["not_done"].append(tid)
print("summary " + json.dumps(out), flush=True)
"""


@dataclass
class Processes:
    """Client processes started by the scenario; ``close`` kills any still running."""

    workdir: Path
    started: list[subprocess.Popen[str]] = field(default_factory=list)

    def start(self, name: str, script: str, *args: str) -> subprocess.Popen[str]:
        errors = open(self.workdir / f"{name}.stderr", "w")  # noqa: SIM115 - the child's
        child = subprocess.Popen([sys.executable, "-c", script, *args], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=errors, text=True)
        errors.close()
        self.started.append(child)
        return child

    def stderr(self, name: str) -> str:
        path = self.workdir / f"{name}.stderr"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def close(self) -> None:
        for child in self.started:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=30)
            for stream in (child.stdin, child.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()


def _read_until(child: subprocess.Popen[str], prefix: str, what: str, procs: Processes
                ) -> tuple[str, list[str]]:
    """The first line of ``child`` starting with ``prefix``, and the lines before it."""
    assert child.stdout is not None
    seen: list[str] = []
    for line in child.stdout:
        if line.startswith(prefix):
            return line.strip(), seen
        seen.append(line.strip())
    child.wait(timeout=30)
    raise AssertionError(f"{what} ended (exit {child.returncode}) before {prefix!r}:\n"
                         + "\n".join(seen[-20:]) + "\n" + procs.stderr(what))


def _kill(child: subprocess.Popen[str]) -> int:
    child.kill()
    return child.wait(timeout=30)


def _interrupted(store: TransferStore) -> dict[str, int]:
    """Steps begun and never ended (their process died), by step."""
    out: dict[str, int] = {}
    for s in store.steps():
        if s.outcome == "running" and s.ended_at is None:
            out[s.step] = out.get(s.step, 0) + 1
    return out


def run_scenario(emu: EmulatorHandle, workdir: Path, scenario: Scenario) -> dict[str, Any]:
    """Run A, B (with the emulator restart) and C against ``emu`` (a subprocess emulator
    started with ``scenario.config()``); the figures ``check`` needs and prints."""
    log_path = workdir / "audit.sqlite"
    plan = [{"images": [emu.image_id(s) for s in r["slugs"]], "to": r["to"],
             "container": r["container"]} for r in scenario.rounds()]
    procs = Processes(workdir)
    figures: dict[str, Any] = {"transfers": scenario.transfers, "seed": scenario.faults.seed}
    faults: collections.Counter[str] = collections.Counter()  # counted by the emulator
    began = time.monotonic()
    try:
        # -- A: start them all, frozen mid-copy, SIGKILLed ----------------------------------
        a = procs.start("A", START, emu.identity_url, str(log_path), json.dumps(plan),
                        str(scenario.transfers))
        _, lines = _read_until(a, "frozen-copy", "A", procs)
        figures["a_exit"] = _kill(a)
        figures["a_rounds_finished"] = sum(1 for line in lines if line.startswith("round"))
        store = TransferStore(log_path)
        figures["recorded_at_a_kill"] = len(store.records())
        figures["done_at_a_kill"] = sum(1 for r in store.records() if r.status == "done")
        figures["interrupted_at_a_kill"] = _interrupted(store)
        # Nothing an unfinished transfer still needs is ever listed as a leftover (the
        # listing goes through the faults, as a person's would).
        figures["leftovers_listed_at_a_kill"] = _leftovers(emu, log_path)
        figures["objects_at_a_kill"] = sum(_objects(emu, log_path, store).values())
        figures["seconds_a"] = round(time.monotonic() - began, 1)

        # -- B: resume; the emulator SIGKILLed and restarted mid-copy; B SIGKILLed mid-import
        b = procs.start("B", RESUME, emu.identity_url, str(log_path), "freeze", str(RESUMES))
        first, _ = _read_until(b, "resuming", "B", procs)
        figures["resumed_by_b"] = int(first.split()[1])
        frozen, _ = _read_until(b, "frozen-copy", "B", procs)
        figures["b_frozen_copy"] = frozen
        faults.update(emu.stats()["faults"])  # a killed emulator forgets its counts
        emu.kill()
        time.sleep(DOWN_SECONDS)
        emu.restart()
        figures["emulator_restarts"] = 1
        assert b.stdin is not None
        b.stdin.write("go\n")
        b.stdin.flush()
        frozen_import, _ = _read_until(b, "frozen-import", "B", procs)
        import_transfer = frozen_import.split()[1]
        figures["b_exit"] = _kill(b)
        record = store.get(import_transfer)
        assert record is not None and record.import_task is not None, record
        figures["import_task_at_b_kill"] = _task_status(emu, record.target_region or "",
                                                        record.import_task)
        # The emulator dies too, that import still live (at the restart it starts over).
        faults.update(emu.stats()["faults"])
        emu.kill()
        time.sleep(DOWN_SECONDS)
        emu.restart()
        figures["emulator_restarts"] += 1
        figures["done_at_b_kill"] = sum(1 for r in store.records() if r.status == "done")
        figures["interrupted_at_b_kill"] = {
            step: n - figures["interrupted_at_a_kill"].get(step, 0)
            for step, n in _interrupted(store).items()
            if n > figures["interrupted_at_a_kill"].get(step, 0)}
        figures["seconds_b"] = round(time.monotonic() - began, 1)

        # -- C: resume whatever is left, to the end --------------------------------------------
        c = procs.start("C", RESUME, emu.identity_url, str(log_path), "async", str(RESUMES))
        summary, _ = _read_until(c, "summary", "C", procs)
        c.wait(timeout=60)
        figures["c_exit"] = c.returncode
        out = json.loads(summary.split(" ", 1)[1])
        figures["resumed_by_c"] = out["resumed"]
        figures["c_runs"] = out["runs"]
        figures["c_failed_runs"] = out["failed_runs"]
        figures["not_done"] = out["not_done"]
        figures["seconds_total"] = round(time.monotonic() - began, 1)
        faults.update(emu.stats()["faults"])
        # Over the whole run: how many requests each phase makes (so how many faults it
        # draws) depends on how far A got before its kill, which the machine's load decides.
        figures["faults"] = dict(faults)
    finally:
        procs.close()
    emu.clear_faults()
    figures.update(check(emu, log_path))
    return figures


# -- what the service and the audit log hold ---------------------------------------------------


@contextlib.contextmanager
def _region(emu: EmulatorHandle, region: str) -> Iterator[httpx.Client]:
    """Plain HTTP to a region's Cloud Images, as the demo tenant (no imgtools client)."""
    with httpx.Client(base_url=emu.image_endpoint_for(region) + "/",
                      headers={"X-Auth-Token": emu.token()}, timeout=30.0) as http:
        yield http


def _task_status(emu: EmulatorHandle, region: str, task_id: str) -> str:
    """A task's status while the faults are still on (a figure only: asked until an answer
    gets through, "unknown" if none does)."""
    for _ in range(STATUS_TRIES):
        try:
            with _region(emu, region) as http:
                response = http.get(f"tasks/{task_id}")
                response.raise_for_status()
                return str(response.json()["status"])
        except Exception:  # a fault of the emulator's: ask again
            time.sleep(0.1)
    return "unknown"


def _listed_ids(http: httpx.Client, url: str, key: str) -> list[str]:
    """The ids of every item of a paged Cloud Images listing (``key``: its list), page by page
    through ``next``."""
    ids: list[str] = []
    page_url: str | None = url
    while page_url:
        response = http.get(page_url)
        response.raise_for_status()
        page = response.json()
        ids += [item["id"] for item in page[key]]
        page_url = page.get("next", "").removeprefix("/v2/") or None
    return ids


def _service_tasks(emu: EmulatorHandle, region: str) -> list[dict[str, Any]]:
    """Every task of the demo tenant in ``region``, each with its input."""
    out: list[dict[str, Any]] = []
    with _region(emu, region) as http:
        for task_id in _listed_ids(http, "tasks?limit=1000", "tasks"):
            response = http.get(f"tasks/{task_id}")
            response.raise_for_status()
            out.append(response.json())
    return out


def _client(emu: EmulatorHandle, log_path: Path, region: str) -> imgtools.Client:
    return imgtools.connect(username="demo", api_key="demo-key", identity_url=emu.identity_url,
                            region=region, log=TaskLog(log_path), retries=10)


def _leftovers(emu: EmulatorHandle, log_path: Path) -> dict[str, int]:
    """Objects ``Client.leftovers`` lists, by region (the audit log's transfers protected)."""
    out: dict[str, int] = {}
    for region in REGIONS:
        with _client(emu, log_path, region) as client:
            out[region] = client.leftovers().object_count
    return out


def _objects(emu: EmulatorHandle, log_path: Path, store: TransferStore) -> dict[str, int]:
    """Objects in the transfers' containers, by region."""
    records = store.records()
    containers = {r.source_container for r in records} | {r.target_container for r in records}
    out: dict[str, int] = {}
    for region in REGIONS:
        with _client(emu, log_path, region) as client:
            out[region] = sum(len(list(client.files.objects(c))) for c in containers
                              if client.files.container_exists(c))
    return out


def _images(emu: EmulatorHandle, region: str) -> list[str]:
    """The ids of the demo tenant's own images in ``region``."""
    with _region(emu, region) as http:
        return _listed_ids(http, f"images?owner={emu.tenant_of()}&limit=1000", "images")


def _seeded(emu: EmulatorHandle, region: str) -> set[str]:
    return {emu.image_id(spec.slug, region=region) for spec in IMAGE_SPECS}


def _md5_of_file(emu: EmulatorHandle, region: str, image_id: str) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with _region(emu, region) as http, http.stream("GET", f"images/{image_id}/file") as answer:
        answer.raise_for_status()
        for chunk in answer.iter_bytes():
            digest.update(chunk)
    return digest.hexdigest()


def _image(emu: EmulatorHandle, region: str, image_id: str) -> dict[str, Any]:
    with _region(emu, region) as http:
        response = http.get(f"images/{image_id}")
        response.raise_for_status()
        image: dict[str, Any] = response.json()
        return image


def check(emu: EmulatorHandle, log_path: Path) -> dict[str, Any]:
    """The figures of the end state (faults must be cleared)."""
    store = TransferStore(log_path)
    records = store.records()
    fig: dict[str, Any] = {"recorded": len(records),
                           "done": sum(1 for r in records if r.status == "done")}
    # Tasks: one export and one import per transfer, none failed, none that no transfer owns.
    tasks = {region: _service_tasks(emu, region) for region in REGIONS}
    exports = [t for t in tasks["ORD"] if t["type"] == "export"]
    imports = [t for region in TARGETS for t in tasks[region] if t["type"] == "import"]
    stray = [t["id"] for region in TARGETS for t in tasks[region] if t["type"] != "import"]
    stray += [t["id"] for t in tasks["ORD"] if t["type"] != "export"]
    per_export = {(r.source_image, r.source_container): 0 for r in records}
    per_import = {f"{r.target_container}/{r.source_image}.vhd": 0 for r in records}
    for t in exports:
        key = (t["input"]["image_uuid"], t["input"]["receiving_swift_container"])
        if key in per_export:
            per_export[key] += 1
        else:
            stray.append(t["id"])
    for t in imports:
        key = t["input"]["import_from"]
        if key in per_import:
            per_import[key] += 1
        else:
            stray.append(t["id"])
    fig["export_tasks"], fig["import_tasks"] = len(exports), len(imports)
    fig["duplicate_exports"] = sum(max(0, n - 1) for n in per_export.values())
    fig["duplicate_imports"] = sum(max(0, n - 1) for n in per_import.values())
    fig["missing_tasks"] = sum(1 for n in (*per_export.values(), *per_import.values()) if n == 0)
    fig["failed_tasks"] = sum(1 for t in (*exports, *imports) if t["status"] != "success")
    fig["stray_tasks"] = len(stray)
    # Images: the seeded ones and one per transfer, nothing else (an import run twice, or
    # restarted with the emulator, would leave a second image).
    made = {r.target_image for r in records}
    fig["stray_images"] = sum(1 for region in TARGETS for i in _images(emu, region)
                              if i not in made and i not in _seeded(emu, region))
    # Bytes: the new image is the source image, byte for byte.
    wrong: list[str] = []
    for r in records:
        if r.target_image is None or r.target_region is None:
            wrong.append(f"{r.id}: no target image")
            continue
        source = _image(emu, "ORD", r.source_image)
        new = _image(emu, r.target_region, r.target_image)
        actual = _md5_of_file(emu, r.target_region, r.target_image)
        if not (new["checksum"] == source["checksum"] == actual == r.copy_md5
                and new["size"] == source["size"] == r.copy_bytes):
            wrong.append(f"{r.id}: {new['size']}/{new['checksum']}/{actual} vs source "
                         f"{source['size']}/{source['checksum']}, copied {r.copy_bytes}/"
                         f"{r.copy_md5}")
    fig["wrong_bytes"] = wrong
    # Leftovers: the library's listing, and every object of the transfer containers.
    fig["leftover_objects"] = _leftovers(emu, log_path)
    fig["objects_in_transfer_containers"] = _objects(emu, log_path, store)
    # Lineage: every step recorded done, the lineage columns filled, both questions answered.
    done_steps: dict[str, set[str]] = {r.id: set() for r in records}
    for s in store.steps():
        if s.outcome in ("done", "reused"):
            done_steps.setdefault(s.transfer_id, set()).add(s.step)
    frame = transfers_frame(store=store)
    lineage_columns = ["source_region", "source_account", "source_image", "export_task",
                       "export_location", "copy_bytes", "copy_segments", "copy_md5",
                       "import_task", "target_region", "target_account", "target_image",
                       "target_location", "cleaned"]
    complete = 0
    for r in records:
        row = frame[frame["id"] == r.id]
        if (done_steps[r.id] == set(STEPS) and len(row) == 1
                and not row[lineage_columns].isna().any(axis=None)
                and row["status"].iloc[0] == "done"
                and [x.id for x in came_from(r.target_image or "", store=store)] == [r.id]
                and r.id in [x.id for x in went_to(r.source_image, store=store)]):
            complete += 1
    fig["lineage_complete"] = complete
    fig["step_runs"] = len(store.steps())
    fig["failed_step_runs"] = [f"{s.step}: {s.detail}"[:300] for s in store.steps()
                               if s.outcome == "failed"]
    fig["copy_retries"] = sum(r.copy_retries for r in records)
    fig["copied_bytes"] = sum(r.copy_copied_bytes for r in records)
    fig["export_bytes"] = sum(r.copy_bytes or 0 for r in records)
    # What a resumed copy found already at the target (copied before a kill or a failure).
    fig["bytes_not_copied_again"] = fig["export_bytes"] - fig["copied_bytes"]
    return fig


def summary_line(fig: dict[str, Any]) -> str:
    return ("TRANSFER FAULTS transfers={transfers} done={done} recorded_at_a_kill="
            "{recorded_at_a_kill} done_at_a_kill={done_at_a_kill} resumed_by_b={resumed_by_b} "
            "done_at_b_kill={done_at_b_kill} import_at_b_kill={import_task_at_b_kill} "
            "resumed_by_c={resumed_by_c} c_runs={c_runs} c_failed_runs={n_failed} "
            "exports={export_tasks} imports={import_tasks} duplicate_exports="
            "{duplicate_exports} duplicate_imports={duplicate_imports} stray={stray_tasks} "
            "stray_images={stray_images} "
            "wrong_bytes={n_wrong} leftovers={n_left} lineage={lineage_complete}/{transfers} "
            "step_runs={step_runs} failed_step_runs={n_failed_steps} copy_retries="
            "{copy_retries} seconds={seconds_total}").format(
        n_failed=len(fig["c_failed_runs"]), n_wrong=len(fig["wrong_bytes"]),
        n_failed_steps=len(fig["failed_step_runs"]),
        n_left=sum(fig["leftover_objects"].values())
        + sum(fig["objects_in_transfer_containers"].values()), **fig)


def write_json(fig: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(fig, indent=2, default=str) + "\n")


__all__ = ["FAULTS", "SEED", "Scenario", "check", "run_scenario", "summary_line",
           "write_json"]

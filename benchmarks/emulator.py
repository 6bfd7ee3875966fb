"""Emulator benchmark (run by hand): list and show latency with 100,000 tasks in one tenant.

    .venv/bin/python benchmarks/emulator.py [--tasks 100000] [--shows 3000] [--threads 4]

Seeds the tasks (inserted directly, once), then measures every ``GET /v2/tasks?limit=1000``
page following ``next`` to the end (p50/p95), and ``GET /v2/tasks/{id}`` requests per second
on keep-alive connections. The client is stdlib ``http.client``, so its own cost stays small.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import statistics
import threading
import time

from imgtools.emulator import DEFAULT_REGIONS, DEMO_USER, EmulatorConfig, start_emulator


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _get(conn: http.client.HTTPConnection, path: str, token: str) -> tuple[int, bytes]:
    conn.request("GET", path, headers={"X-Auth-Token": token})
    response = conn.getresponse()
    return response.status, response.read()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--shows", type=int, default=3000, help="GET /v2/tasks/{id} requests")
    parser.add_argument("--threads", type=int, default=4, help="concurrent clients for shows")
    args = parser.parse_args()

    # One tenant in one region: seed_tasks fills every tenant of every region, and only the
    # demo tenant's history is measured.
    config = EmulatorConfig(seed_tasks=args.tasks, image_size=64 * 1024, users=(DEMO_USER,),
                            regions=(DEFAULT_REGIONS[0],))
    started = time.perf_counter()
    with start_emulator(config=config) as emu:
        ready = time.perf_counter() - started
        token = emu.token()
        conn = http.client.HTTPConnection(emu.host, emu.port)

        # All pages, newest first, as a client following "next" sees them.
        latencies: list[float] = []
        ids: list[str] = []
        path: str | None = "/v2/tasks?limit=1000"
        while path:
            t0 = time.perf_counter()
            status, raw = _get(conn, path, token)
            latencies.append(time.perf_counter() - t0)
            assert status == 200, raw[:200]
            body = json.loads(raw)
            ids += [t["id"] for t in body["tasks"]]
            path = body.get("next")
        assert len(ids) == len(set(ids)) == args.tasks, len(ids)

        # Filtered and re-sorted listing (different indexes).
        filtered: list[float] = []
        for query in ("status=failure", "type=import", "sort_key=status", "sort_key=updated_at"):
            t0 = time.perf_counter()
            status, _ = _get(conn, f"/v2/tasks?limit=1000&{query}", token)
            filtered.append(time.perf_counter() - t0)
            assert status == 200

        # GET /v2/tasks/{id}: sequential, then from several threads.
        sample = random.Random(1).sample(ids, min(args.shows, len(ids)))
        t0 = time.perf_counter()
        for task_id in sample:
            assert _get(conn, f"/v2/tasks/{task_id}", token)[0] == 200
        sequential = len(sample) / (time.perf_counter() - t0)

        def worker(chunk: list[str]) -> None:
            own = http.client.HTTPConnection(emu.host, emu.port)
            for task_id in chunk:
                assert _get(own, f"/v2/tasks/{task_id}", token)[0] == 200
            own.close()

        chunks = [sample[i::args.threads] for i in range(args.threads)]
        threads = [threading.Thread(target=worker, args=(c,)) for c in chunks]
        t0 = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        concurrent = len(sample) / (time.perf_counter() - t0)
        conn.close()

    ms = 1000.0
    print(f"tasks seeded:                      {args.tasks:,} (start-up incl. seeding "
          f"{ready:.1f} s)")
    print(f"GET /v2/tasks?limit=1000 pages:    {len(latencies)} (following next to the end)")
    print(f"  p50 {statistics.median(latencies) * ms:.1f} ms   "
          f"p95 {_percentile(latencies, 0.95) * ms:.1f} ms   "
          f"max {max(latencies) * ms:.1f} ms")
    print(f"  filtered/sorted first pages:     "
          f"{', '.join(f'{v * ms:.1f}' for v in filtered)} ms "
          "(status=failure, type=import, sort_key=status, sort_key=updated_at)")
    print(f"GET /v2/tasks/{{id}}:                {sequential:,.0f} req/s sequential, "
          f"{concurrent:,.0f} req/s with {args.threads} clients")


if __name__ == "__main__":
    main()

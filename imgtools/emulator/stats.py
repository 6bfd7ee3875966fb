"""Request and event counters served at ``GET /_emulator/stats`` (for tests and benchmarks)."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

__all__ = ["Stats"]

MAX_UNMATCHED = 200


class Stats:
    """Thread-safe counters: requests by route/method/status, tasks created, faults injected."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, str, int]] = Counter()
        self.events: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.unmatched: Counter[str] = Counter()

    def request(self, route: str, method: str, status: int) -> None:
        with self._lock:
            self.requests[(route, method, status)] += 1

    def miss(self, method: str, path: str) -> None:
        """A request no route matched; the distinct paths kept are capped."""
        with self._lock:
            key = f"{method} {path}"
            if key in self.unmatched or len(self.unmatched) < MAX_UNMATCHED:
                self.unmatched[key] += 1

    def event(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.events[name] += n

    def fault(self, name: str) -> None:
        with self._lock:
            self.faults[name] += 1

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.events.clear()
            self.faults.clear()
            self.unmatched.clear()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            rows = [{"route": r, "method": m, "status": s, "count": n}
                    for (r, m, s), n in sorted(self.requests.items())]
            return {
                "requests": rows,
                "requests_total": sum(self.requests.values()),
                "tasks_created": self.events.get("tasks_created", 0),
                "events": dict(self.events),
                "faults": dict(self.faults),
                "faults_total": sum(self.faults.values()),
                "unmatched": dict(self.unmatched),
            }

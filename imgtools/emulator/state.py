"""What every route and the worker share: config, store, clock, counters, current faults."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from imgtools.emulator.clock import Clock
from imgtools.emulator.config import EmulatorConfig, FaultSettings
from imgtools.emulator.stats import Stats
from imgtools.emulator.store import Store

__all__ = ["EmulatorState"]


@dataclass
class EmulatorState:
    config: EmulatorConfig
    store: Store
    clock: Clock = field(default_factory=Clock)
    stats: Stats = field(default_factory=Stats)
    #: Set by POST /v2/tasks so the worker looks at new work at once.
    wakeup: threading.Event = field(default_factory=threading.Event)
    faults: FaultSettings = field(init=False)

    def __post_init__(self) -> None:
        self.faults = self.config.faults

    def account_for(self, tenant_id: str) -> str:
        return f"MossoCloudFS_{tenant_id}"

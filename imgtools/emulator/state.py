"""What every route and the worker share: config, stores, clock, counters, current faults."""

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
    """``store`` is the default region's (and identity's: tokens live there); ``stores`` holds
    every region's, the default one included, keyed by region name."""

    config: EmulatorConfig
    store: Store
    clock: Clock = field(default_factory=Clock)
    stats: Stats = field(default_factory=Stats)
    #: Set by POST /v2/tasks so the worker looks at new work at once.
    wakeup: threading.Event = field(default_factory=threading.Event)
    stores: dict[str, Store] = field(default_factory=dict)
    #: The port each region listens on (region -> port), when the sockets are known.
    region_ports: dict[str, int] = field(default_factory=dict)
    faults: FaultSettings = field(init=False)

    def __post_init__(self) -> None:
        self.faults = self.config.faults
        self.stores.setdefault(self.default_region, self.store)

    @property
    def default_region(self) -> str:
        return self.config.regions[0]

    def store_in(self, region: str) -> Store:
        return self.stores[region]

    def regions_by_port(self) -> dict[int, str]:
        return {port: region for region, port in self.region_ports.items()}

    def region_base(self, scheme: str, host: str, region: str, fallback: str) -> str:
        """``scheme://host:port`` of ``region``; ``fallback`` when its port is unknown."""
        port = self.region_ports.get(region)
        if not port:
            return fallback
        shown = f"[{host}]" if ":" in host else host
        return f"{scheme}://{shown}:{port}"

    def account_for(self, tenant_id: str) -> str:
        return f"MossoCloudFS_{tenant_id}"

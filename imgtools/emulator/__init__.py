"""A local Cloud Images + Cloud Files + identity service: imgtools' embedded default.

>>> from imgtools.emulator import EmulatorConfig, start_emulator
>>> with start_emulator(config=EmulatorConfig(pending_delay=0.2)) as emu:   # doctest: +SKIP
...     token = emu.token("demo", "demo-key")

Run it by hand with ``python -m imgtools.emulator --port 8777`` (or ``main([...])``): the
default region on that port, the others on the next ones.

``DEMO_USER`` is the demo login (``username``, ``api_key``, ``tenant_id``); ``DEFAULT_USERS``
every built-in user, the demo one first.
"""

from imgtools.emulator.command import main
from imgtools.emulator.config import (
    DEFAULT_REGIONS,
    DEFAULT_USERS,
    DEMO_USER,
    EmulatorConfig,
    FaultSettings,
    User,
)
from imgtools.emulator.seed import image_id_for
from imgtools.emulator.server import EmulatorHandle, start_emulator

__all__ = [
    "DEFAULT_REGIONS",
    "DEFAULT_USERS",
    "DEMO_USER",
    "EmulatorConfig",
    "EmulatorHandle",
    "FaultSettings",
    "User",
    "image_id_for",
    "main",
    "start_emulator",
]

"""A local Cloud Images + Cloud Files + identity service: imgtools' embedded default.

>>> from imgtools.emulator import EmulatorConfig, start_emulator
>>> with start_emulator(config=EmulatorConfig(pending_delay=0.2)) as emu:   # doctest: +SKIP
...     token = emu.token("demo", "demo-key")

Run it by hand with ``python -m imgtools.emulator --port 8777``.
"""

from imgtools.emulator.config import DEFAULT_USERS, EmulatorConfig, FaultSettings, User
from imgtools.emulator.seed import image_id_for
from imgtools.emulator.server import EmulatorHandle, start_emulator

__all__ = [
    "DEFAULT_USERS",
    "EmulatorConfig",
    "EmulatorHandle",
    "FaultSettings",
    "User",
    "image_id_for",
    "start_emulator",
]

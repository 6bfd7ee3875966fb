"""Merge aid: bring test modules written for the old flat tests/ into the folders by kind.

For each file: ``git mv`` it into ``tests/<kind>/`` (unless it is there already), import the
helpers by package path (``tests.client_support``, ``tests.emulator.helpers``, any other
``tests/<name>.py``), replace ``pytest_plugins = [...]`` by the alias fixture ``emu`` of the
emulator that plugin gave (``fixtures_client``: ``emulator_in_subprocess``;
``emulator_helpers``: ``emulator_in_process``), and point ``Path(__file__)`` paths one folder
further up (the repo, or tests/artifacts). Then run ``ruff check --fix tests`` (import order)
and read the diff. A file that conflicted in a merge: take the other side first
(``git checkout --theirs <new path>``), then run this on it. Files already adopted come out
unchanged, so running it on every file a merge touched is safe.

    .venv/bin/python tests/adopt_flat_tests.py integration tests/test_new.py ...
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

KINDS = ("unit", "emulator", "integration", "system")
ALIAS = '''@pytest.fixture(scope="module")
def emu({name}: EmulatorHandle) -> EmulatorHandle:
    """This module's emulator: {what} (tests/conftest.py)."""
    return {name}
'''
PLUGINS = {
    "fixtures_client": ALIAS.format(name="emulator_in_subprocess",
                                    what="the client tests' one, in a subprocess"),
    "emulator_helpers": ALIAS.format(name="emulator_in_process",
                                     what="the emulator tests' one, in this process"),
}
REWRITES = [
    (r"^pytest\.register_assert_rewrite\(\"emulator_helpers\"\)\n", ""),
    (r"^(\s*)from emulator_helpers import (.*?)(  # noqa: E402)?$",
     r"\1from tests.emulator.helpers import \2"),
    (r"^(\s*)import emulator_helpers$",
     r"\1from tests.emulator import helpers as emulator_helpers"),
    # One folder deeper: tests/<kind>/test_x.py.
    (r"Path\(__file__\)(\.resolve\(\))?\.parent\.parent\b", r"Path(__file__)\1.parents[2]"),
    (r"Path\(__file__\)(\.resolve\(\))?\.parents\[1\](?! / \"artifacts\")",
     r"Path(__file__)\1.parents[2]"),
    (r"Path\(__file__\)(\.resolve\(\))?\.parent / \"artifacts\"",
     r'Path(__file__)\1.parents[1] / "artifacts"'),
]


def adopt(text: str, helpers: list[str]) -> str:
    for pattern, replacement in REWRITES:
        text = re.sub(pattern, replacement, text, flags=re.MULTILINE)
    for name in helpers:  # tests/<name>.py: client_support, and any other helper module there
        text = re.sub(rf"^(\s*)from {name} import", rf"\1from tests.{name} import", text,
                      flags=re.MULTILINE)
        text = re.sub(rf"^(\s*)import {name}$", rf"\1from tests import {name}", text,
                      flags=re.MULTILINE)
    for plugin, alias in PLUGINS.items():
        line = re.compile(rf"^pytest_plugins = \[\"{plugin}\"\].*\n", re.MULTILINE)
        if line.search(text):
            text = line.sub("\n" + alias.replace("\\", "\\\\") + "\n", text)
            if not re.search(r"^from imgtools\.emulator import .*\bEmulatorHandle\b", text,
                             re.MULTILINE):
                text = re.sub(r"^(import pytest\n)",
                              r"\1from imgtools.emulator import EmulatorHandle\n",
                              text, count=1, flags=re.MULTILINE)
    return text


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in KINDS:
        print(__doc__)
        return 2
    kind, files = argv[0], [Path(f) for f in argv[1:]]
    tests = Path(__file__).resolve().parent
    helpers = [p.stem for p in tests.glob("*.py")
               if not p.stem.startswith(("test_", "__")) and p.stem != "conftest"]
    for path in files:
        if path.resolve().parent == tests:
            target = path.parent / kind / path.name
            subprocess.run(["git", "mv", str(path), str(target)], check=True)
            path = target
        path.write_text(adopt(path.read_text(), helpers))
        print(f"adopted {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

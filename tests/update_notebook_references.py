"""Rewrite the reference outputs of the notebooks' ``# NBVAL_CHECK_OUTPUT`` cells.

Runs the notebooks in the set-up of
``tests/system/test_notebooks.py::test_notebooks_under_nbval`` (a fresh emulator with the same
seeded history, the same order) and stores, in ``notebooks/``, the stdout of each checked cell
with an execution count; every other cell stays clean. Run it after an intended change of those
outputs (or of the emulator's seeded data):

    .venv/bin/python tests/update_notebook_references.py
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient

# Run as a script, its own folder comes first on sys.path; the tests package needs the repo's.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imgtools.emulator import start_emulator
from tests.system import test_notebooks as setup


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="imgtools-nbref-"))
    copy = setup._copy_notebooks(tmp)
    with start_emulator(config=setup._emulator_config(), subprocess=False) as emu:
        os.environ.clear()
        os.environ.update(setup._kernel_env(tmp, **setup._login(emu)))
        for path in setup.NOTEBOOKS:
            ran = nbformat.read(copy / path.name, as_version=4)
            NotebookClient(ran, timeout=120, kernel_name="python3",
                           resources={"metadata": {"path": str(copy)}}).execute()
            committed = nbformat.read(path, as_version=4)
            for done, cell in zip(ran.cells, committed.cells, strict=True):
                if cell.cell_type != "code" or setup.CHECK not in cell.source:
                    continue
                outputs = [o for o in done.outputs
                           if o.output_type == "stream" and o.name == "stdout"]
                if not outputs or len(outputs) != len(done.outputs):
                    raise SystemExit(f"{path.name}: a checked cell must print to stdout only")
                cell.outputs = outputs
                cell.execution_count = 1
                print(f"{path.name}:\n" + "".join(o.text for o in outputs))
            nbformat.write(committed, path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

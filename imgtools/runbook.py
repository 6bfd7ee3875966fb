"""``python -m imgtools.runbook``: run ``notebooks/02_export_runbook.ipynb`` with papermill.

The executed copy is kept under ``runs/02_export_runbook/<UTC time>.ipynb`` (ignored by git)
as the record of the run: its parameters, every cell's output and timing, and the result
table. Exit codes follow the CLI: 0 every export succeeded, 1 an export failed (or timed
out), 2 bad input or configuration, 4 anything else (service, network, kernel).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from imgtools._exceptions import ImgToolsError
from imgtools.lab import notebooks_dir

__all__ = ["RUNBOOK", "RunResult", "RunbookFailed", "main", "run_runbook"]

RUNBOOK = "02_export_runbook.ipynb"
#: Exit codes (as ``imgtools`` CLI's).
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_OTHER = 0, 1, 2, 4
#: Errors that mean "the input or the configuration is wrong", by exception name.
_USAGE_ERRORS = frozenset({"ConfigurationError", "ValidationError", "ContainerNotFound"})
#: Seconds a notebook kernel may take to start.
KERNEL_START_TIMEOUT = 120


class RunbookFailed(ImgToolsError):
    """Raised by the runbook's last cell when an export failed or timed out, so the run
    ends non-zero under papermill."""


@dataclass(frozen=True)
class RunResult:
    """One run: where its record is, its exit code, the error line (if any) and the result
    table as text (from the cell tagged ``result-table``)."""

    record: Path
    exit_code: int
    error: str | None
    table: str


def default_runs_dir() -> Path:
    """``runs/`` of this checkout."""
    return notebooks_dir().parent / "runs"


def _split_ids(values: Sequence[str]) -> list[str]:
    # `make runbook IMAGES="a b"` and `--images a,b` both work.
    return [part for value in values for part in re.split(r"[\s,]+", value) if part]


def run_runbook(*, image_ids: Sequence[str] = (), name_contains: str = "", container: str,
                create_container: bool = False, verify: bool = True,
                download_dir: str | Path | None = None, timeout: float = 3600.0,
                runs_dir: str | Path | None = None, notebook: str | Path | None = None,
                log_output: bool = False) -> RunResult:
    """Execute the runbook with these parameters and keep the executed copy; never raises
    for a failed run (the ``RunResult`` says how it ended)."""
    import papermill as pm  # type: ignore[import-untyped]

    source = Path(notebook) if notebook is not None else notebooks_dir() / RUNBOOK
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    record_dir = Path(runs_dir if runs_dir is not None else default_runs_dir()) / source.stem
    record_dir.mkdir(parents=True, exist_ok=True)
    record = record_dir / f"{stamp}.ipynb"
    parameters: dict[str, Any] = {
        "image_ids": list(image_ids), "name_contains": name_contains, "container": container,
        "create_container": create_container, "verify": verify,
        "download_dir": str(Path(download_dir).resolve()) if download_dir else "",
        "timeout": float(timeout)}
    error: str | None = None
    code = EXIT_OK
    try:
        # cwd: the notebooks folder, so the runbook's relative paths mean the same as in Lab.
        pm.execute_notebook(str(source), str(record), parameters=parameters,
                            cwd=str(source.parent), progress_bar=False, log_output=log_output,
                            start_timeout=KERNEL_START_TIMEOUT)
    except pm.PapermillExecutionError as exc:
        error = f"{exc.ename}: {exc.evalue}"
        code = EXIT_FAILED if exc.ename == "RunbookFailed" else (
            EXIT_USAGE if exc.ename in _USAGE_ERRORS else EXIT_OTHER)
    return RunResult(record=record, exit_code=code, error=error, table=_result_table(record))


def _result_table(record: Path) -> str:
    """The text the cell tagged ``result-table`` printed, if it ran."""
    try:
        book = json.loads(record.read_text())
    except (OSError, ValueError):
        return ""
    for cell in book.get("cells", []):
        if "result-table" in cell.get("metadata", {}).get("tags", []):
            return "".join("".join(out.get("text", "")) for out in cell.get("outputs", [])
                           if out.get("output_type") == "stream")
    return ""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m imgtools.runbook",
        description=f"Run notebooks/{RUNBOOK} with papermill: export images into a container, "
                    "follow, verify, optionally download; the executed notebook is kept under "
                    "runs/ as the record. Exit 0 when every export succeeded, 1 when one "
                    "failed, 2 on bad input.")
    parser.add_argument("--images", action="append", default=[], metavar="IDS",
                        help="image ids, separated by commas or spaces (repeatable)")
    parser.add_argument("--name-contains", default="", metavar="TEXT",
                        help="also every image whose name contains TEXT (non-exportable "
                             "matches are skipped)")
    parser.add_argument("--container", required=True, help="the receiving container")
    parser.add_argument("--create-container", action="store_true",
                        help="create the container if it does not exist")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="do not verify the exports (verified by default)")
    parser.add_argument("--verify", dest="verify", action="store_true",
                        help=argparse.SUPPRESS)
    parser.add_argument("--download-dir", type=Path, default=None,
                        help="download each verified export here as <image id>.vhd")
    parser.add_argument("--timeout", type=float, default=3600.0,
                        help="seconds to wait for all exports (3600)")
    parser.add_argument("--runs-dir", type=Path, default=None,
                        help="where to keep the executed notebook (default: runs/)")
    parser.add_argument("--log-output", action="store_true",
                        help="echo the notebook's output while it runs")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    image_ids = _split_ids(args.images)
    if not image_ids and not args.name_contains:
        print("imgtools.runbook: give --images and/or --name-contains", file=sys.stderr)
        return EXIT_USAGE
    if args.timeout <= 0:
        print("imgtools.runbook: --timeout must be > 0 seconds", file=sys.stderr)
        return EXIT_USAGE
    result = run_runbook(image_ids=image_ids, name_contains=args.name_contains,
                         container=args.container, create_container=args.create_container,
                         verify=args.verify, download_dir=args.download_dir,
                         timeout=args.timeout, runs_dir=args.runs_dir,
                         log_output=args.log_output)
    if result.table:
        print(result.table.rstrip())
    print(f"record of this run: {result.record}")
    if result.error:
        print(f"runbook failed: {result.error}", file=sys.stderr)
    return result.exit_code


if __name__ == "__main__":
    raise SystemExit(main())

"""The export runbook: ``run_exports`` does the work, notebook 02 calls it, and
``python -m imgtools.runbook`` runs that notebook with papermill.

``run_exports(client, image_ids=..., container=...)`` exports a set of images into one Cloud
Files container, follows every task together, verifies each export, optionally downloads it,
and returns a ``RunReport`` (one ``RunRow`` per image); ``report.raise_for_failures()`` raises
``RunbookFailed`` when an export failed or timed out.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imgtools._client import Client
from imgtools._config import DEFAULT_WAIT_TIMEOUT
from imgtools._exceptions import ImgToolsError
from imgtools._models import Image
from imgtools._polling import PollPolicy, WaitAllResult, WaitProgress
from imgtools.formatting import format_bytes, one_line
from imgtools.lab import notebooks_dir

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["OUTCOMES", "RUNBOOK", "RunReport", "RunResult", "RunRow", "RunbookFailed", "main",
           "run_exports", "run_runbook"]

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


#: Where each image of a run ended, in the order the result line counts them (plus the two
#: states an image passes through: ``planned`` and ``started``).
OUTCOMES = ("exported", "failed", "timed out", "skipped")


@dataclass
class RunRow:
    """One image of a run: its line in the result table."""

    image_id: str
    name: str | None = None
    size: int | None = None
    outcome: str = "planned"
    task_id: str | None = None
    message: str | None = None
    export_location: str | None = None
    verified: bool | None = None
    downloaded: str | None = None


@dataclass
class RunReport:
    """What ``run_exports`` did: a ``RunRow`` per image (in the order they were selected),
    the batch wait's result (``None`` when nothing was started), and when it ran."""

    container: str
    rows: dict[str, RunRow] = field(default_factory=dict)
    wait: WaitAllResult | None = None
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished: datetime | None = None

    def row(self, image_id: str, **values: Any) -> RunRow:
        """The row of ``image_id`` (made on first use), updated with ``values``."""
        line = self.rows.setdefault(image_id, RunRow(image_id))
        for name, value in values.items():
            setattr(line, name, value)
        return line

    def counts(self) -> dict[str, int]:
        """How many images ended in each of ``OUTCOMES``."""
        return {name: sum(r.outcome == name for r in self.rows.values()) for name in OUTCOMES}

    @property
    def ok(self) -> bool:
        """True when no export failed or timed out (skipped images do not count)."""
        counts = self.counts()
        return counts["failed"] == 0 and counts["timed out"] == 0

    def summary(self) -> str:
        """``"2 exported, 0 failed, 0 timed out, 0 skipped"``."""
        return ", ".join(f"{count} {name}" for name, count in self.counts().items())

    def problems(self) -> list[RunRow]:
        return [r for r in self.rows.values() if r.outcome in ("failed", "timed out")]

    def raise_for_failures(self) -> RunReport:
        """Raise ``RunbookFailed`` naming every export that failed or timed out."""
        problems = self.problems()
        if problems:
            raise RunbookFailed(
                f"{len(problems)} of {len(self.rows)} export(s) did not succeed: "
                + "; ".join(f"{r.name or r.image_id}: {r.message}" for r in problems))
        return self

    def frame(self) -> pd.DataFrame:
        """The result table, sizes readable (pandas loads here, not before)."""
        import pandas as pd

        table = pd.DataFrame([vars(r) for r in self.rows.values()],
                             columns=[f.name for f in fields(RunRow)])
        table["size"] = [format_bytes(r.size) if r.size is not None else ""
                         for r in self.rows.values()]
        return table

    def text(self) -> str:
        """The summary line and one line per image (name, outcome, message), as plain text."""
        table = self.frame()[["name", "outcome", "message"]].fillna("")
        return f"{self.summary()}\n{table.to_string(index=False)}"


def _select(client: Client, report: RunReport, wanted: Sequence[str],
            name_contains: str) -> dict[str, Image]:
    images: dict[str, Image] = {}
    for image_id in wanted:
        try:
            images[image_id] = client.get_image(image_id)
        except ImgToolsError as exc:
            report.row(image_id, outcome="failed", message=one_line(exc))
    if name_contains:
        needle = name_contains.lower()
        for image in client.images():
            if needle in (image.name or "").lower():
                images.setdefault(image.id, image)
    for image in images.values():
        report.row(image.id, name=image.name, size=image.size)
    return images


def _preflight(client: Client, report: RunReport, images: dict[str, Image],
               wanted: Sequence[str]) -> list[Image]:
    # Asked for by id and not exportable: the run fails; only matched by name: skipped.
    ready = []
    for image in images.values():
        verdict = client.exportability(image)
        if verdict.ok:
            ready.append(image)
        else:
            report.row(image.id, outcome="failed" if image.id in wanted else "skipped",
                       message=f"cannot be exported: {verdict.reason}")
    return ready


def _record_wait(report: RunReport, outcome: WaitAllResult, timeout: float | None,
                 started: dict[str, str]) -> None:
    for task in outcome.succeeded:
        report.row(task.image_id or "", outcome="exported", task_id=task.id,
                   export_location=task.export_location)
    for task in outcome.failed:
        report.row(task.image_id or "", outcome="failed", task_id=task.id,
                   message=task.message or "the service gave no reason")
    for task in outcome.timed_out:
        report.row(task.image_id or "", outcome="timed out", task_id=task.id,
                   message=f"still {task.status} after {timeout:g} s" if timeout else
                   f"still {task.status}")
    for task_id, error in outcome.errors.items():
        report.row(started.get(task_id, task_id), outcome="failed", task_id=task_id,
                   message=one_line(error))


def _check_and_fetch(client: Client, report: RunReport, outcome: WaitAllResult, *,
                     verify: bool, download_dir: str | Path | None) -> None:
    for task in outcome.succeeded:
        line = report.rows[task.image_id or ""]
        if verify:
            check = client.verify_export(task)
            line.verified = check.ok
            if not check.ok:
                line.outcome = "failed"
                line.message = "verification: " + "; ".join(check.problems)
                continue
        if download_dir:
            dest = Path(download_dir) / f"{task.image_id}.vhd"
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                # fsync: a runbook's copy may be the only one left.
                client.download_export(task, dest, progress=False, fsync=True)
            except ImgToolsError as exc:
                line.outcome = "failed"
                line.message = f"download: {one_line(exc)}"
                continue
            line.downloaded = str(dest)


def run_exports(client: Client, *, image_ids: Sequence[str] = (), name_contains: str = "",
                container: str, create_container: bool = False, verify: bool = True,
                download_dir: str | Path | None = None,
                timeout: float | None = DEFAULT_WAIT_TIMEOUT, poll: PollPolicy | None = None,
                say: Callable[[str], object] | None = None) -> RunReport:
    """Export images into ``container``, follow them together, verify, optionally download.

    1. *Plan*: the images of ``image_ids``, and every image whose name contains
       ``name_contains`` (case-insensitive).
    2. *Preflight*: each must be active, yours, and free of licensing restrictions; one asked
       for by id that is not fails the run, one matched by name is skipped.
    3. *Export*: ``begin_export`` each (the client's own preflight checks the container and
       that the export is not already there), then ``wait_all`` follows every task with the
       list endpoint, up to ``timeout`` seconds for all of them, polling with ``poll``.
    4. *Verify* each export (manifest, segments, sizes, every segment's MD5) and, with a
       ``download_dir``, download it there as ``<image id>.vhd``.

    ``say`` gets a line of text at each step (``print`` in a notebook). Never raises for a
    failed export: the ``RunReport`` says how each image ended (``report.raise_for_failures()``
    raises ``RunbookFailed``). Raises ``RunbookFailed`` at once when nothing is selected.
    """
    tell = say or (lambda _line: None)
    wanted = [i.strip() for i in image_ids if i.strip()]
    if not wanted and not name_contains:
        raise RunbookFailed("nothing selected: give image_ids or name_contains")
    report = RunReport(container)
    images = _select(client, report, wanted, name_contains)
    waits = f"waits up to {timeout:g} s for all of them" if timeout else "waits for all of them"
    tell(f"This run exports {len(images)} image(s) into container {container!r}"
         f"{' (created if missing)' if create_container else ' (which must exist)'}, {waits}, "
         f"{'verifies every export' if verify else 'does not verify'}"
         f"{f', and downloads them to {download_dir}' if download_dir else ''}.")
    ready = _preflight(client, report, images, wanted)
    counts = report.counts()
    tell(f"{len(ready)} to export; {counts['failed']} failed preflight; "
         f"{counts['skipped']} skipped")

    handles = []
    started: dict[str, str] = {}
    for image in ready:
        try:
            handle = client.begin_export(image.id, container, create_container=create_container)
        except ImgToolsError as exc:
            report.row(image.id, outcome="failed", message=one_line(exc))
            continue
        report.row(image.id, outcome="started", task_id=handle.id)
        started[handle.id] = image.id
        handles.append(handle)
    tell(f"{len(handles)} task(s) started")
    if handles:
        last = ""

        def progress(state: WaitProgress) -> None:
            nonlocal last
            if str(state) != last:  # one line per change, not per round
                last = str(state)
                tell(f"{state.elapsed:7.1f} s  {state}")

        report.wait = client.wait_all(handles, timeout=timeout, poll=poll,
                                      on_progress=progress)
        _record_wait(report, report.wait, timeout, started)
        _check_and_fetch(client, report, report.wait, verify=verify, download_dir=download_dir)
        rows = report.rows.values()
        tell(f"verified: {sum(r.verified is True for r in rows)} "
             f"downloaded: {sum(bool(r.downloaded) for r in rows)}")
    report.finished = datetime.now(UTC)
    return report


@dataclass(frozen=True)
class RunResult:
    """One run: where its record is, its exit code, the error line (if any) and the result
    table as text (from the cell tagged ``result-table``)."""

    record: Path
    exit_code: int
    error: str | None
    table: str


def default_runs_dir() -> Path:
    """``runs/`` in the current directory (in a checkout, ``make runbook`` runs from its top);
    never inside the installed package."""
    return Path.cwd() / "runs"


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


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
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
                        help="where to keep the executed notebook (default: ./runs)")
    parser.add_argument("--log-output", action="store_true",
                        help="echo the notebook's output while it runs")
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m imgtools.runbook") -> int:
    args = _parser(prog).parse_args(argv)
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

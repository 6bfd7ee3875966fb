"""The ``imgtools`` command.

Exit codes: 0 done, 1 a task failed, 2 bad input or configuration, 3 timeout, 4 service or
network error. Errors are one readable line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from imgtools._exceptions import (
    ConfigurationError,
    ImgToolsError,
    PreflightError,
    TaskFailed,
    TaskTimeout,
    ValidationError,
)

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_OK", "EXIT_SERVICE", "EXIT_TIMEOUT", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_TIMEOUT = 3
EXIT_SERVICE = 4

# Columns of the one-line-per-task table; the rest stays available in json/csv.
TABLE_COLUMNS = ["region", "id", "type", "status", "created_at", "duration", "image_id",
                 "container", "export_location", "message"]


def _exit_code(error: BaseException) -> int:
    from imgtools.transfer import TransferFailed

    if isinstance(error, TransferFailed) and isinstance(error.__cause__, ImgToolsError):
        return _exit_code(error.__cause__)  # the failed step's own error says what kind
    if isinstance(error, TaskFailed):
        return EXIT_FAILED
    if isinstance(error, TaskTimeout):
        return EXIT_TIMEOUT
    if isinstance(error, (ValidationError, ConfigurationError, PreflightError)):
        return EXIT_BAD_INPUT
    return EXIT_SERVICE  # ServiceError, DownloadError and anything else imgtools raises


def _connect(args: argparse.Namespace) -> Any:
    import imgtools

    region = getattr(args, "region", None)
    if region is not None and region.lower() == ALL_REGIONS:
        if args.command not in ("tasks", "audit"):
            raise ValidationError(f"--region all works with tasks and audit only, not "
                                  f"{args.command}", field="region")
        region = None
    return imgtools.connect(emulator=True if args.emulator else None, region=region)


#: ``--region all``: every region of the login's service catalog.
ALL_REGIONS = "all"


def _all_regions(args: argparse.Namespace) -> bool:
    region = getattr(args, "region", None)
    return region is not None and region.lower() == ALL_REGIONS


def _print_frame(frame: Any, fmt: str, out: TextIO) -> None:
    from imgtools.history import format_duration

    if fmt == "json":
        out.write(frame.to_json(orient="records", date_format="iso", date_unit="s"))
        out.write("\n")
    elif fmt == "csv":
        frame.to_csv(out, index=False)
    else:
        if not len(frame):
            out.write("no tasks\n")
            return
        shown = frame[[c for c in TABLE_COLUMNS if c in frame.columns]].copy()
        shown["duration"] = shown["duration"].map(format_duration)
        shown["created_at"] = shown["created_at"].dt.strftime("%Y-%m-%d %H:%M:%S")
        out.write(shown.fillna("").to_string(index=False))
        out.write("\n")


def _print_task(task: Any, fmt: str, out: TextIO) -> None:
    if fmt == "json":
        out.write(json.dumps(task.to_json(), indent=2, sort_keys=True) + "\n")
    else:
        from imgtools.history import tasks_frame

        _print_frame(tasks_frame([task]), fmt, out)


def _poll_note(task: Any) -> None:
    print(f"{task.id} {task.status.value}", file=sys.stderr, flush=True)


# -- commands -------------------------------------------------------------------------------


def _begun(handle: Any, args: argparse.Namespace, out: TextIO) -> int:
    """Print a task just started, or with ``--wait`` the task once it has ended."""
    task = (handle.wait(timeout=args.timeout, on_update=_poll_note if args.verbose else None)
            if args.wait else handle.task)
    _print_task(task, args.format, out)
    return EXIT_OK


def cmd_export(args: argparse.Namespace, out: TextIO) -> int:
    client = _connect(args)
    with client:
        return _begun(client.begin_export(args.image_id, args.container,
                                          create_container=args.create_container,
                                          preflight=not args.no_preflight), args, out)


def cmd_import(args: argparse.Namespace, out: TextIO) -> int:
    client = _connect(args)
    with client:
        return _begun(client.begin_import(args.location, name=args.name,
                                          preflight=not args.no_preflight), args, out)


def cmd_task(args: argparse.Namespace, out: TextIO) -> int:
    client = _connect(args)
    with client:
        _print_task(client.get_task(args.task_id), args.format, out)
    return EXIT_OK


def _frame_for(args: argparse.Namespace) -> Any:
    from imgtools._tasklog import TaskLog
    from imgtools.history import filter_tasks, log_frame, merged, tasks_frame

    every = _all_regions(args)
    region = None if every or args.region is None else args.region
    if args.source == "log":
        with TaskLog() as log:
            frame = log_frame(log, since=args.since, status=args.status, type=args.type,
                              region=region, account=args.account)
        return frame
    client = _connect(args)
    with client:
        if every:
            from imgtools._region_frames import frame_by_region

            frame = frame_by_region(client, with_log=args.source == "all")
        else:
            frame = tasks_frame(client) if args.source == "service" else merged(client)
        # The connection chose the service's region; the log's rows are filtered to it.
        frame = filter_tasks(frame, since=args.since, status=args.status, type=args.type,
                             region=region if args.source != "service" else None,
                             account=args.account)
        if getattr(args, "details", "none") != "none":
            from imgtools.details import fetch_details

            # Details of the tasks in view only, before the tables are made.
            found = fetch_details(frame, client, details=args.details,
                                  progress=sys.stderr.isatty())
            print(f"imgtools: {found}", file=sys.stderr)
            frame = found.frame
    return frame


def cmd_tasks(args: argparse.Namespace, out: TextIO) -> int:
    _print_frame(_frame_for(args), args.format, out)
    return EXIT_OK


def cmd_audit(args: argparse.Namespace, out: TextIO) -> int:
    from imgtools.history import summary

    frame = _frame_for(args)
    report = summary(frame, by=args.by)
    if report.without_details or report.not_fetched:
        print(f"imgtools: {report.without_details} task(s) in view have no details anywhere "
              f"(purged from the service, never seen in full here); {report.not_fetched} "
              "listed but not fetched", file=sys.stderr)
    tables = dict(report.tables)
    if "region" in frame.columns and args.by != "region":
        from imgtools._region_frames import region_counts

        tables["by_region"] = region_counts(frame)
    for name, table in tables.items():
        if args.format == "json":
            out.write(json.dumps({name: json.loads(table.to_json(orient="split",
                                                                 date_format="iso"))}) + "\n")
        else:
            out.write(f"== {name} ==\n")
            out.write((table.to_string() if len(table) else "(none)") + "\n\n")
    return EXIT_OK


def _team_url(given: str | None, flag: str) -> str:
    import os

    from imgtools._pglog import is_url
    from imgtools._tasklog import LOG_ENV

    url = given or os.environ.get(LOG_ENV, "")
    if not is_url(url):
        raise ValidationError(f"{flag}: give the team log's postgresql:// URL (or set "
                              f"{LOG_ENV} to it)", field=flag.lstrip("-"))
    return url


def cmd_log(args: argparse.Namespace, out: TextIO) -> int:
    from imgtools._pglog import init_schema, safe_url
    from imgtools._tasklog import TaskLog, default_log_path

    if args.action == "init":
        url = _team_url(args.url, "URL")
        version = init_schema(url)
        out.write(f"{safe_url(url)}: schema version {version}\n")
        return EXIT_OK
    if args.action == "push":
        url = _team_url(args.to, "--to")
        source = Path(args.source).expanduser() if args.source else default_log_path()
        with TaskLog(url) as team:
            kept = team.push_pending()
            if source.suffix in (".jsonl", ".json"):
                count = team.import_(source)
            else:
                if not source.exists():
                    raise ValidationError(f"--from: no log at {source}", field="from")
                with TaskLog(source) as local:
                    count = local.copy_into(team)
            out.write(f"pushed {count} task(s) from {source} to {team.url}")
            out.write(f" (and {kept} kept while it was unreachable)\n" if kept else "\n")
        return EXIT_OK
    url = _team_url(args.source, "--from")
    target = Path(args.to).expanduser() if args.to else default_log_path()
    with TaskLog(url) as team, TaskLog(target) as local:
        count = team.copy_into(local)
        out.write(f"pulled {count} task(s) from {team.url} into {target}\n")
    return EXIT_OK


def cmd_wait(args: argparse.Namespace, out: TextIO) -> int:
    client = _connect(args)
    with client:
        def progress(p: Any) -> None:
            if args.verbose:
                print(str(p), file=sys.stderr, flush=True)

        result = client.wait_all(args.task_ids, timeout=args.timeout, on_progress=progress)
        from imgtools.history import tasks_frame

        _print_frame(tasks_frame(list(result.tasks.values())), args.format, out)
        for task_id, error in result.errors.items():
            print(f"imgtools: {task_id}: {error}", file=sys.stderr)
    if result.errors:
        return EXIT_SERVICE
    if result.failed:
        return EXIT_FAILED
    if result.timed_out:
        return EXIT_TIMEOUT
    return EXIT_OK


def cmd_verify(args: argparse.Namespace, out: TextIO) -> int:
    client = _connect(args)
    with client:
        report = client.verify_export(args.task_id)
    out.write(str(report) + "\n")
    return EXIT_OK if report.ok else EXIT_SERVICE


def cmd_download(args: argparse.Namespace, out: TextIO) -> int:
    client = _connect(args)
    with client:
        result = client.download_export(args.task_id, args.dest, resume=not args.no_resume,
                                        progress=not args.no_progress, fsync=args.fsync,
                                        convert=args.convert)
    note = f" (resumed at byte {result.resumed_from})" if result.resumed_from else ""
    out.write(f"{result.path}: {result.bytes} bytes in {result.segments} verified "
              f"segment(s){note}\n")
    if result.converted is not None:
        out.write(f"{result.converted}: {args.convert}, checked with qemu-img\n")
    return EXIT_OK


def cmd_leftovers(args: argparse.Namespace, out: TextIO) -> int:
    # Checked before any request: deleting needs a yes, from --yes or from a person.
    if args.delete and not args.yes and not sys.stdin.isatty():
        print("imgtools: --delete without a terminal to confirm on: pass --yes as well",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    client = _connect(args)
    with client:
        report = client.leftovers(protected=args.protect, containers=args.container or None)
        if args.format == "json":
            out.write(report.to_json() + "\n")
        elif args.format == "csv":
            out.write(report.to_csv())
        else:
            out.write(report.table() + "\n")
        out.flush()
        if not args.delete or not report.items:
            return EXIT_OK
        if not args.yes:
            answer = input(f"delete these {report.object_count} object(s), {report.bytes} "
                           "bytes? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("imgtools: nothing deleted", file=sys.stderr)
                return EXIT_OK
        result = client.delete_leftovers(report, protected=args.protect)
    print(f"imgtools: {result}", file=sys.stderr)
    return EXIT_OK


# -- parser ---------------------------------------------------------------------------------


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imgtools",
        description="Export Cloud Images to Cloud Files (and import them), follow tasks, "
                    "audit them.",
        epilog="Credentials: API_ENDPOINT + AUTH_TOKEN (+ FILES_ENDPOINT), or RAX_USERNAME + "
               "RAX_API_KEY (+ RAX_REGION). Exit codes: 0 done, 1 task failed, 2 bad input "
               "or configuration, 3 timeout, 4 service or network error.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--emulator", action="store_true",
                        help="with no credentials set, use a local emulator for this command")
    common.add_argument("-v", "--verbose", action="store_true", help="progress on stderr")
    common.add_argument("--region", default=None,
                        help="the region to work in (default: RAX_REGION, else your default "
                             "region); tasks and audit also take 'all'")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace, TextIO], int], help: str,
            fmt: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(func=func)
        if fmt:
            p.add_argument("--format", choices=("table", "json", "csv"), default=None,
                           help="output format (default: table; json for a single task)")
        return p

    p = add("export", cmd_export, "start an export task (and optionally wait for it)")
    p.add_argument("image_id", help="the image's UUID")
    p.add_argument("--container", required=True, help="the receiving Cloud Files container")
    p.add_argument("--wait", action="store_true", help="poll until the task finishes")
    p.add_argument("--create-container", action="store_true",
                   help="create the container when it does not exist")
    p.add_argument("--no-preflight", action="store_true",
                   help="skip the checks made before the task is created")
    p.add_argument("--timeout", type=_positive_float, default=None,
                   help="seconds to wait with --wait (default: the client's, 3600)")

    p = add("import", cmd_import, "start an import task: a VHD in Cloud Files becomes an image")
    p.add_argument("location", metavar="CONTAINER/OBJECT",
                   help="the VHD (or its DLO manifest) in this region's Cloud Files")
    p.add_argument("--name", required=True, help="the new image's name")
    p.add_argument("--wait", action="store_true", help="poll until the task finishes")
    p.add_argument("--no-preflight", action="store_true",
                   help="skip the checks made before the task is created")
    p.add_argument("--timeout", type=_positive_float, default=None,
                   help="seconds to wait with --wait (default: the client's, 3600)")

    p = add("task", cmd_task, "show one task")
    p.add_argument("task_id")

    for name, func, what in (("tasks", cmd_tasks, "list tasks"),
                             ("audit", cmd_audit, "summary tables of tasks")):
        p = add(name, func, what)
        p.add_argument("--from", dest="source", choices=("service", "log", "all"),
                       default="all" if name == "audit" else "service",
                       help="the service, the local audit log, or both merged")
        p.add_argument("--since", help="only tasks created since, e.g. 7d, 12h, 2026-11-01")
        p.add_argument("--status", choices=("pending", "processing", "success", "failure"))
        p.add_argument("--type", choices=("export", "import"))
        p.add_argument("--account", action="append",
                       help="only tasks of this account (tenant id; repeat for several)")
        if name == "audit":
            p.add_argument("--by", choices=("type", "region", "account"), default="type",
                           help="what the summary rows are (default: type)")
        if name == "audit":
            from imgtools.details import DEFAULT_DETAILS, DETAILS_MODES

            p.add_argument("--details", choices=DETAILS_MODES, default=DEFAULT_DETAILS,
                           help="fetch the details (message, input, result) the log lacks for "
                                "the tasks in view: missing (default), failures only, all "
                                "again, or none")

    p = add("wait", cmd_wait, "wait for tasks to finish (batch polling)")
    p.add_argument("task_ids", nargs="+", metavar="TASK_ID")
    p.add_argument("--timeout", type=_positive_float, default=None,
                   help="seconds (default: the client's, 3600)")

    p = add("verify", cmd_verify, "verify an export: manifest, segments, sizes, MD5s",
            fmt=False)
    p.add_argument("task_id")

    p = add("download", cmd_download, "download an export, resumable and verified", fmt=False)
    p.add_argument("task_id")
    p.add_argument("dest", type=Path)
    p.add_argument("--no-resume", action="store_true", help="start again from byte 0")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--fsync", action="store_true",
                   help="flush to disk before the rename, so a power cut soon after cannot "
                        "damage the file (as slow as the disk's sustained writes)")
    p.add_argument("--convert", choices=("qcow2", "raw"), default=None, metavar="FORMAT",
                   help="then convert the VHD with qemu-img to qcow2 or raw, beside it "
                        "(checked; the VHD is kept)")

    p = add("leftovers", cmd_leftovers, "list (and with --delete remove) the export manifests "
            "and segments nothing still needs, with bytes and age")
    p.add_argument("--delete", action="store_true",
                   help="after the listing, delete exactly what it shows (asks first)")
    p.add_argument("--yes", action="store_true", help="with --delete: do not ask")
    p.add_argument("--protect", action="append", default=[], metavar="CONTAINER/OBJECT",
                   help="also keep this export (repeatable); running exports and unfinished "
                        "transfers are always kept")
    p.add_argument("--container", action="append", default=[],
                   help="only look in this container (repeatable; default: all)")

    p = sub.add_parser("log", help="the audit log: set up a team log, push and pull history",
                       description="The audit log: IMGTOOLS_LOG names it (a file, or a "
                                   "postgresql:// URL for a team log). URLs are never printed "
                                   "with their password.")
    p.set_defaults(func=cmd_log)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = actions.add_parser("init", help="create or upgrade a team log's tables (needs DDL rights)")
    q.add_argument("url", nargs="?", metavar="URL",
                   help="postgresql://user[:password]@host[:port]/db (default: $IMGTOOLS_LOG)")
    q = actions.add_parser("push", help="merge a local log (or a JSON Lines export) into the "
                                        "team log, and send what an outage kept; idempotent")
    q.add_argument("--to", metavar="URL", help="the team log (default: $IMGTOOLS_LOG)")
    q.add_argument("--from", dest="source", metavar="PATH",
                   help="a local log file or .jsonl export (default: the local log)")
    q = actions.add_parser("pull", help="merge the team log into a local log, for offline "
                                        "auditing; idempotent")
    q.add_argument("--from", dest="source", metavar="URL",
                   help="the team log (default: $IMGTOOLS_LOG)")
    q.add_argument("--to", metavar="PATH", help="the local log file (default: the local log)")

    from imgtools._transfer_cli import add_commands as add_transfer_commands

    add_transfer_commands(add, _connect)

    sub.add_parser("emulator", help="run the local emulator (see: imgtools emulator --help)",
                   add_help=False)
    sub.add_parser("lab", help="the emulator and JupyterLab on the notebooks, in a working "
                               "folder (see: imgtools lab --help)", add_help=False)
    sub.add_parser("runbook", help="run the export runbook notebook with papermill (see: "
                                   "imgtools runbook --help)", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Run the command line; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    out = out or sys.stdout
    # Commands with a command line of their own, handed the rest of it.
    if argv and argv[0] == "emulator":
        from imgtools._embedded import run_emulator

        return run_emulator(argv[1:])
    if argv and argv[0] == "lab":
        from imgtools.lab import main as lab_main

        return lab_main(argv[1:], prog="imgtools lab")
    if argv and argv[0] == "runbook":
        from imgtools.runbook import main as runbook_main

        return runbook_main(argv[1:], prog="imgtools runbook")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:
        return int(stop.code or 0) if isinstance(stop.code, int) else EXIT_BAD_INPUT
    if getattr(args, "format", None) is None:
        args.format = "json" if args.command == "task" else "table"
    try:
        return int(args.func(args, out))
    except ImgToolsError as error:
        print(f"imgtools: {type(error).__name__}: {error}", file=sys.stderr)
        return _exit_code(error)
    except KeyboardInterrupt:
        print("imgtools: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""``imgtools transfer`` and ``imgtools transfers``: registered by ``cli.build_parser``; errors
go back to ``cli.main``, which prints them and picks the exit code (a ``TransferFailed`` by its
cause). This module never imports ``cli`` (that one imports it)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from imgtools._exceptions import ConfigurationError, ValidationError

if TYPE_CHECKING:
    from imgtools.transfer import CleanupPolicy

__all__ = ["TO_API_KEY_ENV", "TO_USERNAME_ENV", "add_commands"]

#: The other account's login for ``--to-account`` (same identity service as the source's).
TO_USERNAME_ENV = "IMGTOOLS_TO_USERNAME"
TO_API_KEY_ENV = "IMGTOOLS_TO_API_KEY"
#: Columns of the ``transfers`` table; json/csv have them all.
TABLE_COLUMNS = ["id", "status", "step", "source_region", "source_image", "target_region",
                 "target_account", "target_image", "copy_bytes", "duration", "error"]

_Add = Callable[..., argparse.ArgumentParser]
_Connect = Callable[[argparse.Namespace], Any]


class _Reporter:
    """Progress on stderr: a line per step; a bar for the copy when stderr is a terminal."""

    def __init__(self, *, bar: bool) -> None:
        self.bar = bar
        self.update: Callable[[int, int], None] | None = None
        self.close: Callable[[], None] | None = None

    def step(self, step: str, outcome: str) -> None:
        if self.close is not None and outcome != "running":
            self.close()
            self.update = self.close = None
        print(f"{step}: {outcome}", file=sys.stderr, flush=True)

    def progress(self, done: int, total: int) -> None:
        if not self.bar:
            return
        if self.update is None:
            from imgtools._files import tqdm_progress

            self.update, self.close = tqdm_progress(total, "copy")
        self.update(done, total)


def _target(args: argparse.Namespace, client: Any) -> Any:
    """``to=``: the region name, or a client of the other account (``--to-account``)."""
    region = args.to_region or client.region
    if not args.to_account:
        if not args.to_region:
            raise ValidationError("say where to: --to-region REGION and/or --to-account "
                                  "TENANT", field="to_region")
        return region
    import imgtools

    username, api_key = os.environ.get(TO_USERNAME_ENV), os.environ.get(TO_API_KEY_ENV)
    if not username or not api_key:
        raise ConfigurationError(f"--to-account needs that account's login: set "
                                 f"{TO_USERNAME_ENV} and {TO_API_KEY_ENV}")
    other = imgtools.connect(username=username, api_key=api_key, region=region,
                             identity_url=client._creds.identity_url, log=False)
    if other.tenant_id != args.to_account:
        other.close()
        raise ConfigurationError(f"{TO_USERNAME_ENV} logs in to account {other.tenant_id}, "
                                 f"not {args.to_account}")
    return other


def cmd_transfer(args: argparse.Namespace, out: TextIO, connect: _Connect) -> int:
    if (args.image_id is None) == (args.resume is None):
        raise ValidationError("give an IMAGE to transfer, or --resume TRANSFER_ID",
                              field="image_id")
    reporter = _Reporter(bar=sys.stderr.isatty() and not args.no_progress)
    options: dict[str, Any] = {"on_step": reporter.step, "progress": reporter.progress}
    client = connect(args)
    with contextlib.ExitStack() as stack:
        stack.enter_context(client)
        to: Any = None
        if args.resume is None or args.to_region or args.to_account:
            to = _target(args, client)
            if not isinstance(to, str):
                stack.enter_context(to)  # the other account's client: ours to close
        if args.resume is not None:
            handle = client.resume_transfer(args.resume, to=to, wait=False, **options)
            handle.run()
        else:
            cleanup: CleanupPolicy = ("both" if args.cleanup else "copy" if args.keep_export
                                      else "none")
            handle = client.transfer(args.image_id, to=to, name=args.name, cleanup=cleanup,
                                     container=args.container, wait=False, **options)
            handle.run(until=None if args.wait else "export")
        rec = handle.record
        _print(args.format, out, [rec])
        if rec.status != "done":
            print(f"transfer {rec.id} is under way (last step: {rec.step}); continue it with: "
                  f"imgtools transfer --resume {rec.id}", file=sys.stderr)
    return 0


def cmd_transfers(args: argparse.Namespace, out: TextIO, connect: _Connect) -> int:
    from imgtools.transfer import TransferStore

    path = None
    if args.emulator:  # transfers seen through the emulator are in the log beside its data
        with connect(args) as client:
            path = getattr(client.log, "path", None)
    _print(args.format, out, TransferStore(path).records())
    return 0


def _print(fmt: str, out: TextIO, records: list[Any]) -> None:
    from imgtools.transfer import transfers_frame

    frame = transfers_frame(records)
    if fmt == "json":
        out.write(frame.to_json(orient="records", date_format="iso", date_unit="s") + "\n")
    elif fmt == "csv":
        frame.to_csv(out, index=False)
    elif not len(frame):
        out.write("no transfers\n")
    else:
        shown = frame[TABLE_COLUMNS].copy()
        shown["duration"] = shown["duration"].round(1)
        out.write(shown.astype(object).where(shown.notna(), "").to_string(index=False) + "\n")


def add_commands(add: _Add, connect: _Connect) -> None:
    """Add ``transfer`` and ``transfers`` through ``cli``'s own ``add``."""
    from imgtools.transfer import DEFAULT_TRANSFER_CONTAINER

    p = add("transfer", lambda args, out: cmd_transfer(args, out, connect),
            "move an image to another region or account (export, copy, import, metadata, "
            "verify); or --resume one")
    p.add_argument("image_id", nargs="?", metavar="IMAGE", help="the image's UUID")
    p.add_argument("--resume", metavar="TRANSFER_ID",
                   help="continue a recorded transfer from its last completed step")
    p.add_argument("--to-region", help="the target region (default: the source's)")
    p.add_argument("--to-account", metavar="TENANT",
                   help=f"the target account (its login from {TO_USERNAME_ENV} and "
                        f"{TO_API_KEY_ENV})")
    p.add_argument("--name", help="the new image's name (default: the source's)")
    p.add_argument("--container", default=DEFAULT_TRANSFER_CONTAINER,
                   help=f"the container used on both sides (default: "
                        f"{DEFAULT_TRANSFER_CONTAINER})")
    policy = p.add_mutually_exclusive_group()
    policy.add_argument("--cleanup", action="store_true",
                        help="after the import: delete the export and the target copy")
    policy.add_argument("--keep-export", action="store_true",
                        help="after the import: delete the target copy, keep the export")
    p.add_argument("--wait", action="store_true",
                   help="run every step (without: stop once the export task is started)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add("transfers", lambda args, out: cmd_transfers(args, out, connect),
        "list the recorded transfers (any state) and their lineage")

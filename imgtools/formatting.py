"""Text for people: sizes and errors as short readable strings. No widgets, no pandas, so a
headless runbook, the CLI and the widgets all use the same words."""

from __future__ import annotations

from imgtools._exceptions import ImgToolsError

__all__ = ["MAX_ERROR", "format_bytes", "one_line"]

#: Longest error line shown, characters.
MAX_ERROR = 300


def one_line(exc: BaseException) -> str:
    """An error as one readable line: its message (first line, shortened), never a traceback.

    Errors that are not imgtools' own are prefixed with their type, since their message alone
    is often unreadable ("[Errno 2] ...")."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if not isinstance(exc, ImgToolsError):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 1] + "…"


def format_bytes(size: int | None) -> str:
    """``6291456`` as ``"6.0 MiB"``; ``None`` as ``"size unknown"``."""
    if size is None:
        return "size unknown"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")

"""What the verbs print: the two consoles, the colour of each message state, counts, durations
and times, and the two errors a verb raises, each shown as one red line on stderr."""

from __future__ import annotations

import datetime
from typing import IO, Any

import click
from rich.console import Console
from rich.markup import escape

from pigeon.message import Pause

EXIT_FAILED = 1
EXIT_ERROR = 2

STATE_STYLES = {
    "waiting": "magenta",
    "scheduled": "blue",
    "pending": "cyan",
    "leased": "yellow",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "dim",
    "dead": "bold red",
}


def stdout_console() -> Console:
    return Console(highlight=False)


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False)


class CommandError(click.ClickException):
    """The command could not run: one red line on stderr, exit code 2."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))

    def show(self, file: IO[Any] | None = None) -> None:
        stderr_console().print(
            f"[bold red]error:[/] {escape(self.format_message())}", soft_wrap=True
        )


class CommandFailed(CommandError):
    """What the command was asked about failed or does not exist: exit code 1."""

    exit_code = EXIT_FAILED


def format_count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def format_duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    if seconds < 86400:
        return f"{seconds // 3600:.0f}h{seconds % 3600 // 60:02.0f}m"
    return f"{seconds // 86400:.0f}d{seconds % 86400 // 3600:02.0f}h"


def format_when(epoch: float | None, now: float) -> str:
    """An absolute UTC time and how far it is from now."""
    if epoch is None:
        return ""
    stamp = datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
    delta = epoch - now
    relative = f"in {format_duration(delta)}" if delta > 0 else f"{format_duration(-delta)} ago"
    return f"{stamp} UTC ({relative})"


def describe_pause(pause: Pause, now: float) -> str:
    """How long a pause lasts, and why: what ``pause`` and ``status`` print."""
    until = f"until {format_when(pause.until, now)}" if pause.until is not None else "until resumed"
    return until + (f": {pause.reason}" if pause.reason else "")

"""What the verbs print: the two consoles, the colour of each message state, counts, durations
and times, and the two errors a verb raises, each shown as one red line on stderr."""

from __future__ import annotations

from typing import IO, Any

import click
from rich.console import Console
from rich.markup import escape

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

"""``pigeon demo``: the command; the demo itself is :mod:`pigeon.demo`."""

from __future__ import annotations

import click

from pigeon.cli.output import CommandFailed, stdout_console
from pigeon.demo import DemoFailed, run_demo


@click.command()
def demo() -> None:
    """Run the demo: a real worker and a mixed batch.

    One worker process on a SQLite database in a temporary directory, a mixed batch of work
    with live progress, and what happened. Takes a few seconds; leaves nothing behind.
    """
    try:
        run_demo(stdout_console())
    except DemoFailed as exc:
        raise CommandFailed(f"the demo failed: {exc}") from None

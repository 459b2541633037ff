"""``pigeon``: the command line.

Every verb works through the App and Backend API, never a backend's internals. A verb that
needs a backend takes APP (``module:attribute``) or ``--url`` (default: ``PIGEON_URL``, else
``sqlite:///pigeon.db``). An error is one red line on stderr, without a traceback (unless
``pigeon --debug``), and passwords in URLs are never printed.

Exit codes: 0 done; 1 what was asked about failed or does not exist (a task that failed, an
id that is unknown, a message that could not be cancelled); 2 the command could not run (bad
arguments, configuration, backend unreachable).

This module holds the group and its error handling; each group of verbs is a module of its
own (worker, send, observe, manage, dashboard, demo), registered on the group here.
"""

from __future__ import annotations

from typing import Any

import click

from pigeon.cli.backend import CommandState
from pigeon.cli.dashboard import dashboard
from pigeon.cli.demo import demo
from pigeon.cli.manage import cancel, dlq, migrate, pause, purge, resume
from pigeon.cli.observe import events, inspect_, status
from pigeon.cli.output import CommandError
from pigeon.cli.send import _ProgressBar as _ProgressBar
from pigeon.cli.send import send
from pigeon.cli.worker import worker
from pigeon.errors import PigeonError
from pigeon.events import describe as describe_event

# describe_event and _ProgressBar: still reachable as pigeon.cli.<name>, as before the split.
__all__ = ["cli", "describe_event", "main"]


class _Group(click.Group):
    """Turns any error a verb raises into one line (``--debug`` shows the traceback)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            state = ctx.obj if isinstance(ctx.obj, CommandState) else CommandState()
            if state.debug:
                raise
            if isinstance(exc, PigeonError):
                message = str(exc) or type(exc).__name__
            else:
                message = (
                    f"{type(exc).__name__}: {exc} (run `pigeon --debug ...` for the traceback)"
                )
            raise CommandError(state.scrub(message)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--debug",
    is_flag=True,
    envvar="PIGEON_DEBUG",
    help="Show the traceback of an error instead of one line.",
)
@click.version_option(package_name="pigeon", prog_name="pigeon")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """pigeon: asynchronous tasks and messages for Python.

    Start with `pigeon demo`.
    """
    ctx.obj = CommandState(debug=debug)


for _verb in [
    worker,
    send,
    status,
    inspect_,
    events,
    cancel,
    purge,
    pause,
    resume,
    dlq,
    migrate,
    dashboard,
    demo,
]:
    cli.add_command(_verb)


def main() -> None:
    """The ``pigeon`` script."""
    cli(prog_name="pigeon")

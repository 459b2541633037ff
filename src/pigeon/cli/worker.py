"""``pigeon worker``: run the tasks of an App, in this process or under a supervisor."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any

import click

from pigeon.cli.backend import CommandState, load_app
from pigeon.worker.process import StopSignals, run_worker
from pigeon.worker.supervisor import supervise

log = logging.getLogger("pigeon.cli")

LOG_LEVELS = ["debug", "info", "warning", "error"]


@click.command()
@click.argument("app_spec", metavar="APP")
@click.option(
    "-q",
    "--queues",
    multiple=True,
    metavar="QUEUES",
    help="Queues to consume, comma-separated, first has precedence (default: the app's queue).",
)
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Tasks run at once per process.",
)
@click.option(
    "-p",
    "--processes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes; more than 1 runs a supervisor that restarts one that dies.",
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="On SIGTERM, how long running tasks get to finish before they are released.",
)
@click.option(
    "--max-tasks",
    type=click.IntRange(min=1),
    metavar="N",
    help="Recycle a worker process after N tasks (with -p: a fresh one replaces it).",
)
@click.option(
    "--no-scheduler",
    is_flag=True,
    help="Do not send the app's periodic tasks from this worker (other workers do).",
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="info",
    show_default=True,
)
@click.pass_context
def worker(
    ctx: click.Context,
    app_spec: str,
    queues: tuple[str, ...],
    concurrency: int,
    processes: int,
    grace: float,
    max_tasks: int | None,
    no_scheduler: bool,
    log_level: str,
) -> None:
    """Run a worker for APP (module:attribute).

    It runs the tasks of APP from its queues until SIGTERM or Ctrl-C. A queue listed first
    has precedence, but one fetch in ten puts the others first, so none is starved. Unless
    --no-scheduler, it also takes part in sending APP's periodic tasks (one worker at a time
    sends each tick).
    SIGTERM (or Ctrl-C) stops fetching, lets running tasks finish within --grace seconds and
    releases the rest for another worker; a second Ctrl-C exits at once.
    """
    # First of all: a SIGTERM while the app is being imported asks this process to stop.
    signals = StopSignals()
    signals.install()
    state: CommandState = ctx.obj
    _configure_logging(log_level)
    app = load_app(app_spec)  # in the supervisor too: a bad APP is one line, not N crashes
    state.urls.add(app.url)
    queue_list = [q.strip() for chunk in queues for q in chunk.split(",") if q.strip()]
    if not app.tasks:
        log.warning(
            "%s has no tasks registered: every message it fetches will be dead-lettered", app_spec
        )
    if processes > 1:
        if signals.received:
            ctx.exit(0)  # stopped before it started
        ctx.exit(supervise(child_argv(ctx, processes=1), processes, grace))
    code = run_worker(
        app,
        queue_list or None,
        concurrency,
        grace=grace,
        max_tasks=max_tasks,
        signals=signals,
        scheduler=not no_scheduler,
    )
    ctx.exit(code)


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)-7s [%(process)d] %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )


def child_argv(ctx: click.Context, **overrides: Any) -> list[str]:
    """The command line that runs this command again in a new process: ``python -m pigeon``,
    the options of each enclosing group, the verb, and its own parameters as they were
    parsed, with ``overrides`` (parameter name -> value) in place of some.

    It is read off the commands' declared parameters, so an option added to ``worker`` (or
    to the group, like --debug) reaches the children of ``-p N`` with no second change.
    """
    verbs: list[str] = []
    while ctx.parent is not None:
        verbs[:0] = [ctx.command.name or "", *_replay(ctx.command, ctx.params, overrides)]
        overrides = {}  # they are the verb's, not its group's
        ctx = ctx.parent
    return [sys.executable, "-m", "pigeon", *_replay(ctx.command, ctx.params, {}), *verbs]


def _replay(
    command: click.Command, params: Mapping[str, Any], overrides: Mapping[str, Any]
) -> list[str]:
    """The arguments that give ``command`` these parameter values: its arguments, then each
    option set (``--name value``, once per value of a multiple one; a flag by its name)."""
    arguments: list[str] = []
    options: list[str] = []
    for param in command.params:
        if param.name is None or param.name not in params:
            continue  # not a value (--help, --version)
        value = overrides.get(param.name, params[param.name])
        if isinstance(param, click.Argument) and param.nargs == 1:
            arguments.append(str(value))
        elif isinstance(param, click.Option) and _replayable(param):
            options += _replay_option(param, value)
        else:
            raise TypeError(f"cannot pass {param.name!r} on to a child process: add it here")
    return arguments + options


def _replayable(option: click.Option) -> bool:
    # A flag with a flag_value, a counted option or one of many values per use would each
    # need a rule of its own; none is declared yet, and a new one fails here, loudly.
    return option.nargs == 1 and not option.count and (option.is_bool_flag or not option.is_flag)


def _replay_option(option: click.Option, value: Any) -> list[str]:
    name = max(option.opts, key=len)  # the long name reads best in ps
    if option.is_flag and option.is_bool_flag:
        if value:
            return [name]
        return [option.secondary_opts[0]] if option.secondary_opts else []
    if value is None:
        return []
    values = value if option.multiple else [value]
    return [word for v in values for word in (name, str(v))]

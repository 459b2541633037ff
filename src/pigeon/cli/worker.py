"""``pigeon worker``: run the tasks of an App, in this process or under a supervisor."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import click

from pigeon import metrics
from pigeon.app import App
from pigeon.cli.backend import CommandState, load_app
from pigeon.worker.health import HealthConfig
from pigeon.worker.observer import Observer
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
    "--health-port",
    type=click.IntRange(1, 65535),
    metavar="PORT",
    help="Serve the probes /livez and /readyz on PORT (with -p: the supervisor, for all).",
)
@click.option(
    "--health-host",
    default="127.0.0.1",
    show_default=True,
    metavar="HOST",
    help="The address --health-port listens on (0.0.0.0 for a probe from outside the host).",
)
@click.option(
    "--health-file",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PATH",
    help="Rewrite PATH every second while live (JSON: live, ready, reason); removed when not.",
)
@click.option(
    "--health-deadline",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    metavar="SECONDS",
    help="Not live once the event loop or the fetch loop has not moved for this long.",
)
@click.option(
    "--ready-deadline",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="Not ready once the backend has not answered for this long.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    metavar="PORT",
    help="Serve Prometheus metrics at /metrics on PORT (with -p: the supervisor, for all).",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    metavar="HOST",
    help="The address --metrics-port listens on (0.0.0.0 for a scraper from outside the host).",
)
@click.option(
    "--metrics-dir",
    hidden=True,
    metavar="DIR",
    help="Set by the supervisor of -p N --metrics-port: where its processes write metrics.",
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
    health_port: int | None,
    health_host: str,
    health_file: Path | None,
    health_deadline: float,
    ready_deadline: float,
    metrics_port: int | None,
    metrics_host: str,
    metrics_dir: str | None,
    log_level: str,
) -> None:
    """Run a worker for APP (module:attribute).

    It runs the tasks of APP from its queues until SIGTERM or Ctrl-C. A queue listed first
    has precedence, but one fetch in ten puts the others first, so none is starved. Unless
    --no-scheduler, it also takes part in sending APP's periodic tasks (one worker at a time
    sends each tick).
    SIGTERM (or Ctrl-C) stops fetching, lets running tasks finish within --grace seconds and
    releases the rest for another worker; a second Ctrl-C exits at once.
    --health-port and --health-file answer liveness and readiness probes (README: "Health
    checks"); with -p the supervisor answers for all its processes.
    """
    # First of all: a SIGTERM while the app is being imported asks this process to stop.
    signals = StopSignals()
    signals.install()
    state: CommandState = ctx.obj
    _configure_logging(log_level)
    app = load_app(app_spec)  # in the supervisor too: a bad APP is one line, not N crashes
    state.urls.add(app.url)
    queue_list = [q.strip() for chunk in queues for q in chunk.split(",") if q.strip()]
    health = HealthConfig(health_port, health_host, health_file, health_deadline, ready_deadline)
    if not app.tasks:
        log.warning(
            "%s has no tasks registered: every message it fetches will be dead-lettered", app_spec
        )
    if processes > 1:
        if signals.received:
            ctx.exit(0)  # stopped before it started
        # The supervisor answers the probes; each child keeps a health file it is given.
        with _pool_metrics(app, metrics_host, metrics_port) as pool:
            argv = child_argv(
                ctx,
                processes=1,
                health_port=None,
                health_file=None,
                metrics_port=None,
                metrics_dir=pool.directory if pool is not None else None,
            )
            forget = pool.forget if pool is not None else None
            code = supervise(argv, processes, grace, forget, health=health)
        ctx.exit(code)
    observer = _observer(app, metrics_host, metrics_port, metrics_dir)
    code = run_worker(
        app,
        queue_list or None,
        concurrency,
        grace=grace,
        max_tasks=max_tasks,
        signals=signals,
        scheduler=not no_scheduler,
        health=health,
        observer=observer,
    )
    ctx.exit(code)


@contextlib.contextmanager
def _pool_metrics(app: App, host: str, port: int | None) -> Iterator[metrics.Supervised | None]:
    """The supervisor's one metrics endpoint for its processes, if --metrics-port."""
    if port is None:
        yield None
        return
    with metrics.supervised(app, host, port) as pool:
        yield pool


def _observer(app: App, host: str, port: int | None, directory: str | None) -> Observer | None:
    """A worker process's metrics: served by itself (--metrics-port), written for its
    supervisor (--metrics-dir), or none at all."""
    if directory is not None:
        return metrics.for_child(directory)
    if port is not None:
        return metrics.for_worker(app, host, port)
    return None


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

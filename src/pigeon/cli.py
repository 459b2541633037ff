"""``pigeon``: the command line.

Every verb works through the App and Backend API, never a backend's internals. A verb that
needs a backend takes APP (``module:attribute``) or ``--url`` (default: ``PIGEON_URL``, else
``sqlite:///pigeon.db``). An error is one red line on stderr, without a traceback (unless
``pigeon --debug``), and passwords in URLs are never printed.

Exit codes: 0 done; 1 what was asked about failed or does not exist (a task that failed, an
id that is unknown, a message that could not be cancelled); 2 the command could not run (bad
arguments, configuration, backend unreachable).
"""

from __future__ import annotations

import asyncio
import datetime
import importlib
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import IO, Any, TypeVar
from urllib.parse import urlsplit

import click
import msgspec
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from pigeon import codec
from pigeon.app import App
from pigeon.backends import DEFAULT_URL, Backend, redact
from pigeon.backends.base import MigratingBackend
from pigeon.errors import Cancelled, ConfigError, PigeonError, TaskError
from pigeon.events import describe as describe_event
from pigeon.events import follow as follow_events
from pigeon.message import MessageInfo, Stats
from pigeon.message import Progress as TaskProgress
from pigeon.promise import MessagePromise
from pigeon.secret import redact as redact_secrets
from pigeon.task import Task

T = TypeVar("T")

log = logging.getLogger("pigeon.cli")

EXIT_FAILED = 1
EXIT_ERROR = 2

#: Seconds a control command waits for the backend before it says it did not answer.
BACKEND_TIMEOUT = 30.0

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


# errors ------------------------------------------------------------------------------------


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


@dataclass
class _State:
    """What the whole command shares: --debug, and the URLs whose passwords to hide."""

    debug: bool = False
    urls: set[str] = field(default_factory=set)

    def scrub(self, text: str) -> str:
        for url in self.urls:
            text = text.replace(url, redact(url))
            password = _password(url)
            if password and len(password) >= 3:
                text = text.replace(password, "***")
        return text


def _password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None


class _Group(click.Group):
    """Turns any error a verb raises into one line (``--debug`` shows the traceback)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            state = ctx.obj if isinstance(ctx.obj, _State) else _State()
            if state.debug:
                raise
            if isinstance(exc, PigeonError):
                message = str(exc) or type(exc).__name__
            else:
                message = (
                    f"{type(exc).__name__}: {exc} (run `pigeon --debug ...` for the traceback)"
                )
            raise CommandError(state.scrub(message)) from None


# loading the App and reaching the backend ------------------------------------------------


def load_app(spec: str) -> App:
    """The App named by ``module:attribute``, imported with the current directory on
    ``sys.path`` (like uvicorn). Raises ConfigError with a one-line reason."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"APP must be module:attribute (like myapp:app), not {spec!r}")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        if module_name == missing or module_name.startswith(missing + "."):
            raise ConfigError(
                f"cannot import {module_name!r}: no module named {missing!r}"
                f" (looked in {cwd} and on sys.path)"
            ) from exc
        raise ConfigError(f"importing {module_name!r} failed: {exc}") from exc
    except PigeonError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"importing {module_name!r} failed: {type(exc).__name__}: {exc}"
            " (run `pigeon --debug ...` for the traceback)"
        ) from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not isinstance(obj, App):
        raise ConfigError(f"{spec} is a {type(obj).__name__}, not a pigeon.App")
    return obj


def _app_for(state: _State, app_spec: str | None, url: str | None) -> App:
    if app_spec and url:
        raise ConfigError("give APP or --url, not both (the App has its own URL)")
    app = (
        load_app(app_spec) if app_spec else App(url or os.environ.get("PIGEON_URL") or DEFAULT_URL)
    )
    state.urls.add(app.url)
    return app


def _call(app: App, op: Callable[[Backend], Awaitable[T]]) -> T:
    """Run one backend operation for this command on an event loop of its own, then close
    the backend. Bounded by BACKEND_TIMEOUT."""

    async def run() -> T:
        try:
            async with asyncio.timeout(BACKEND_TIMEOUT):
                return await op(await app.open())  # open: this loop is the App's home now
        except TimeoutError as exc:
            if isinstance(exc, PigeonError):
                raise
            raise PigeonError(
                f"the backend {redact(app.url)} did not answer within {BACKEND_TIMEOUT:.0f} s"
            ) from None
        finally:
            await app.close()

    return asyncio.run(run())


def _backend_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option(
        "--url",
        metavar="URL",
        help="Backend URL (default: $PIGEON_URL, else sqlite:///pigeon.db).",
    )(f)
    f = click.option(
        "--app",
        "-A",
        "app_spec",
        metavar="APP",
        help="module:attribute of a pigeon.App whose backend to use, instead of --url.",
    )(f)
    return f


# the group ---------------------------------------------------------------------------------


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
    ctx.obj = _State(debug=debug)


def main() -> None:
    """The ``pigeon`` script."""
    cli(prog_name="pigeon")


# worker ------------------------------------------------------------------------------------

LOG_LEVELS = ["debug", "info", "warning", "error"]


@cli.command()
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
    from pigeon.worker.process import StopSignals, run_worker

    # First of all: a SIGTERM while the app is being imported asks this process to stop.
    signals = StopSignals()
    signals.install()
    state: _State = ctx.obj
    _configure_logging(log_level)
    app = load_app(app_spec)  # in the supervisor too: a bad APP is one line, not N crashes
    state.urls.add(app.url)
    queue_list = [q.strip() for chunk in queues for q in chunk.split(",") if q.strip()]
    if not app.tasks:
        log.warning(
            "%s has no tasks registered: every message it fetches will be dead-lettered", app_spec
        )
    if processes > 1:
        from pigeon.worker.supervisor import supervise

        if signals.received:
            ctx.exit(0)  # stopped before it started
        argv = [sys.executable, "-m", "pigeon"]
        if state.debug:
            argv.append("--debug")
        argv += ["worker", app_spec, "-c", str(concurrency), "--grace", str(grace)]
        argv += ["--log-level", log_level, "-p", "1"]
        if queue_list:
            argv += ["-q", ",".join(queue_list)]
        if max_tasks is not None:
            argv += ["--max-tasks", str(max_tasks)]
        if no_scheduler:
            argv.append("--no-scheduler")
        ctx.exit(supervise(argv, processes, grace))
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


# send --------------------------------------------------------------------------------------


@cli.command()
@click.argument("app_spec", metavar="APP")
@click.argument("task_name", metavar="TASK")
@click.argument("args", nargs=-1)
@click.option("--kwargs", "kwargs_json", metavar="JSON", help='Keyword arguments: {"name": value}.')
@click.option("--wait", is_flag=True, help="Wait for the outcome and print the result as JSON.")
@click.option(
    "--timeout", type=click.FloatRange(min=0, min_open=True), metavar="S", help="With --wait."
)
@click.option("--queue", metavar="Q", help="Send to this queue instead of the task's.")
@click.option(
    "--delay", type=click.FloatRange(min=0), metavar="S", help="Run no sooner than S s from now."
)
@click.option("--key", metavar="K", help="Idempotency key: a second send with it sends nothing.")
@click.pass_obj
def send(
    state: _State,
    app_spec: str,
    task_name: str,
    args: tuple[str, ...],
    kwargs_json: str | None,
    wait: bool,
    timeout: float | None,
    queue: str | None,
    delay: float | None,
    key: str | None,
) -> None:
    """Send a message to run TASK with ARGS; prints its id.

    TASK is the registered name (myapp.add) or the function's name when only one task has
    it. Each ARG is read as JSON when it parses (42, 1.5, true, null, "[1, 2]") and as a
    string otherwise. Put -- before ARGS that start with a dash: send myapp:app add -- -1 2
    """
    values = [_parse_arg(a) for a in args]
    kwargs = _parse_kwargs(kwargs_json)
    app = _app_for(state, app_spec, None)
    task = find_task(app, task_name)
    changes: dict[str, Any] = {"queue": queue, "delay": delay, "key": key}
    changes = {k: v for k, v in changes.items() if v is not None}
    target = task.options(**changes) if changes else task

    async def run() -> tuple[str, Any]:
        await app.open()  # this loop is the App's home: the send below is batched on it
        try:
            promise = target.send(*values, **kwargs)
            assert isinstance(promise, MessagePromise)
            mid = await promise.sent()
            click.echo(mid)
            if not wait:
                return mid, None
            try:
                with _ProgressBar(f"{task.name} {mid}") as bar:
                    promise.on_progress(bar.update)
                    async with asyncio.timeout(timeout):
                        return mid, await promise
            except TimeoutError as exc:
                if isinstance(exc, PigeonError):
                    raise
                raise CommandFailed(
                    f"no outcome for {mid} within {timeout:g} s; it may still run"
                    f" (pigeon inspect {mid})"
                ) from None
            except TaskError as exc:
                if exc.traceback:
                    stderr_console().print(
                        escape(exc.traceback.rstrip()), style="dim", soft_wrap=True
                    )
                raise CommandFailed(f"{task.name} {mid} {exc.state}: {exc}") from None
            except Cancelled as exc:
                raise CommandFailed(str(exc)) from None
        finally:
            await app.close()

    _, value = asyncio.run(run())
    if wait:
        click.echo(_to_json(value))


class _ProgressBar:
    """A spinner while waiting for an outcome, which turns into a progress bar (with the
    task's latest text) as soon as the task reports progress; on stderr."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[text]}", style="dim"),
            TimeElapsedColumn(),
            console=stderr_console(),
            transient=True,
        )
        self.row = self.progress.add_task(f"waiting for {escape(what)}", total=None, text="")

    def __enter__(self) -> _ProgressBar:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, report: TaskProgress) -> None:
        """Show a report: a fraction turns the spinner into a bar; text alone keeps the bar
        (or spinner) as it was and changes the line beside it."""
        if report.fraction is not None:
            self.progress.update(self.row, total=1.0, completed=report.fraction)
        self.progress.update(self.row, description=escape(self.what), text=escape(report.text))


def find_task(app: App, name: str) -> Task[Any, Any]:
    """The task registered as ``name``, or the one task whose short name is ``name``."""
    if name in app.tasks:
        return app.tasks[name]
    matches = [
        full
        for full, task in app.tasks.items()
        if full.rsplit(".", 1)[-1] == name or getattr(task.fn, "__name__", None) == name
    ]
    if len(matches) == 1:
        return app.tasks[matches[0]]
    if matches:
        raise ConfigError(f"{name!r} is ambiguous: it could be {', '.join(sorted(matches))}")
    known = ", ".join(sorted(app.tasks)) or "none"
    raise ConfigError(f"no task named {name!r} in this app (its tasks: {known})")


def _parse_arg(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _parse_kwargs(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise CommandError(f"--kwargs is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise CommandError(f'--kwargs must be a JSON object ({{"name": value}}), not {text}')
    return value


def _to_json(value: Any) -> str:
    try:
        return msgspec.json.encode(value).decode()
    except (TypeError, ValueError):
        return json.dumps(value, default=repr)


# status ------------------------------------------------------------------------------------


@cli.command()
@click.argument("app_arg", metavar="[APP]", required=False)
@_backend_options
@click.pass_obj
def status(state: _State, app_arg: str | None, app_spec: str | None, url: str | None) -> None:
    """Queues by state, dead letters and live workers."""
    if app_arg and app_spec:
        raise ConfigError("give APP once: as an argument or as --app")

    async def read(b: Backend) -> tuple[Stats, float]:
        return await b.stats(), await b.time()

    app = _app_for(state, app_arg or app_spec, url)
    stats, now = _call(app, read)
    out = stdout_console()
    out.print(f"[bold]pigeon[/] {escape(redact(app.url))}")
    out.print(queues_table(stats))
    out.print(f"{_count(stats.results, 'outcome')} kept, {_count(stats.dead, 'dead letter')}")
    out.print(workers_table(stats, now))


def queues_table(stats: Stats) -> Table | str:
    if not stats.queues:
        return "no queued messages"
    table = Table(title="queues", title_justify="left")
    table.add_column("queue")
    columns = ["waiting", "scheduled", "pending", "leased", "dead"]
    for name in columns:
        table.add_column(name, justify="right", style=STATE_STYLES[name])
    for name, qs in sorted(stats.queues.items()):
        table.add_row(name, *(f"{getattr(qs, c):,}" for c in columns))
    if len(stats.queues) > 1:
        sums = [sum(getattr(qs, c) for qs in stats.queues.values()) for c in columns]
        table.add_row("[bold]total[/]", *(f"[bold]{n:,}[/]" for n in sums), end_section=True)
    return table


def workers_table(stats: Stats, now: float) -> Table | str:
    if not stats.workers:
        return "no live workers"
    table = Table(title="workers", title_justify="left")
    for name, justify in [
        ("id", "left"),
        ("host", "left"),
        ("pid", "right"),
        ("queues", "left"),
        ("running", "right"),
        ("done", "right"),
        ("up", "right"),
        ("last seen", "right"),
    ]:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for w in sorted(stats.workers, key=lambda w: (w.host, w.pid)):
        table.add_row(
            w.id,
            w.host,
            str(w.pid),
            ",".join(w.queues),
            f"{w.running}/{w.concurrency}",
            f"{w.done:,}",
            _duration(now - w.started_at) if w.started_at else "",
            f"{_duration(now - w.last_seen)} ago" if w.last_seen else "",
        )
    return table


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    if seconds < 86400:
        return f"{seconds // 3600:.0f}h{seconds % 3600 // 60:02.0f}m"
    return f"{seconds // 86400:.0f}d{seconds % 86400 // 3600:02.0f}h"


def _when(epoch: float | None, now: float) -> str:
    """An absolute UTC time and how far it is from now."""
    if epoch is None:
        return ""
    stamp = datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
    delta = epoch - now
    relative = f"in {_duration(delta)}" if delta > 0 else f"{_duration(-delta)} ago"
    return f"{stamp} UTC ({relative})"


# inspect -----------------------------------------------------------------------------------


@cli.command("inspect")
@click.argument("message_id", metavar="ID")
@_backend_options
@click.pass_obj
def inspect_(state: _State, message_id: str, app_spec: str | None, url: str | None) -> None:
    """Everything the backend knows of one message."""

    async def read(b: Backend) -> tuple[MessageInfo | None, TaskProgress | None, float]:
        reports = await b.progress([message_id])
        return await b.inspect(message_id), reports.get(message_id), await b.time()

    app = _app_for(state, app_spec, url)
    info, report, now = _call(app, read)
    if info is None:
        raise CommandFailed(
            f"no message {message_id}: it was never sent to this backend, or its outcome expired",
        )
    out = stdout_console()
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    style = STATE_STYLES.get(info.state, "")
    grid.add_row("id", info.id)
    grid.add_row("state", f"[{style}]{info.state}[/]" if style else info.state)
    for label, value in [
        ("queue", info.queue),
        ("task", info.task),
        ("attempt", str(info.attempt) if info.attempt else ""),
        ("failures", str(info.failures) if info.failures else ""),
        ("due", _when(info.run_at, now) if info.state in ("scheduled", "pending") else ""),
        ("leased until", _when(info.lease_until, now)),
        ("worker", info.worker or ""),
        ("cancel", "requested: its worker is stopping it" if info.cancel_requested else ""),
        ("progress", _progress_line(report)),
        ("reason", info.reason or ""),
    ]:
        if value:
            grid.add_row(label, escape(value))
    traceback = ""
    if info.result is not None:
        r = info.result
        grid.add_row("settled", _when(r.settled_at, now) if r.settled_at else r.state)
        if r.value is not None:
            grid.add_row("result", escape(_raw_json(bytes(r.value))))
        if r.error is not None:
            grid.add_row("error", f"[red]{escape(r.error.type)}[/]: {escape(r.error.message)}")
            traceback = r.error.traceback
    if info.body is not None:
        for label, value in _message_rows(info.body, now):
            grid.add_row(label, escape(value))
    out.print(grid)
    if traceback:
        out.print("[bold]traceback[/]")
        out.print(escape(traceback.rstrip()), style="dim", soft_wrap=True)


def _progress_line(report: TaskProgress | None) -> str:
    if report is None:
        return ""
    parts = [f"{report.fraction:.0%}" if report.fraction is not None else "", report.text]
    return " ".join(p for p in parts if p)


def _message_rows(body: bytes, now: float) -> list[tuple[str, str]]:
    """The stored message, as rows for ``inspect``: its arguments decoded as JSON."""
    try:
        m = codec.decode_message(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return [("message", f"undecodable ({len(body)} bytes): {exc}")]
    rows = [("args", _raw_json(bytes(m.args))), ("kwargs", _raw_json(bytes(m.kwargs)))]
    rows.append(("priority", str(m.priority)))
    rows.append(("max attempts", str(m.max_attempts)))
    if m.timeout is not None:
        rows.append(("timeout", f"{m.timeout:g}s"))
    rows.append(("lease", f"{m.lease:g}s"))
    if m.key is not None:
        rows.append(("key", m.key))
    if m.after is not None:
        rows.append(("runs after", f"{m.after} ({m.mode})"))
    if m.join is not None:
        rows.append(
            ("join", f"{m.join.mode} of {len(m.join.members)}: {', '.join(m.join.members)}")
        )
    if m.expires_at is not None:
        rows.append(("expires", _when(m.expires_at, now)))
    if m.created_at:
        rows.append(("sent", _when(m.created_at, now)))
    for name, value in sorted(m.headers.items()):
        rows.append((f"header {name}", value))
    return rows


def _raw_json(raw: bytes) -> str:
    """Encoded arguments or a result as JSON text, with every pigeon.Secret shown as ***."""
    try:
        return json.dumps(redact_secrets(msgspec.json.decode(raw)), ensure_ascii=False)
    except msgspec.DecodeError:
        return repr(raw)


# dead letters ------------------------------------------------------------------------------


@cli.group()
def dlq() -> None:
    """The dead letters: list, requeue, purge.

    Dead letters are messages that will not run again unless re-queued: their last attempt
    failed, or they could not be run at all (unknown task, bad arguments, poison).
    """


@dlq.command("list")
@click.option("--queue", metavar="Q", help="Only this queue's dead letters.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@_backend_options
@click.pass_obj
def dlq_list(
    state: _State, queue: str | None, limit: int, app_spec: str | None, url: str | None
) -> None:
    """List dead letters, oldest first, with the reason each one died."""

    async def read(b: Backend) -> tuple[list[Any], float]:
        return await b.dead_letters(queue, limit), await b.time()

    app = _app_for(state, app_spec, url)
    letters, now = _call(app, read)
    out = stdout_console()
    if not letters:
        out.print("no dead letters" + (f" in queue {escape(queue)}" if queue else ""))
        return
    table = Table(title="dead letters", title_justify="left")
    table.add_column("id", no_wrap=True)
    table.add_column("queue")
    table.add_column("task")
    table.add_column("died", justify="right")
    table.add_column("reason", overflow="fold")
    for letter in letters:
        reason = letter.reason.strip().splitlines()[0] if letter.reason.strip() else ""
        table.add_row(
            letter.id,
            letter.queue,
            letter.task,
            f"{_duration(now - letter.died_at)} ago",
            escape(reason),
        )
    out.print(table)
    more = f" (the first {limit}: --limit for more)" if len(letters) == limit else ""
    out.print(f"{_count(len(letters), 'dead letter')}{more}")


@dlq.command("requeue")
@click.argument("ids", nargs=-1, metavar="ID...")
@click.option("--all", "all_", is_flag=True, help="Requeue every dead letter (of --queue).")
@click.option("--queue", metavar="Q", help="With --all: only this queue's dead letters.")
@_backend_options
@click.pass_obj
def dlq_requeue(
    state: _State,
    ids: tuple[str, ...],
    all_: bool,
    queue: str | None,
    app_spec: str | None,
    url: str | None,
) -> None:
    """Put dead letters back in their queue, with a fresh attempt count."""
    if bool(ids) == all_:
        raise CommandError("give the IDs to requeue, or --all")
    if queue and not all_:
        raise CommandError("--queue goes with --all")

    async def requeue_all(b: Backend) -> int:
        moved = 0
        while True:
            letters = await b.dead_letters(queue, 500)
            if not letters:
                return moved
            count = await b.requeue([letter.id for letter in letters])
            if count == 0:  # taken by someone else meanwhile: do not spin
                return moved
            moved += count

    app = _app_for(state, app_spec, url)
    requeue: Callable[[Backend], Awaitable[int]] = (
        requeue_all if all_ else (lambda b: b.requeue(list(ids)))
    )
    moved = _call(app, requeue)
    stdout_console().print(f"requeued {_count(moved, 'message')}")
    if not all_ and moved < len(set(ids)):
        raise CommandFailed(
            f"{len(set(ids)) - moved} of the ids are not dead letters (pigeon dlq list)",
        )


@dlq.command("purge")
@click.argument("ids", nargs=-1, metavar="[ID...]")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_backend_options
@click.pass_obj
def dlq_purge(
    state: _State, ids: tuple[str, ...], yes: bool, app_spec: str | None, url: str | None
) -> None:
    """Delete dead letters for good: the ones given, or all of them."""
    _confirm(yes, f"delete {len(ids)} dead letters" if ids else "delete every dead letter")
    app = _app_for(state, app_spec, url)
    count = _call(app, lambda b: b.purge_dead(list(ids) if ids else None))
    stdout_console().print(f"purged {_count(count, 'dead letter')}")


# purge, cancel -----------------------------------------------------------------------------


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option(
    "--for",
    "duration",
    type=click.FloatRange(min=0, min_open=True),
    metavar="S",
    help="Stop after S seconds (default: until interrupted).",
)
@_backend_options
@click.pass_obj
def events(
    state: _State, as_json: bool, duration: float | None, app_spec: str | None, url: str | None
) -> None:
    """Print what happens to messages as it happens: sent, started, retried, succeeded,
    failed, cancelled, dead, released.

    Events are published by Apps and workers that run with PIGEON_EVENTS=1 (or
    App(events=True)); with none of those there is nothing to show.
    """
    app = _app_for(state, app_spec, url)
    console = stdout_console()
    encoder = msgspec.json.Encoder()

    async def run() -> None:
        backend = await app.open()
        stderr_console().print(
            f"following events on {escape(redact(app.url))} (published with PIGEON_EVENTS=1);"
            " Ctrl-C to stop",
            style="dim",
            soft_wrap=True,
        )
        try:
            async with asyncio.timeout(duration):
                async for event in follow_events(backend, None, 1.0):
                    if as_json:
                        click.echo(encoder.encode(event).decode())
                    else:
                        console.print(
                            escape(describe_event(event)),
                            style=STATE_STYLES.get(event.kind, ""),
                            soft_wrap=True,
                        )
        except TimeoutError:
            pass
        finally:
            await app.close()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


@cli.command()
@click.argument("queue")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_backend_options
@click.pass_obj
def purge(state: _State, queue: str, yes: bool, app_spec: str | None, url: str | None) -> None:
    """Delete the messages waiting in QUEUE.

    Waiting, scheduled and pending messages are deleted; running ones finish.
    """
    _confirm(yes, f"delete every message waiting in queue {queue!r}")
    app = _app_for(state, app_spec, url)
    count = _call(app, lambda b: b.purge(queue))
    stdout_console().print(f"purged {_count(count, 'message')} from queue {escape(queue)}")


@cli.command()
@click.argument("ids", nargs=-1, required=True, metavar="ID...")
@_backend_options
@click.pass_obj
def cancel(state: _State, ids: tuple[str, ...], app_spec: str | None, url: str | None) -> None:
    """Cancel messages: those not started at once, running ones through their worker.

    A waiting, scheduled or pending message is cancelled at once. A running one is marked:
    its worker learns of it within a second, cancels an async task (CancelledError), sets
    pigeon.current().cancelled for a sync one, and settles it cancelled when it returns.
    Their promises reject with pigeon.Cancelled. A settled or unknown message is left alone
    (exit code 1 names it).
    """

    async def run(b: Backend) -> tuple[list[str], list[str], dict[str, str]]:
        done = await b.cancel(list(ids))
        running: list[str] = []
        why: dict[str, str] = {}
        for mid in dict.fromkeys(ids):
            if mid not in done:
                info = await b.inspect(mid)
                if info is not None and info.state == "leased":
                    running.append(mid)
                else:
                    why[mid] = "unknown id" if info is None else f"it is {info.state}"
        return done, running, why

    app = _app_for(state, app_spec, url)
    done, running, why = _call(app, run)
    out = stdout_console()
    for mid in done:
        out.print(f"cancelled {mid}")
    for mid in running:
        out.print(f"cancelling {mid}: it is running; its worker stops it within a second")
    for mid, reason in why.items():
        stderr_console().print(f"[yellow]not cancelled[/] {mid}: {escape(reason)}", soft_wrap=True)
    if why:
        raise CommandFailed(f"{len(why)} of {len(set(ids))} messages were not cancelled")


# migrate -----------------------------------------------------------------------------------


@cli.command()
@click.argument("app_arg", metavar="[APP]", required=False)
@_backend_options
@click.pass_obj
def migrate(state: _State, app_arg: str | None, app_spec: str | None, url: str | None) -> None:
    """Create or upgrade the backend's schema (PostgreSQL), then exit.

    Applies the migrations the database lacks, in order, in one transaction; many processes
    may run it at once. Needed when the URL says migrate=false; otherwise the schema is
    brought up to date on first use. SQLite and memory:// need no migration.
    """
    if app_arg and app_spec:
        raise ConfigError("give APP once: as an argument or as --app")
    app = _app_for(state, app_arg or app_spec, url)
    backend = app.backend
    if not isinstance(backend, MigratingBackend):
        stdout_console().print(f"{escape(redact(app.url))} has no schema to migrate")
        return

    async def run() -> tuple[list[str], int]:
        try:
            async with asyncio.timeout(BACKEND_TIMEOUT):
                return await backend.migrate(), await backend.schema_version()
        except TimeoutError as exc:
            if isinstance(exc, PigeonError):
                raise
            raise PigeonError(
                f"the backend {redact(app.url)} did not answer within {BACKEND_TIMEOUT:.0f} s"
            ) from None

    applied, version = asyncio.run(run())
    out = stdout_console()
    for name in applied:
        out.print(f"applied {escape(name)}")
    out.print(f"schema at version {version}" + ("" if applied else ", up to date"))


def _confirm(yes: bool, what: str) -> None:
    if yes:
        return
    if sys.stdin.isatty():
        click.confirm(f"{what}?", abort=True)
        return
    raise CommandError(f"this would {what}: pass --yes to confirm")


# demo --------------------------------------------------------------------------------------


@cli.command()
def demo() -> None:
    """Run the demo: a real worker and a mixed batch.

    One worker process on a SQLite database in a temporary directory, a mixed batch of work
    with live progress, and what happened. Takes a few seconds; leaves nothing behind.
    """
    from pigeon.demo import DemoFailed, run_demo

    try:
        run_demo(stdout_console())
    except DemoFailed as exc:
        raise CommandFailed(f"the demo failed: {exc}") from None

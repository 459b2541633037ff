"""``pigeon send``: send a message from the command line, and optionally wait for its outcome."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import click
import msgspec
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from pigeon.app import App
from pigeon.cli.backend import CommandState, app_for
from pigeon.cli.output import CommandError, CommandFailed, stderr_console
from pigeon.errors import Cancelled, ConfigError, PigeonError, TaskError
from pigeon.message import Progress as TaskProgress
from pigeon.promise import MessagePromise
from pigeon.task import Task


@click.command()
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
    state: CommandState,
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
    app = app_for(state, app_spec, None)
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

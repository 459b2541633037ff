"""Verbs that change what the backend holds: ``cancel``, ``purge``, ``dlq`` (list, requeue,
purge), ``pause``, ``resume`` and ``migrate``."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from pigeon.backends import Backend, redact
from pigeon.backends.base import MigratingBackend
from pigeon.cli.backend import (
    BACKEND_TIMEOUT,
    CommandState,
    app_for,
    backend_options,
    call_backend,
)
from pigeon.cli.output import (
    CommandError,
    CommandFailed,
    format_count,
    stderr_console,
    stdout_console,
)
from pigeon.errors import ConfigError, PigeonError
from pigeon.message import Pause
from pigeon.timetext import describe_pause, format_duration, parse_duration

# dead letters ------------------------------------------------------------------------------


@click.group()
def dlq() -> None:
    """The dead letters: list, requeue, purge.

    Dead letters are messages that will not run again unless re-queued: their last attempt
    failed, or they could not be run at all (unknown task, bad arguments, poison).
    """


@dlq.command("list")
@click.option("--queue", metavar="Q", help="Only this queue's dead letters.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@backend_options
@click.pass_obj
def dlq_list(
    state: CommandState, queue: str | None, limit: int, app_spec: str | None, url: str | None
) -> None:
    """List dead letters, oldest first, with the reason each one died."""

    async def read(b: Backend) -> tuple[list[Any], float]:
        return await b.dead_letters(queue, limit), await b.time()

    app = app_for(state, app_spec, url)
    letters, now = call_backend(app, read)
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
            f"{format_duration(now - letter.died_at)} ago",
            escape(reason),
        )
    out.print(table)
    more = f" (the first {limit}: --limit for more)" if len(letters) == limit else ""
    out.print(f"{format_count(len(letters), 'dead letter')}{more}")


@dlq.command("requeue")
@click.argument("ids", nargs=-1, metavar="ID...")
@click.option("--all", "all_", is_flag=True, help="Requeue every dead letter (of --queue).")
@click.option("--queue", metavar="Q", help="With --all: only this queue's dead letters.")
@backend_options
@click.pass_obj
def dlq_requeue(
    state: CommandState,
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

    app = app_for(state, app_spec, url)
    requeue: Callable[[Backend], Awaitable[int]] = (
        requeue_all if all_ else (lambda b: b.requeue(list(ids)))
    )
    moved = call_backend(app, requeue)
    stdout_console().print(f"requeued {format_count(moved, 'message')}")
    if not all_ and moved < len(set(ids)):
        raise CommandFailed(
            f"{len(set(ids)) - moved} of the ids are not dead letters (pigeon dlq list)",
        )


@dlq.command("purge")
@click.argument("ids", nargs=-1, metavar="[ID...]")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@backend_options
@click.pass_obj
def dlq_purge(
    state: CommandState, ids: tuple[str, ...], yes: bool, app_spec: str | None, url: str | None
) -> None:
    """Delete dead letters for good: the ones given, or all of them."""
    _confirm(yes, f"delete {len(ids)} dead letters" if ids else "delete every dead letter")
    app = app_for(state, app_spec, url)
    count = call_backend(app, lambda b: b.purge_dead(list(ids) if ids else None))
    stdout_console().print(f"purged {format_count(count, 'dead letter')}")


# purge, cancel -----------------------------------------------------------------------------


@click.command()
@click.argument("queue")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@backend_options
@click.pass_obj
def purge(
    state: CommandState, queue: str, yes: bool, app_spec: str | None, url: str | None
) -> None:
    """Delete the messages waiting in QUEUE.

    Waiting, scheduled and pending messages are deleted; running ones finish.
    """
    _confirm(yes, f"delete every message waiting in queue {queue!r}")
    app = app_for(state, app_spec, url)
    count = call_backend(app, lambda b: b.purge(queue))
    stdout_console().print(f"purged {format_count(count, 'message')} from queue {escape(queue)}")


@click.command()
@click.argument("ids", nargs=-1, required=True, metavar="ID...")
@backend_options
@click.pass_obj
def cancel(
    state: CommandState, ids: tuple[str, ...], app_spec: str | None, url: str | None
) -> None:
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

    app = app_for(state, app_spec, url)
    done, running, why = call_backend(app, run)
    out = stdout_console()
    for mid in done:
        out.print(f"cancelled {mid}")
    for mid in running:
        out.print(f"cancelling {mid}: it is running; its worker stops it within a second")
    for mid, reason in why.items():
        stderr_console().print(f"[yellow]not cancelled[/] {mid}: {escape(reason)}", soft_wrap=True)
    if why:
        raise CommandFailed(f"{len(why)} of {len(set(ids))} messages were not cancelled")


# pause, resume -----------------------------------------------------------------------------


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command()
@click.argument("queue")
@click.option(
    "--for",
    "duration",
    metavar="DURATION",
    callback=_duration,
    help="Resume by itself after this long (90s, 10m, 1h30m, 2d); default: until resumed.",
)
@click.option("--reason", metavar="TEXT", help="Why: shown by pigeon status.")
@backend_options
@click.pass_obj
def pause(
    state: CommandState,
    queue: str,
    duration: float | None,
    reason: str | None,
    app_spec: str | None,
    url: str | None,
) -> None:
    """Stop every worker from starting QUEUE's messages, until resumed (or for a while).

    Sends to QUEUE are still accepted, and messages already running finish. Pausing a paused
    queue changes its reason and how long it lasts. Undo with pigeon resume QUEUE.
    """

    async def run(b: Backend) -> tuple[Pause, float]:
        now = await b.time()
        until = None if duration is None else now + duration
        return await b.pause(queue, reason, until), now

    app = app_for(state, app_spec, url)
    stored, now = call_backend(app, run)
    stdout_console().print(
        f"paused queue {escape(queue)} {escape(describe_pause(stored, now))}", soft_wrap=True
    )


@click.command()
@click.argument("queue")
@backend_options
@click.pass_obj
def resume(state: CommandState, queue: str, app_spec: str | None, url: str | None) -> None:
    """Let workers start QUEUE's messages again, at once.

    Resuming a queue that is not paused (or whose pause has ended) changes nothing.
    """
    app = app_for(state, app_spec, url)
    was = call_backend(app, lambda b: b.resume(queue))
    out = stdout_console()
    if was:
        out.print(f"resumed queue {escape(queue)}", soft_wrap=True)
    else:
        out.print(f"queue {escape(queue)} was not paused", soft_wrap=True)


# migrate -----------------------------------------------------------------------------------


@click.command()
@click.argument("app_arg", metavar="[APP]", required=False)
@backend_options
@click.pass_obj
def migrate(
    state: CommandState, app_arg: str | None, app_spec: str | None, url: str | None
) -> None:
    """Create or upgrade the backend's schema (PostgreSQL), then exit.

    Applies the migrations the database lacks, in order, in one transaction; many processes
    may run it at once. Needed when the URL says migrate=false; otherwise the schema is
    brought up to date on first use. SQLite and memory:// need no migration.
    """
    if app_arg and app_spec:
        raise ConfigError("give APP once: as an argument or as --app")
    app = app_for(state, app_arg or app_spec, url)
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

"""Verbs that look and change nothing: ``status``, ``inspect`` and ``events``."""

from __future__ import annotations

import asyncio

import click
import msgspec
from rich.markup import escape
from rich.table import Table

from pigeon.backends import Backend, redact
from pigeon.cli.backend import CommandState, app_for, backend_options, call_backend
from pigeon.cli.output import (
    STATE_STYLES,
    CommandFailed,
    format_count,
    stderr_console,
    stdout_console,
)
from pigeon.errors import ConfigError
from pigeon.events import describe as describe_event
from pigeon.events import follow as follow_events
from pigeon.inspection import body_rows, info_rows, result_rows
from pigeon.message import MessageInfo, QueueStats, Stats
from pigeon.message import Progress as TaskProgress
from pigeon.timetext import describe_pause, format_duration, heartbeat_age


@click.command()
@click.argument("app_arg", metavar="[APP]", required=False)
@click.option(
    "--check",
    is_flag=True,
    help="Only check: exit 1, naming the queue, if one has due work and no live worker.",
)
@backend_options
@click.pass_obj
def status(
    state: CommandState, app_arg: str | None, check: bool, app_spec: str | None, url: str | None
) -> None:
    """Queues by state, dead letters and live workers.

    With --check (for a cron job or an alert) it prints one line per queue that has due
    (pending) messages and no live worker consuming it, and exits 1 if there is one, else 0.
    """
    if app_arg and app_spec:
        raise ConfigError("give APP once: as an argument or as --app")

    async def read(b: Backend) -> tuple[Stats, float]:
        return await b.stats(), await b.time()

    app = app_for(state, app_arg or app_spec, url)
    stats, now = call_backend(app, read)
    if check:
        check_consumed(stats)
        return
    out = stdout_console()
    out.print(f"[bold]pigeon[/] {escape(redact(app.url))}")
    out.print(queues_table(stats, now))
    out.print(
        f"{format_count(stats.results, 'outcome')} kept, {format_count(stats.dead, 'dead letter')}"
    )
    out.print(workers_table(stats, now))


def unconsumed(stats: Stats) -> dict[str, int]:
    """Queues with due work (pending messages) that no live worker consumes: their counts.
    A paused queue is not consumed on purpose, so it is not named."""
    consumed = {queue for w in stats.workers for queue in w.queues}
    return {
        name: qs.pending
        for name, qs in sorted(stats.queues.items())
        if qs.pending and name not in consumed and name not in stats.paused
    }


def check_consumed(stats: Stats) -> None:
    """``status --check``: one line per unconsumed queue and exit 1, or one line saying so."""
    queues = unconsumed(stats)
    if not queues:
        live = format_count(len(stats.workers), "live worker")
        stdout_console().print(f"ok: every queue with due work has a live worker ({live})")
        return
    for name, due in queues.items():
        stdout_console().print(
            f"queue {escape(name)}: {format_count(due, 'due message')} and no live worker"
            " consumes it",
            soft_wrap=True,
        )
    names = ", ".join(queues)
    raise CommandFailed(f"{format_count(len(queues), 'queue')} not consumed: {names}")


def queues_table(stats: Stats, now: float = 0.0) -> Table | str:
    """The queues by state; with a ``paused`` column (how long, why) when one is paused,
    whose row is there even if it holds nothing."""
    if not stats.queues and not stats.paused:
        return "no queued messages"
    table = Table(title="queues", title_justify="left")
    table.add_column("queue")
    columns = ["waiting", "scheduled", "pending", "leased", "dead"]
    for name in columns:
        table.add_column(name, justify="right", style=STATE_STYLES[name])
    if stats.paused:
        table.add_column("paused", style="bold yellow", overflow="fold")
    for name in sorted({*stats.queues, *stats.paused}):
        qs = stats.queues.get(name, QueueStats())
        pause = stats.paused.get(name)
        paused = [escape(describe_pause(pause, now)) if pause else ""] if stats.paused else []
        table.add_row(escape(name), *(f"{getattr(qs, c):,}" for c in columns), *paused)
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
        ("last fetch", "right"),
        ("last work", "right"),
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
            format_duration(now - w.started_at) if w.started_at else "",
            f"{format_duration(now - w.last_seen)} ago" if w.last_seen else "",
            heartbeat_age(w, w.fetch_age, now),
            heartbeat_age(w, w.work_age, now),
        )
    return table


@click.command("inspect")
@click.argument("message_id", metavar="ID")
@backend_options
@click.pass_obj
def inspect_(state: CommandState, message_id: str, app_spec: str | None, url: str | None) -> None:
    """Everything the backend knows of one message."""

    async def read(b: Backend) -> tuple[MessageInfo | None, TaskProgress | None, float]:
        reports = await b.progress([message_id])
        return await b.inspect(message_id), reports.get(message_id), await b.time()

    app = app_for(state, app_spec, url)
    info, report, now = call_backend(app, read)
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
    for label, value in info_rows(info, now, _progress_line(report)):
        grid.add_row(label, escape(value))
    traceback = ""
    if info.result is not None:
        r = info.result
        for label, value in result_rows(r, now):
            grid.add_row(label, escape(value))
        if r.error is not None:
            grid.add_row("error", f"[red]{escape(r.error.type)}[/]: {escape(r.error.message)}")
            traceback = r.error.traceback
    if info.body is not None:
        for label, value in body_rows(info.body, now, info.sent_at):
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


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option(
    "--for",
    "duration",
    type=click.FloatRange(min=0, min_open=True),
    metavar="S",
    help="Stop after S seconds (default: until interrupted).",
)
@backend_options
@click.pass_obj
def events(
    state: CommandState,
    as_json: bool,
    duration: float | None,
    app_spec: str | None,
    url: str | None,
) -> None:
    """Print what happens to messages as it happens: sent, started, retried, succeeded,
    failed, cancelled, dead, released.

    Events are published by Apps and workers that run with PIGEON_EVENTS=1 (or
    App(events=True)); with none of those there is nothing to show.
    """
    app = app_for(state, app_spec, url)
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

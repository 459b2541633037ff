"""``pigeon demo``: a real worker process, a mixed batch of work, and what happened.

Everything happens in a temporary directory that is removed at the end: a SQLite database,
one ``pigeon worker pigeon.demo_app:app`` process, and its log (shown if something fails).
The tasks are those of :mod:`pigeon.demo_app`. Every claim the demo prints is checked: it
raises :class:`DemoFailed` (and the CLI exits 1) if anything did not happen as it says.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn
from rich.table import Table

import pigeon
from pigeon.message import Stats

#: The worker's concurrency (async tasks at once; sync ones share its thread pool).
CONCURRENCY = 50
#: Seconds the whole batch may take before the demo gives up.
BATCH_TIMEOUT = 30.0
#: Seconds the worker gets to start (Python, imports, the first heartbeat).
START_TIMEOUT = 20.0

PHOTOS = [f"photos/img-{i:02}.jpg" for i in range(20)]
WORDS = ["pigeons", "carry", "messages", "durably", "across", "processes", "and", "report",
         "back", "home"]  # fmt: skip


class DemoFailed(Exception):
    """Something in the demo did not happen as it should; the message says what."""


@dataclass
class Outcome:
    label: str
    ok: bool
    value: Any
    seconds: float


def run_demo(out: Console) -> None:
    """Run the demo, printing to ``out``. Raises DemoFailed if any step fails."""
    tmp = Path(tempfile.mkdtemp(prefix="pigeon-demo-"))
    url = f"sqlite:///{tmp / 'demo.db'}"
    log_path = tmp / "worker.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        demo = _demo_module(url)
        out.print(
            "[bold]pigeon demo[/]: one worker process, a SQLite database in"
            f" {escape(str(tmp))}, and a mixed batch of work.\n"
        )
        proc = _start_worker(url, tmp, log_path)
        report = asyncio.run(_run(demo, proc, out))
        _print_report(out, report)
        code = _stop_worker(proc)
        if code != 0:
            raise DemoFailed(f"the worker exited with code {code} after SIGTERM (expected 0)")
        out.print(
            f"[green]✓[/] the worker (pid {proc.pid}) stopped on SIGTERM and exited 0;"
            " the temporary directory is removed.\n"
        )
        out.print(
            "Next: write tasks in myapp.py, run [bold]pigeon worker myapp:app[/], then"
            " [bold]pigeon send myapp:app TASK ARGS --wait[/] and [bold]pigeon status[/]."
        )
    except DemoFailed:
        _show_log_tail(log_path)
        raise
    except Exception as exc:
        _show_log_tail(log_path)
        raise DemoFailed(f"{type(exc).__name__}: {exc}") from exc
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def _demo_module(url: str) -> ModuleType:
    """``pigeon.demo_app`` with its App on ``url`` (its App reads PIGEON_URL when built)."""
    with _env("PIGEON_URL", url):
        module = importlib.import_module("pigeon.demo_app")
        if module.app.url != url:  # imported before, for another URL
            module = importlib.reload(module)
    return module


@contextlib.contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            del os.environ[name]
        else:
            os.environ[name] = previous


def _start_worker(url: str, tmp: Path, log_path: Path) -> subprocess.Popen[bytes]:
    # The directory holding this pigeon package goes first on the path, so the worker runs
    # this very pigeon even when it is not installed (python -m pigeon from a checkout).
    package_root = str(Path(pigeon.__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in [package_root, os.environ.get("PYTHONPATH", "")] if p)
    env = {**os.environ, "PIGEON_URL": url, "PYTHONPATH": path}
    argv = [sys.executable, "-m", "pigeon", "worker", "pigeon.demo_app:app"]
    argv += ["-c", str(CONCURRENCY), "--grace", "5"]
    with log_path.open("wb") as log:
        return subprocess.Popen(
            argv, cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )


def _stop_worker(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise DemoFailed("the worker did not exit within 15 s of SIGTERM") from None


def _show_log_tail(log_path: Path, lines: int = 30) -> None:
    text = log_path.read_text(errors="replace").splitlines()[-lines:]
    if text:
        err = Console(stderr=True, highlight=False)
        err.print("[dim]the worker's log (last lines):[/]")
        err.print(escape("\n".join(text)), style="dim", soft_wrap=True)


# the batch ---------------------------------------------------------------------------------


@dataclass
class Report:
    worker_pid: int
    started_in: float
    took: float
    outcomes: dict[str, list[Outcome]]
    final: Stats


async def _run(demo: Any, proc: subprocess.Popen[bytes], out: Console) -> Report:
    app: pigeon.App = demo.app
    async with app:
        began = time.monotonic()
        with out.status("starting a worker process"):
            await _until_worker_is_up(app, proc)
        started_in = time.monotonic() - began
        out.print(
            f"[green]✓[/] worker process {proc.pid} is up (concurrency {CONCURRENCY}),"
            f" after {started_in:.1f}s"
        )

        began = time.monotonic()
        tracked: list[tuple[str, pigeon.Promise[Any]]] = []
        tracked += [("resize", demo.resize.send(path, 320)) for path in PHOTOS]
        checksums = [demo.checksum.send(word) for word in WORDS]
        tracked += [("checksum", p) for p in checksums]
        tracked.append(("flaky", demo.flaky.send("order-42")))
        banner = demo.resize.send("banner.png", 1200)
        tracked.append(("chain: resize", banner))
        tracked.append(("chain: shout", banner.then(demo.shout)))
        tracked.append(("join: total", pigeon.Promise.all(checksums).then(demo.total)))
        await app.flush()  # every message is stored now, in one batched round trip
        out.print(
            f"[green]✓[/] sent {len(PHOTOS) + 1} resize, {len(WORDS)} checksum and 1 flaky task,"
            " a durable chain (resize → shout) and a durable join (all checksums → total)"
        )

        outcomes = await _watch(tracked, proc, out)
        took = time.monotonic() - began
        final = await (await app.open()).stats()
    return Report(proc.pid, started_in, took, outcomes, final)


async def _until_worker_is_up(app: pigeon.App, proc: subprocess.Popen[bytes]) -> None:
    backend = await app.open()
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise DemoFailed(f"the worker process exited at startup with code {proc.returncode}")
        stats = await backend.stats()
        if any(w.pid == proc.pid for w in stats.workers):
            return
        if time.monotonic() > deadline:
            raise DemoFailed(f"the worker did not report for work within {START_TIMEOUT:.0f} s")
        await asyncio.sleep(0.05)


async def _watch(
    tracked: list[tuple[str, pigeon.Promise[Any]]],
    proc: subprocess.Popen[bytes],
    out: Console,
) -> dict[str, list[Outcome]]:
    """Await every promise with a live progress bar; fail if the worker dies meanwhile."""
    began = time.monotonic()
    outcomes: dict[str, list[Outcome]] = {}
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[last]}", style="dim"),
    )
    with Progress(*columns, console=out) as progress:
        bar = progress.add_task("running", total=len(tracked), last="")

        async def one(label: str, promise: pigeon.Promise[Any]) -> None:
            try:
                value, ok = await promise, True
            except Exception as exc:
                value, ok = exc, False
            outcomes.setdefault(label, []).append(
                Outcome(label, ok, value, time.monotonic() - began)
            )
            progress.update(bar, advance=1, last=f"{label} {'done' if ok else 'FAILED'}")

        async def worker_alive() -> None:
            while proc.poll() is None:
                await asyncio.sleep(0.1)
            raise DemoFailed(f"the worker process died ({proc.returncode}) during the batch")

        try:
            async with asyncio.timeout(BATCH_TIMEOUT), asyncio.TaskGroup() as group:
                watchdog = group.create_task(worker_alive())
                await asyncio.gather(*(one(label, p) for label, p in tracked))
                watchdog.cancel()
        except TimeoutError:
            done = sum(len(v) for v in outcomes.values())
            raise DemoFailed(
                f"only {done} of {len(tracked)} promises resolved within {BATCH_TIMEOUT:.0f} s"
            ) from None
        except ExceptionGroup as group_error:
            raise group_error.exceptions[0] from None
        progress.update(bar, description="done", last="")
    return outcomes


# what happened -----------------------------------------------------------------------------


def _print_report(out: Console, report: Report) -> None:
    o = report.outcomes
    failed = [x for xs in o.values() for x in xs if not x.ok]
    if failed:
        first = failed[0]
        raise DemoFailed(f"{len(failed)} tasks failed, the first ({first.label}): {first.value}")
    resized = o["resize"]
    sums = o["checksum"]
    (receipt,) = o["flaky"]
    (banner,) = o["chain: resize"]
    (shouted,) = o["chain: shout"]
    (joined,) = o["join: total"]
    expected_total = sum(zlib.crc32(w.encode()) for w in WORDS)
    checks = [
        (
            receipt.value.attempt == 2,
            f"flaky succeeded on attempt {receipt.value.attempt}, not 2",
        ),
        (shouted.value == banner.value.upper(), f"the chain gave {shouted.value!r}"),
        (joined.value == expected_total, f"the join gave {joined.value}, not {expected_total}"),
        (
            sorted(x.value for x in sums) == sorted(zlib.crc32(w.encode()) for w in WORDS),
            "a checksum is wrong",
        ),
    ]
    for ok, why in checks:
        if not ok:
            raise DemoFailed(why)
    left = {
        name: qs
        for name, qs in report.final.queues.items()
        if qs.waiting or qs.scheduled or qs.pending or qs.leased or qs.dead
    }
    if left:
        raise DemoFailed(f"messages are left in the queues after the batch: {left}")

    table = Table(title="results", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("task", no_wrap=True)
    table.add_column("how it ran", no_wrap=True)
    table.add_column("a result", overflow="ellipsis", no_wrap=True)
    rows = [
        (f"resize ({len(resized)})", "async, event loop", repr(resized[0].value)),
        (f"checksum ({len(sums)})", "sync, thread pool", f"{sums[0].value:#010x}"),
        ("flaky", "failed, retried, ok", repr(receipt.value)),
        ("resize → shout", "durable chain", repr(shouted.value)),
        (f"all({len(sums)}) → total", "durable join", str(joined.value)),
    ]
    for task, how, value in rows:
        table.add_row(task, how, escape(value))
    out.print()
    out.print(table)
    count = sum(len(xs) for xs in o.values())
    slowest = max(x.seconds for x in resized)
    out.print("\n[bold]What happened[/]")
    story = Table.grid(padding=(0, 1))
    story.add_column(width=3, justify="right")
    story.add_column()
    for line in [
        f"{count} promises resolved in {report.took:.1f}s, all run by worker process"
        f" {report.worker_pid}; this process ran none of them.",
        f"resize: {len(resized)} async tasks slept concurrently, so the batch took about as"
        f" long as the slowest one (the last finished after {slowest:.2f}s).",
        f"flaky: attempt 1 raised ConnectionError; the worker scheduled a retry with backoff,"
        f" and attempt {receipt.value.attempt} succeeded. The promise saw only the success.",
        f"chain: resize → shout ran on the worker: {banner.value!r} became {shouted.value!r},"
        " stored with the message, so it would have run even if this process had exited.",
        f"join: fired once, when all {len(sums)} checksums had succeeded, and total summed"
        f" them: {joined.value} (checked).",
        "Nothing is left in the queues: every message settled, none was lost or dead-lettered.",
    ]:
        story.add_row("•", escape(line))
    out.print(story)
    out.print()

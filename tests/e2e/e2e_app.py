"""The App the end-to-end tests run in real worker processes (URL from PIGEON_URL)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pigeon


def _record(marker: str, line: str) -> None:
    with Path(marker).open("a") as f:
        f.write(line + "\n")


def register(app: pigeon.App) -> pigeon.App:
    """Register the end-to-end tasks on ``app`` (the workers' and the tests' own)."""
    for fn, options in TASKS:
        app.task(**options)(fn)
    return app


async def add(a: int, b: int) -> int:
    return a + b


async def slow(marker: str, seconds: float) -> str:
    """Records each start in ``marker`` (one line per attempt), then sleeps."""
    _record(marker, f"{os.getpid()} {pigeon.current().attempt}")
    await asyncio.sleep(seconds)
    return "done"


def slow_sync(marker: str, seconds: float) -> str:
    _record(marker, f"{os.getpid()} {pigeon.current().attempt}")
    time.sleep(seconds)
    return "done"


async def until_cancelled(marker: str) -> str:
    """Records its start, then waits; records when the cancellation reaches it."""
    _record(marker, f"started {time.time()}")
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        _record(marker, f"cancelled {time.time()}")
        raise
    return "not cancelled"


def until_cancelled_sync(marker: str) -> str:
    """Records its start, then polls ``pigeon.current().cancelled`` and records when it sees it."""
    _record(marker, f"started {time.time()}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if pigeon.current().cancelled:
            _record(marker, f"cancelled {time.time()}")
            return "stopped"
        time.sleep(0.01)
    return "not cancelled"


def crash(marker: str) -> None:
    """Kills the worker process running it, every time."""
    _record(marker, str(os.getpid()))
    os.kill(os.getpid(), signal.SIGKILL)


async def paced(marker: str) -> None:
    """Records the wall-clock time it starts (rate="50/s" across every worker)."""
    _record(marker, f"{time.time()}")


async def narrow(marker: str, seconds: float) -> None:
    """Records start and end with its pid and run (limit=2 across every worker)."""
    run = f"{pigeon.current().id}/{pigeon.current().attempt}"
    _record(marker, f"start {os.getpid()} {run} {time.time()}")
    await asyncio.sleep(seconds)
    _record(marker, f"end {os.getpid()} {run} {time.time()}")


TASKS = [
    (paced, {"name": "e2e.paced", "rate": "50/s"}),
    (narrow, {"name": "e2e.narrow", "limit": 2, "lease": 1.0}),
    (add, {"name": "e2e.add"}),
    (slow, {"name": "e2e.slow", "lease": 1.0}),
    (slow_sync, {"name": "e2e.slow_sync", "lease": 1.0}),
    (crash, {"name": "e2e.crash", "lease": 0.5, "max_deliveries": 3}),
    (until_cancelled, {"name": "e2e.until_cancelled"}),
    (until_cancelled_sync, {"name": "e2e.until_cancelled_sync"}),
]

app = register(pigeon.App())

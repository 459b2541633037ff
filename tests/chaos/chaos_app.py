"""The App the fault-injection tests run in real worker processes.

Every execution of ``work`` appends a start line and an end line to the history file named
by ``PIGEON_CHAOS_LOG`` (one ``os.write`` on an ``O_APPEND`` file each: lines from several
processes never interleave), so the checker sees what really ran, independently of what the
backend reports.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pigeon

if os.environ.get("PIGEON_CHAOS_CLOCK_OFFSET"):
    # Simulate a worker host whose clock is off: everything in this process that asks
    # time.time() gets the skewed answer. Leases and delays must not notice.
    _offset = float(os.environ["PIGEON_CHAOS_CLOCK_OFFSET"])
    _real_time = time.time
    time.time = lambda: _real_time() + _offset


def record(kind: str, mid: str, attempt: int) -> None:
    path = os.environ["PIGEON_CHAOS_LOG"]
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        # The true wall clock, whatever time.time() says in this process.
        stamp = time.clock_gettime(time.CLOCK_REALTIME)
        os.write(fd, f"{kind} {mid} {attempt} {os.getpid()} {stamp:.6f}\n".encode())
    finally:
        os.close(fd)


async def work(ms: int, later_ms: int | None = None) -> dict[str, int]:
    """Sleeps ``ms`` milliseconds (``later_ms`` on a second or later attempt, when given);
    returns who ran it, as which attempt."""
    current = pigeon.current()
    record("S", current.id, current.attempt)
    await asyncio.sleep((ms if later_ms is None or current.attempt == 1 else later_ms) / 1000)
    record("E", current.id, current.attempt)
    return {"attempt": current.attempt, "pid": os.getpid()}


def crash() -> None:
    """Kills the worker process running it, every time: a poison message."""
    current = pigeon.current()
    record("S", current.id, current.attempt)
    os.kill(os.getpid(), signal.SIGKILL)


async def keyed(n: int) -> dict[str, int]:
    """A short task (sent with an idempotency key, or en masse): records each execution."""
    current = pigeon.current()
    record("S", current.id, current.attempt)
    record("E", current.id, current.attempt)
    return {"attempt": current.attempt, "n": n}


def register(app: pigeon.App) -> pigeon.App:
    # Random kills may hit one message several times: this is not the poison test.
    app.task(name="chaos.work", lease=1.0, retries=0, max_deliveries=20)(work)
    app.task(name="chaos.crash", lease=0.5, max_deliveries=3)(crash)
    app.task(name="chaos.keyed", lease=1.0, max_deliveries=20)(keyed)
    return app


app = register(pigeon.App())

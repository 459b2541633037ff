"""Cancelling a running message: it reaches the task within a second, an async task gets
CancelledError, a sync one sees ``pigeon.current().cancelled``, and the promise rejects with
``pigeon.Cancelled``."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import pigeon
from pigeon.worker import Worker

from .support import eventually


async def test_an_async_task_gets_cancelled_error_within_a_second(
    app: pigeon.App, worker: Worker
) -> None:
    started = asyncio.Event()
    seen: list[float] = []

    @app.task
    async def sleeper() -> str:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            seen.append(time.monotonic())
            raise
        return "slept"

    p = sleeper.send()
    await asyncio.wait_for(started.wait(), 5)
    asked = time.monotonic()
    assert await p.cancel() is True

    with pytest.raises(pigeon.Cancelled, match="cancelled while it ran"):
        await asyncio.wait_for(p, 5)
    assert len(seen) == 1
    assert seen[0] - asked < 1.0
    assert p.status == "cancelled"
    info = await app.backend.inspect(p.id)
    assert info is not None
    assert info.state == "cancelled"
    assert worker.running == 0


async def test_a_sync_task_sees_current_cancelled_and_its_outcome_is_cancelled(
    app: pigeon.App, worker: Worker
) -> None:
    started = threading.Event()
    seen: list[float] = []

    @app.task
    def poller() -> str:
        started.set()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if pigeon.current().cancelled:
                seen.append(time.monotonic())
                return "stopped early"  # the return value of a cancelled run is not kept
            time.sleep(0.01)
        return "ran to the end"

    p = poller.send()
    await asyncio.to_thread(started.wait, 5)
    asked = time.monotonic()
    assert await p.cancel() is True

    with pytest.raises(pigeon.Cancelled):
        await asyncio.wait_for(p, 5)
    assert len(seen) == 1
    assert seen[0] - asked < 1.0


async def test_an_async_task_that_swallows_the_cancellation_is_still_cancelled(
    app: pigeon.App, worker: Worker
) -> None:
    started = asyncio.Event()

    @app.task
    async def stubborn() -> str:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            return "cleaned up"
        return "slept"

    p = stubborn.send()
    await asyncio.wait_for(started.wait(), 5)
    await p.cancel()

    with pytest.raises(pigeon.Cancelled):
        await asyncio.wait_for(p, 5)


async def test_cancelling_one_running_task_leaves_the_others_running(
    app: pigeon.App, worker: Worker, gate: asyncio.Event
) -> None:
    running: set[int] = set()

    @app.task
    async def wait_for_gate(n: int) -> int:
        running.add(n)
        await gate.wait()
        return n

    promises = [wait_for_gate.send(n) for n in range(3)]
    await eventually(lambda: len(running) == 3)
    assert await promises[1].cancel() is True
    with pytest.raises(pigeon.Cancelled):
        await asyncio.wait_for(promises[1], 5)

    gate.set()
    assert await asyncio.wait_for(promises[0], 5) == 0
    assert await asyncio.wait_for(promises[2], 5) == 2


async def test_a_follow_up_of_a_cancelled_running_message_sees_the_cancellation(
    app: pigeon.App, worker: Worker
) -> None:
    started = asyncio.Event()

    @app.task
    async def sleeper() -> None:
        started.set()
        await asyncio.sleep(60)

    @app.task
    async def recover(failure: pigeon.Failure) -> str:
        return failure.type

    p = sleeper.send()
    recovered = p.catch(recover)
    await asyncio.wait_for(started.wait(), 5)
    await p.cancel()

    assert await asyncio.wait_for(recovered, 5) == "Cancelled"


async def test_cancel_of_a_running_message_from_a_second_app_reaches_its_worker(
    app: pigeon.App, worker: Worker
) -> None:
    started = asyncio.Event()

    @app.task
    async def sleeper() -> None:
        started.set()
        await asyncio.sleep(60)

    p = sleeper.send()
    await asyncio.wait_for(started.wait(), 5)

    # What `pigeon cancel ID` does: the backend call alone, with the id.
    assert await app.backend.cancel([p.id]) == []  # not settled by the call: it is running

    with pytest.raises(pigeon.Cancelled):
        await asyncio.wait_for(p, 5)

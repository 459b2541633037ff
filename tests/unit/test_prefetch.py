"""The prefetch buffer: a worker holds at most its free slots plus a small buffer, starts a
buffered message the moment a slot frees, and gives back what waits behind long tasks."""

from __future__ import annotations

import asyncio
import time

import pigeon
from pigeon.worker import loop

from .conftest import StartWorker
from .support import eventually


async def test_a_worker_leases_at_most_its_concurrency_plus_the_buffer(
    app: pigeon.App, start_worker: StartWorker, gate: asyncio.Event
) -> None:
    @app.task
    async def held() -> None:
        await gate.wait()

    for _ in range(60):
        held.send()
    worker = await start_worker(concurrency=20)
    assert worker.buffer == 4

    await eventually(lambda: worker.running == 20)
    await asyncio.sleep(0.05)
    stats = await app.backend.stats()
    assert stats.queues["default"].leased <= 20 + 4
    assert worker.running == 20


async def test_buffered_messages_start_at_once_when_a_slot_frees(
    app: pigeon.App, start_worker: StartWorker
) -> None:
    started: list[float] = []

    @app.task
    async def short(i: int) -> None:
        started.append(time.monotonic())
        await asyncio.sleep(0.02)

    promises = [short.send(i) for i in range(100)]
    worker = await start_worker(concurrency=10)
    assert worker.buffer == 2
    await asyncio.wait_for(pigeon.Promise.all(promises), 10)
    assert len(started) == 100


async def test_messages_stuck_behind_long_tasks_go_back_for_an_idle_worker(
    app: pigeon.App, start_worker: StartWorker, gate: asyncio.Event
) -> None:
    ran_by: dict[int, str] = {}

    @app.task
    async def long(i: int) -> None:
        await gate.wait()

    @app.task
    async def quick(i: int) -> None:
        ran_by[i] = "somewhere"

    busy = await start_worker(concurrency=10, queues=["default"])
    longs = [long.send(i) for i in range(10)]
    await eventually(lambda: busy.running == 10)
    quicks = [quick.send(i) for i in range(2)]  # the busy worker may buffer these
    await asyncio.sleep(0.05)
    begun = time.monotonic()
    await start_worker(concurrency=10)  # an idle worker
    await asyncio.wait_for(pigeon.Promise.all(quicks), 5)
    assert time.monotonic() - begun < loop.BUFFER_PATIENCE + 1.0
    assert busy.running == 10
    gate.set()
    await asyncio.wait_for(pigeon.Promise.all(longs), 5)

"""Pausing a queue, seen from in-process workers on every backend: nothing of a paused queue
starts until it is resumed (or its pause ends by itself), other queues keep running, and a
message already running when its queue is paused finishes."""

from __future__ import annotations

import asyncio
import time

import pigeon

from .conftest import StartWorker

DEADLINE = 15.0


async def test_a_worker_runs_nothing_of_a_paused_queue_until_it_is_resumed(
    app: pigeon.App, start_worker: StartWorker
) -> None:
    ran: list[tuple[str, int]] = []

    @app.task
    async def work(queue: str, n: int) -> int:
        ran.append((queue, n))
        return n

    backend = await app.open()
    await backend.pause("held", "test")
    held = [work.options(queue="held").send("held", n) for n in range(5)]
    free = [work.options(queue="free").send("free", n) for n in range(5)]
    await start_worker(queues=["held", "free"])

    assert await asyncio.wait_for(pigeon.Promise.all(free), DEADLINE) == list(range(5))
    # The worker fetched the free queue five times over while the held one had due work.
    await asyncio.sleep(0.3)
    assert [q for q, _ in ran] == ["free"] * 5
    assert (await backend.stats()).queues["held"].pending == 5

    await backend.resume("held")

    assert await asyncio.wait_for(pigeon.Promise.all(held), DEADLINE) == list(range(5))
    assert sorted(n for q, n in ran if q == "held") == list(range(5))


async def test_a_message_running_when_its_queue_is_paused_finishes(
    app: pigeon.App, start_worker: StartWorker
) -> None:
    started = asyncio.Event()
    finish = asyncio.Event()
    ran: list[int] = []

    @app.task
    async def slow(n: int) -> int:
        ran.append(n)
        started.set()
        await finish.wait()
        return n

    await start_worker(concurrency=1)
    first = slow.send(1)
    await asyncio.wait_for(started.wait(), DEADLINE)
    backend = await app.open()
    await backend.pause(app.queue, "draining")
    second = slow.send(2)

    finish.set()
    assert await asyncio.wait_for(first, DEADLINE) == 1
    await asyncio.sleep(0.3)
    assert ran == [1]  # the second waits for the resume
    info = await backend.inspect(second.id)
    assert info is not None
    assert info.state == "pending"

    await backend.resume(app.queue)
    assert await asyncio.wait_for(second, DEADLINE) == 2


async def test_a_pause_with_an_expiry_lets_the_worker_start_when_it_ends(
    app: pigeon.App, start_worker: StartWorker
) -> None:
    starts: list[float] = []

    @app.task
    async def stamp() -> None:
        starts.append(time.monotonic())

    backend = await app.open()
    await start_worker()
    begun = time.monotonic()
    await backend.pause(app.queue, "a moment", await backend.time() + 0.5)
    promise = stamp.send()

    await asyncio.wait_for(promise, DEADLINE)

    assert starts[0] - begun >= 0.4  # not before the pause ended
    assert starts[0] - begun < 5  # and soon after it, without a resume

"""Bulk sends (``Task.send_many`` / ``fire_many``) on every backend: one promise per call, in
order, every message stored once and run, nothing sent when a call is bad."""

from __future__ import annotations

import asyncio

import pytest

import pigeon
from pigeon.codec import Call
from pigeon.message import QueueStats
from pigeon.promise import MessagePromise

from .conftest import StartWorker

#: More than one chunk of every backend's enqueue (Redis 500, PostgreSQL 1,000 per
#: statement, SQLite 1,000 per transaction), so chunk boundaries are crossed.
MANY = 2_345


def queue_stats(stats: pigeon.message.Stats, queue: str = "default") -> QueueStats:
    return stats.queues.get(queue, QueueStats())


async def test_send_many_returns_a_promise_per_call_in_order_and_runs_each(
    app: pigeon.App, start_worker: StartWorker
) -> None:
    @app.task
    async def double(n: int) -> int:
        return 2 * n

    promises = double.send_many((n,) for n in range(MANY))
    assert len(promises) == MANY
    ids = [p.id for p in promises if isinstance(p, MessagePromise)]
    assert len(ids) == MANY
    assert len(set(ids)) == MANY
    assert ids == sorted(ids)  # made in order: FIFO

    await app.flush()
    stats = await app.backend_call(lambda b: b.stats())
    assert queue_stats(stats).pending == MANY
    assert [await p.sent() for p in promises[:3]] == ids[:3]

    await start_worker(concurrency=50)
    results = await asyncio.wait_for(pigeon.Promise.all(promises), 60)
    assert results == [2 * n for n in range(MANY)]


async def test_fire_many_runs_each_call_and_keeps_no_outcome(
    app: pigeon.App, start_worker: StartWorker
) -> None:
    ran: list[tuple[str, int]] = []

    @app.task
    async def record(tag: str, n: int = 0) -> None:
        ran.append((tag, n))

    assert record.fire_many([("a",), ("b", 1), {"tag": "c", "n": 2}]) is None
    await app.flush()
    await start_worker()
    async with asyncio.timeout(10):
        while len(ran) < 3:
            await asyncio.sleep(0.01)
    assert sorted(ran) == [("a", 0), ("b", 1), ("c", 2)]
    stats = await app.backend_call(lambda b: b.stats())
    assert stats.results == 0


async def test_a_bad_call_is_named_and_nothing_is_sent(app: pigeon.App) -> None:
    @app.task
    async def add(a: int, b: int) -> int:
        return a + b

    bad_calls: list[tuple[list[Call], str]] = [
        ([(1, 2), (3, "four"), (5, 6)], r"calls\[1\]: .*add\(\): invalid arguments"),
        ([(1, 2), (3, 4), (5,)], r"calls\[2\]: .*missing a required argument: 'b'"),
        ([(1, 2, 3)], r"calls\[0\]: .*too many positional arguments"),
        ([{"a": 1, "c": 2}], r"calls\[0\]: .*unexpected keyword argument 'c'"),
        ([(1, 2), 3], r"calls\[1\]: .*a call is a tuple of positional arguments or a dict"),
    ]
    for calls, message in bad_calls:
        with pytest.raises(pigeon.EncodeError, match=message):
            add.send_many(calls)
        with pytest.raises(pigeon.EncodeError, match=message):
            add.fire_many(calls)
    await app.flush()
    stats = await app.backend_call(lambda b: b.stats())
    assert queue_stats(stats) == QueueStats()


async def test_a_call_over_max_payload_is_named_and_nothing_is_sent(app: pigeon.App) -> None:
    @app.task
    async def store(blob: str) -> None:
        pass

    app.max_payload = 100
    with pytest.raises(pigeon.EncodeError, match=r"calls\[2\]: .*over the limit of 100 bytes"):
        store.send_many([("small",), ("small",), ("x" * 200,)])
    await app.flush()
    stats = await app.backend_call(lambda b: b.stats())
    assert queue_stats(stats) == QueueStats()


async def test_send_many_keeps_the_options_of_a_bound_task(
    app: pigeon.App, start_worker: StartWorker
) -> None:
    @app.task
    async def echo(text: str) -> str:
        return text

    later = echo.options(queue="later", delay=60.0)
    promises = later.send_many([("one",), ("two",)])
    await app.flush()
    stats = await app.backend_call(lambda b: b.stats())
    assert queue_stats(stats, "later").scheduled == 2
    assert queue_stats(stats, "default") == QueueStats()

    keyed = echo.options(key="only-once").send_many([("first",), ("second",)])
    await start_worker()
    assert await asyncio.wait_for(pigeon.Promise.all(keyed), 10) == ["first", "first"]
    assert keyed[0].id == keyed[1].id
    await app.backend_call(lambda b: b.cancel([p.id for p in promises]))


async def test_send_many_publishes_a_sent_event_per_message(app: pigeon.App) -> None:
    @app.task
    async def noop(n: int) -> None:
        pass

    events: list[pigeon.Event] = []

    async def listen() -> None:
        async for event in app.events(wait=0.5):
            events.append(event)

    listener = asyncio.create_task(listen())
    await asyncio.sleep(0.3)  # the listener starts at the end of the log
    promises = noop.send_many((n,) for n in range(50))
    await app.flush()
    ids = {p.id for p in promises}
    async with asyncio.timeout(5):
        while {e.id for e in events if e.kind == "sent"} != ids:
            await asyncio.sleep(0.02)
    listener.cancel()
    assert all(e.task == noop.name for e in events if e.kind == "sent")

"""Results and wait: stored outcomes, waking waiters, expiry and sweep."""

from __future__ import annotations

import asyncio
import time

from pigeon.backends import Backend

from .messages import QUEUE, make_message, make_messages, succeeded
from .polling import clock_passes


async def test_results_returns_only_ids_with_a_stored_outcome(backend: Backend) -> None:
    done, running, waiting = make_messages(3)
    await backend.enqueue([done, running, waiting])
    first, _ = await backend.fetch([QUEUE], 2, "w")
    assert await backend.settle([succeeded(first)]) == [True]

    found = await backend.results([done.id, running.id, waiting.id, "no-such-id"])

    assert set(found) == {done.id}


async def test_wait_returns_as_soon_as_one_result_exists(backend: Backend) -> None:
    fast, slow = make_messages(2)
    await backend.enqueue([fast, slow])
    delivery, _ = await backend.fetch([QUEUE], 2, "w")

    async def settle_soon() -> None:
        await asyncio.sleep(0.1)
        assert await backend.settle([succeeded(delivery)]) == [True]

    start = time.monotonic()
    async with asyncio.TaskGroup() as group:
        group.create_task(settle_soon())
        found = await backend.wait([fast.id, slow.id], timeout=10)

    assert set(found) == {fast.id}
    assert found[fast.id].state == "succeeded"
    assert time.monotonic() - start < 2, "wait slept instead of waking on the settle"


async def test_wait_sees_a_settle_made_through_another_connection(
    backend: Backend, second_connection: Backend
) -> None:
    message = make_message()
    await backend.enqueue([message])
    [delivery] = await second_connection.fetch([QUEUE], 1, "w")

    async def settle_soon() -> None:
        await asyncio.sleep(0.1)
        assert await second_connection.settle([succeeded(delivery)]) == [True]

    start = time.monotonic()
    async with asyncio.TaskGroup() as group:
        group.create_task(settle_soon())
        found = await backend.wait([message.id], timeout=10)

    assert set(found) == {message.id}
    assert time.monotonic() - start < 2


async def test_wait_returns_every_result_that_already_exists_at_once(backend: Backend) -> None:
    messages = make_messages(3)
    await backend.enqueue(messages)
    deliveries = await backend.fetch([QUEUE], 2, "w")
    assert await backend.settle([succeeded(d) for d in deliveries]) == [True, True]

    start = time.monotonic()
    found = await backend.wait([m.id for m in messages], timeout=10)

    assert set(found) == {d.id for d in deliveries}
    assert time.monotonic() - start < 1


async def test_wait_returns_empty_on_timeout(backend: Backend) -> None:
    message = make_message()
    await backend.enqueue([message])

    start = time.monotonic()
    assert await backend.wait([message.id], timeout=0.2) == {}
    assert 0.15 <= time.monotonic() - start < 2


async def test_expired_result_is_no_longer_returned_and_sweep_removes_it(
    backend: Backend,
) -> None:
    short, long = make_messages(2)
    await backend.enqueue([short, long])
    a, b = await backend.fetch([QUEUE], 2, "w")
    applied = await backend.settle([succeeded(a, result_ttl=0.1), succeeded(b)])
    assert applied == [True, True]
    settled_by = await backend.time()
    assert set(await backend.results([short.id, long.id])) == {short.id, long.id}

    # 2 ms past the ttl: Redis keeps a key up to the millisecond its PX ends (the boundary
    # itself is fair either way), and stores expiries in whole milliseconds.
    await clock_passes(backend, settled_by + 0.1 + 0.002)

    assert set(await backend.results([short.id, long.id])) == {long.id}
    assert await backend.wait([short.id], timeout=0.05) == {}
    assert await backend.sweep() >= 1
    assert await backend.inspect(short.id) is None
    assert set(await backend.results([short.id, long.id])) == {long.id}
    assert (await backend.stats()).results == 1


async def test_sweep_with_nothing_expired_removes_nothing(backend: Backend) -> None:
    message = make_message()
    await backend.enqueue([message])
    [delivery] = await backend.fetch([QUEUE], 1, "w")
    assert await backend.settle([succeeded(delivery)]) == [True]

    assert await backend.sweep() == 0

    assert set(await backend.results([message.id])) == {message.id}

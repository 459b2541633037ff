"""Fetch: what is leased, in which order, when, and how a fetch waits."""

from __future__ import annotations

import asyncio
import time

import msgspec

from pigeon.backends import Backend
from pigeon.codec import decode_message

from .messages import QUEUE, make_message, make_messages
from .polling import clock_passes, eventually, fetch_eventually


async def test_fetch_leases_a_delivery_whose_body_decodes_back_to_the_message(
    backend: Backend,
) -> None:
    message = make_message(
        args=msgspec.Raw(b'[1,"two",{"three":3.5}]'),
        kwargs=msgspec.Raw(b'{"x":[null,true]}'),
        priority=5,
        max_attempts=4,
        timeout=12.5,
        key="unique",
        headers={"traceparent": "00-abc-def-01", "sender": "tests"},
    )
    await backend.enqueue([message])

    [delivery] = await backend.fetch([QUEUE], 10, "w")

    assert (delivery.id, delivery.attempt, delivery.failures) == (message.id, 1, 0)
    assert decode_message(delivery.body) == message


async def test_fetch_takes_higher_priority_first_and_fifo_within_a_priority(
    backend: Backend,
) -> None:
    messages = [make_message(priority=p) for p in (0, 5, 9, 5, 0, 9, 1)]
    await backend.enqueue(messages)

    fetched = await backend.fetch([QUEUE], 10, "w")

    expected = sorted(messages, key=lambda m: -m.priority)  # stable: FIFO within a priority
    assert [d.id for d in fetched] == [m.id for m in expected]


async def test_fetch_keeps_fifo_order_across_separate_enqueues(backend: Backend) -> None:
    messages = make_messages(20)
    for message in messages:
        await backend.enqueue([message])

    fetched = await backend.fetch([QUEUE], 20, "w")

    assert [d.id for d in fetched] == [m.id for m in messages]


async def test_fetch_takes_queues_in_the_order_given_before_priority(backend: Backend) -> None:
    low = make_messages(2, "low", priority=0)
    high = make_messages(2, "high", priority=9)
    await backend.enqueue(high + low)

    first = await backend.fetch(["low", "high"], 3, "w")
    assert [d.id for d in first] == [low[0].id, low[1].id, high[0].id]

    other_low = make_messages(2, "low", priority=0)
    await backend.enqueue(other_low)
    second = await backend.fetch(["high", "low"], 2, "w")
    assert [d.id for d in second] == [high[1].id, other_low[0].id]


async def test_fetch_never_returns_messages_of_queues_not_asked_for(backend: Backend) -> None:
    await backend.enqueue(make_messages(3, "elsewhere"))

    assert await backend.fetch([QUEUE, "another"], 10, "w") == []


async def test_fetch_returns_at_most_limit_messages(backend: Backend) -> None:
    await backend.enqueue(make_messages(10))

    assert len(await backend.fetch([QUEUE], 3, "w")) == 3
    assert len(await backend.fetch([QUEUE], 100, "w")) == 7
    assert await backend.fetch([QUEUE], 100, "w") == []


async def test_fetch_leases_a_batch_of_200_in_fifo_order(backend: Backend) -> None:
    messages = make_messages(200)
    await backend.enqueue(messages)

    fetched = await backend.fetch([QUEUE], 200, "w")

    assert [d.id for d in fetched] == [m.id for m in messages]
    assert all(d.attempt == 1 for d in fetched)


async def test_earlier_due_time_goes_first_within_a_priority(backend: Backend) -> None:
    late, sooner, now = make_message(delay=0.3), make_message(delay=0.1), make_message()
    await backend.enqueue([late, sooner, now])
    enqueued_by = await backend.time()

    await clock_passes(backend, enqueued_by + 0.3 + 0.01)
    fetched = await backend.fetch([QUEUE], 10, "w")

    assert [d.id for d in fetched] == [now.id, sooner.id, late.id]


async def test_delayed_message_is_not_fetched_before_it_is_due(backend: Backend) -> None:
    before = await backend.time()
    message = make_message(delay=0.2)
    await backend.enqueue([message])
    assert await backend.fetch([QUEUE], 1, "w") == []

    [delivery] = await fetch_eventually(backend)

    assert delivery.id == message.id
    assert await backend.time() >= before + 0.2


async def test_run_at_message_is_not_fetched_before_it_is_due(backend: Backend) -> None:
    run_at = await backend.time() + 0.2
    message = make_message(run_at=run_at)
    await backend.enqueue([message])
    assert await backend.fetch([QUEUE], 1, "w") == []

    [delivery] = await fetch_eventually(backend)

    assert delivery.id == message.id
    assert await backend.time() >= run_at


async def test_due_time_is_the_later_of_delay_and_run_at(backend: Backend) -> None:
    before = await backend.time()
    longer_delay = make_message(delay=0.3, run_at=before + 0.1)
    later_run_at = make_message(delay=0.1, run_at=before + 0.3)
    await backend.enqueue([longer_delay, later_run_at])

    fetched: list[str] = []

    async def both_fetched_after_due() -> bool:
        batch = await backend.fetch([QUEUE], 2, "w")
        if batch:
            assert await backend.time() >= before + 0.3, "fetched before its due time"
        fetched.extend(d.id for d in batch)
        return len(fetched) == 2

    await eventually(both_fetched_after_due, "both messages to be due")
    assert sorted(fetched) == sorted([longer_delay.id, later_run_at.id])


async def test_message_past_its_expires_at_is_dead_expired_instead_of_delivered(
    backend: Backend,
) -> None:
    expired = make_message(expires_at=await backend.time() - 1)
    fresh = make_message()
    await backend.enqueue([expired, fresh])

    fetched = await backend.fetch([QUEUE], 10, "w")

    assert [d.id for d in fetched] == [fresh.id]
    result = (await backend.results([expired.id]))[expired.id]
    assert result.state == "dead"
    assert result.error is not None
    assert "expire" in f"{result.error.type} {result.error.message}".lower()
    [letter] = await backend.dead_letters()
    assert letter.id == expired.id
    assert "expire" in letter.reason.lower()
    info = await backend.inspect(expired.id)
    assert info is not None
    assert info.state == "dead"


async def test_expired_message_does_not_take_a_place_in_the_fetch_limit(
    backend: Backend,
) -> None:
    expired = make_message(priority=9, expires_at=await backend.time() - 1)
    fresh = make_message()
    await backend.enqueue([expired, fresh])

    fetched = await backend.fetch([QUEUE], 1, "w")

    assert [d.id for d in fetched] == [fresh.id]
    assert (await backend.results([expired.id]))[expired.id].state == "dead"


async def test_message_that_expires_while_scheduled_is_dead_when_due(backend: Backend) -> None:
    now = await backend.time()
    message = make_message(delay=0.2, expires_at=now + 0.1)
    await backend.enqueue([message])

    async def dead_not_delivered() -> bool:
        assert await backend.fetch([QUEUE], 1, "w") == [], "an expired message was delivered"
        return message.id in await backend.results([message.id])

    await eventually(dead_not_delivered, "the expired message to be settled dead")
    assert (await backend.results([message.id]))[message.id].state == "dead"


async def test_fetch_lease_argument_overrides_the_message_lease(backend: Backend) -> None:
    message = make_message(lease=30)
    await backend.enqueue([message])
    before = await backend.time()
    [first] = await backend.fetch([QUEUE], 1, "w", lease=0.2)

    [second] = await fetch_eventually(backend)

    assert (second.id, second.attempt) == (message.id, first.attempt + 1)
    assert await backend.time() >= before + 0.2


async def test_fetch_wait_wakes_when_a_message_is_enqueued(backend: Backend) -> None:
    message = make_message()

    async def send_soon() -> None:
        await asyncio.sleep(0.1)
        await backend.enqueue([message])

    start = time.monotonic()
    async with asyncio.TaskGroup() as group:
        group.create_task(send_soon())
        fetched = await backend.fetch([QUEUE], 1, "w", wait=10)

    assert [d.id for d in fetched] == [message.id]
    assert time.monotonic() - start < 2, "fetch slept instead of waking on the enqueue"


async def test_work_a_waking_fetch_leaves_behind_wakes_the_next_waiting_fetch(
    backend: Backend,
) -> None:
    # Two fetches wait, each for one message; one enqueue of two wakes (at least) one of them,
    # which takes one and must see that the other waiting fetch gets the one it left.
    messages = make_messages(2)

    async def send_soon() -> None:
        await asyncio.sleep(0.2)
        await backend.enqueue(messages)

    start = time.monotonic()
    async with asyncio.TaskGroup() as group:
        group.create_task(send_soon())
        waiting = [group.create_task(backend.fetch([QUEUE], 1, worker, wait=10)) for worker in "ab"]
    fetched = sorted(d.id for w in waiting for d in w.result())

    assert fetched == sorted(m.id for m in messages)
    assert time.monotonic() - start < 5, "a fetch slept while the work it waited for was due"


async def test_fetch_wait_returns_a_delayed_message_as_it_becomes_due(backend: Backend) -> None:
    message = make_message(delay=0.2)
    await backend.enqueue([message])

    start = time.monotonic()
    fetched = await backend.fetch([QUEUE], 1, "w", wait=10)

    assert [d.id for d in fetched] == [message.id]
    assert 0.15 <= time.monotonic() - start < 2


async def test_fetch_wait_returns_empty_when_nothing_becomes_due(backend: Backend) -> None:
    await backend.enqueue([make_message(delay=100)])

    start = time.monotonic()
    assert await backend.fetch([QUEUE], 1, "w", wait=0.2) == []
    assert 0.15 <= time.monotonic() - start < 2

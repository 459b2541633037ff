"""Leases: expiry and redelivery, fencing, extend, release, poison messages."""

from __future__ import annotations

import asyncio

from pigeon.backends import Backend
from pigeon.message import Lease, QueueStats

from .messages import QUEUE, failed, lease_of, make_message, make_messages, succeeded
from .polling import eventually, fetch_eventually


async def test_lease_expiry_redelivers_with_next_attempt(backend: Backend) -> None:
    message = make_message(lease=0.2)
    await backend.enqueue([message])
    before = await backend.time()
    [first] = await backend.fetch([QUEUE], 1, "w1")
    assert await backend.fetch([QUEUE], 1, "w2") == []

    [second] = await fetch_eventually(backend, worker="w2")

    assert await backend.time() >= before + 0.2
    assert (second.id, second.attempt, second.failures) == (message.id, first.attempt + 1, 0)
    assert second.body == first.body


async def test_stale_settle_after_a_takeover_is_refused_and_leaves_the_outcome_alone(
    backend: Backend,
) -> None:
    message = make_message(lease=0.2)
    await backend.enqueue([message])
    [stale] = await backend.fetch([QUEUE], 1, "w1")
    [current] = await fetch_eventually(backend, worker="w2")

    assert await backend.settle([succeeded(stale, "stale")]) == [False]
    assert await backend.extend([lease_of(stale)]) == {message.id}
    assert await backend.release([lease_of(stale)]) == 0
    info = await backend.inspect(message.id)
    assert info is not None
    assert (info.state, info.attempt, info.worker) == ("leased", current.attempt, "w2")
    assert await backend.results([message.id]) == {}

    assert await backend.settle([succeeded(current, "fresh")]) == [True]
    assert await backend.settle([failed(stale)]) == [False]
    result = (await backend.results([message.id]))[message.id]
    assert (result.state, bytes(result.value or b"")) == ("succeeded", b'"fresh"')


async def test_extend_keeps_a_message_from_redelivery_past_its_lease(backend: Backend) -> None:
    message = make_message(lease=0.3)
    await backend.enqueue([message])
    [delivery] = await backend.fetch([QUEUE], 1, "w1")
    until = await backend.time() + 1.0  # more than three leases

    while await backend.time() < until:
        assert await backend.extend([lease_of(delivery)]) == set()
        assert await backend.fetch([QUEUE], 1, "w2") == [], "redelivered while extended"
        await asyncio.sleep(0.05)

    assert await backend.settle([succeeded(delivery)]) == [True]


async def test_lease_runs_out_once_extending_stops(backend: Backend) -> None:
    message = make_message(lease=0.2)
    await backend.enqueue([message])
    [first] = await backend.fetch([QUEUE], 1, "w1")
    extended_at = await backend.time()  # read before: the extend's own clock is no earlier
    assert await backend.extend([lease_of(first)]) == set()

    [second] = await fetch_eventually(backend, worker="w2")

    assert second.attempt == first.attempt + 1
    assert await backend.time() >= extended_at + 0.2


async def test_extend_returns_the_deliveries_no_longer_held(backend: Backend) -> None:
    settled_one, held = make_message(), make_message()
    await backend.enqueue([settled_one, held])
    a, b = await backend.fetch([QUEUE], 2, "w")
    assert await backend.settle([succeeded(a)]) == [True]

    lost = await backend.extend([lease_of(a), lease_of(b), Lease("no-such-id", 1)])

    assert lost == {settled_one.id, "no-such-id"}
    assert await backend.extend([Lease(held.id, b.attempt + 1)]) == {held.id}
    assert await backend.settle([succeeded(b)]) == [True]


async def test_release_makes_a_message_fetchable_at_once_without_counting_a_failure(
    backend: Backend,
) -> None:
    message = make_message()
    await backend.enqueue([message])
    [first] = await backend.fetch([QUEUE], 1, "w1")

    assert await backend.release([lease_of(first)]) == 1

    info = await backend.inspect(message.id)
    assert info is not None
    assert (info.state, info.failures) == ("pending", 0)
    [second] = await backend.fetch([QUEUE], 1, "w2")
    assert (second.id, second.attempt, second.failures) == (message.id, first.attempt + 1, 0)
    assert await backend.settle([succeeded(first)]) == [False]
    assert await backend.settle([succeeded(second)]) == [True]


async def test_release_does_not_count_as_a_lost_delivery(backend: Backend) -> None:
    message = make_message(max_deliveries=2)
    await backend.enqueue([message])
    for _ in range(3):
        [delivery] = await backend.fetch([QUEUE], 1, "w")
        assert await backend.release([lease_of(delivery)]) == 1
    [lapsing] = await backend.fetch([QUEUE], 1, "w", lease=0.1)  # one lost delivery of two

    [last] = await fetch_eventually(backend)

    assert (last.id, last.attempt, last.failures) == (message.id, lapsing.attempt + 1, 0)
    assert await backend.dead_letters() == []


async def test_release_of_a_batch_counts_only_held_deliveries(backend: Backend) -> None:
    await backend.enqueue(make_messages(6))
    deliveries = await backend.fetch([QUEUE], 6, "w")
    assert await backend.settle([succeeded(deliveries[0])]) == [True]
    stale = Lease(deliveries[1].id, deliveries[1].attempt + 1)

    released = await backend.release([lease_of(d) for d in deliveries] + [stale])

    assert released == 5
    assert (await backend.stats()).queues[QUEUE] == QueueStats(pending=5)


async def test_lease_running_out_max_deliveries_times_dead_letters_it_as_poison(
    backend: Backend,
) -> None:
    message = make_message(lease=0.1, max_deliveries=2)
    await backend.enqueue([message])
    [first] = await backend.fetch([QUEUE], 1, "w")
    [second] = await fetch_eventually(backend)
    assert second.attempt == first.attempt + 1

    async def dead_lettered_not_delivered() -> bool:
        redelivered = await backend.fetch([QUEUE], 1, "w")
        assert redelivered == [], "delivered more than max_deliveries times"
        return message.id in await backend.results([message.id])

    await eventually(dead_lettered_not_delivered, "the poison message to be dead-lettered")
    result = (await backend.results([message.id]))[message.id]
    assert result.state == "dead"
    assert result.error is not None
    [letter] = await backend.dead_letters()
    assert (letter.id, letter.queue, letter.task) == (message.id, QUEUE, "t")
    assert letter.reason
    info = await backend.inspect(message.id)
    assert info is not None
    assert info.state == "dead"
    assert await backend.settle([succeeded(second)]) == [False]

"""Settle: stored outcomes, fencing, first outcome wins, retries, batches."""

from __future__ import annotations

import msgspec
import pytest

from pigeon.backends import Backend
from pigeon.message import Failure, Outcome, QueueStats

from .messages import (
    QUEUE,
    failed,
    make_message,
    make_messages,
    retry,
    settle_as,
    succeeded,
    value,
)
from .polling import fetch_eventually


async def test_settled_success_is_stored_as_its_result(backend: Backend) -> None:
    message = make_message()
    await backend.enqueue([message])
    [delivery] = await backend.fetch([QUEUE], 1, "w")
    before = await backend.time()

    assert await backend.settle([succeeded(delivery, {"ok": [1, 2]})]) == [True]

    after = await backend.time()
    result = (await backend.results([message.id]))[message.id]
    assert (result.id, result.state, result.error) == (message.id, "succeeded", None)
    assert msgspec.json.decode(bytes(result.value or b"")) == {"ok": [1, 2]}
    assert before <= result.settled_at <= after
    assert await backend.fetch([QUEUE], 1, "w") == []
    assert (await backend.stats()).queues.get(QUEUE, QueueStats()) == QueueStats()


async def test_settled_failure_is_stored_with_its_error(backend: Backend) -> None:
    message = make_message()
    await backend.enqueue([message])
    [delivery] = await backend.fetch([QUEUE], 1, "w")
    error = Failure("KeyError", "'width'", traceback="Traceback ...", id=message.id)

    outcome = Outcome(delivery.id, delivery.attempt, "failed", error=error)
    assert await backend.settle([outcome]) == [True]

    result = (await backend.results([message.id]))[message.id]
    assert (result.state, result.error, result.value) == ("failed", error, None)
    assert await backend.dead_letters() == []


async def test_settled_cancellation_is_stored(backend: Backend) -> None:
    message = make_message()
    await backend.enqueue([message])
    [delivery] = await backend.fetch([QUEUE], 1, "w")

    assert await backend.settle([settle_as(delivery, "cancelled")]) == [True]

    assert (await backend.results([message.id]))[message.id].state == "cancelled"


async def test_settle_of_100_outcomes_returns_100_booleans_in_order(backend: Backend) -> None:
    messages = make_messages(200)
    await backend.enqueue(messages)
    deliveries = await backend.fetch([QUEUE], 200, "w")
    outcomes, expected = [], []
    for i, delivery in enumerate(deliveries[:100]):
        if i % 3 == 0:  # a stale attempt: refused
            outcomes.append(Outcome(delivery.id, delivery.attempt + 1, "succeeded"))
            expected.append(False)
        else:
            outcomes.append(succeeded(delivery, i) if i % 2 else failed(delivery, str(i)))
            expected.append(True)

    assert await backend.settle(outcomes) == expected

    stored = await backend.results([m.id for m in messages])
    assert set(stored) == {o.id for o, ok in zip(outcomes, expected, strict=True) if ok}
    for i, delivery in enumerate(deliveries[:100]):
        if delivery.id in stored:
            assert stored[delivery.id].state == ("succeeded" if i % 2 else "failed")
    assert (await backend.stats()).queues[QUEUE] == QueueStats(leased=200 - len(stored))


async def test_settle_is_refused_for_a_message_that_is_not_leased(backend: Backend) -> None:
    message = make_message()
    await backend.enqueue([message])

    outcomes = [
        Outcome(message.id, 0, "succeeded"),
        Outcome(message.id, 1, "succeeded"),
        Outcome("no-such-id", 1, "succeeded"),
    ]
    assert await backend.settle(outcomes) == [False, False, False]

    assert await backend.results([message.id, "no-such-id"]) == {}
    info = await backend.inspect(message.id)
    assert info is not None
    assert info.state == "pending"


async def test_second_settle_of_a_delivery_never_replaces_the_first_outcome(
    backend: Backend,
) -> None:
    message = make_message()
    await backend.enqueue([message])
    [delivery] = await backend.fetch([QUEUE], 1, "w")
    assert await backend.settle([succeeded(delivery, "first")]) == [True]
    stored = await backend.results([message.id])

    assert await backend.settle([failed(delivery)]) == [False]
    assert await backend.settle([succeeded(delivery, "second")]) == [False]

    assert await backend.results([message.id]) == stored


async def test_first_outcome_in_one_batch_wins(backend: Backend) -> None:
    message = make_message()
    await backend.enqueue([message])
    [delivery] = await backend.fetch([QUEUE], 1, "w")

    applied = await backend.settle([succeeded(delivery, "first"), failed(delivery)])

    assert applied == [True, False]
    result = (await backend.results([message.id]))[message.id]
    assert (result.state, result.value) == ("succeeded", value("first"))


async def test_duplicate_run_of_a_resent_message_never_replaces_its_result(
    backend: Backend,
) -> None:
    message = make_message()
    await backend.enqueue([message])
    [delivery] = await backend.fetch([QUEUE], 1, "w")
    assert await backend.settle([succeeded(delivery, "first")]) == [True]
    stored = await backend.results([message.id])

    assert await backend.enqueue([message]) == [message.id]  # a retried send
    for duplicate in await backend.fetch([QUEUE], 1, "w"):
        await backend.settle([succeeded(duplicate, "duplicate")])

    assert await backend.results([message.id]) == stored


async def test_retry_makes_the_message_scheduled_then_fetchable_with_one_more_failure(
    backend: Backend,
) -> None:
    message = make_message()
    await backend.enqueue([message])
    [first] = await backend.fetch([QUEUE], 1, "w")
    before = await backend.time()

    assert await backend.settle([retry(first, retry_in=0.2)]) == [True]

    assert await backend.results([message.id]) == {}
    info = await backend.inspect(message.id)
    assert info is not None
    assert (info.state, info.failures) == ("scheduled", 1)
    assert await backend.fetch([QUEUE], 1, "w") == []
    [second] = await fetch_eventually(backend)
    assert await backend.time() >= before + 0.2
    assert (second.id, second.attempt, second.failures) == (message.id, first.attempt + 1, 1)

    assert await backend.settle([retry(second)]) == [True]
    [third] = await backend.fetch([QUEUE], 1, "w")
    assert (third.attempt, third.failures) == (second.attempt + 1, 2)
    assert await backend.settle([retry(second)]) == [False]


@pytest.mark.parametrize("state", ["succeeded", "failed", "dead", "cancelled"])
async def test_every_final_state_is_stored_as_a_result(backend: Backend, state: str) -> None:
    message = make_message()
    await backend.enqueue([message])
    [delivery] = await backend.fetch([QUEUE], 1, "w")

    assert await backend.settle([settle_as(delivery, state)]) == [True]

    assert (await backend.results([message.id]))[message.id].state == state
    assert (await backend.stats()).results == 1

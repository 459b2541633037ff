"""Follow-ups (``after``): held until their parent settles, released in the same step."""

from __future__ import annotations

import pytest

from pigeon.backends import Backend
from pigeon.message import Outcome, QueueStats

from .messages import QUEUE, make_message, retry, settle_as, succeeded
from .polling import eventually


async def state_of(backend: Backend, id: str) -> str:
    info = await backend.inspect(id)
    assert info is not None, f"{id} is unknown"
    return info.state


async def test_follow_up_waits_until_its_parent_settles_then_is_pending(
    backend: Backend,
) -> None:
    parent = make_message()
    child = make_message(after=parent.id, mode="then")
    await backend.enqueue([parent, child])
    assert await state_of(backend, child.id) == "waiting"

    [delivery] = await backend.fetch([QUEUE], 10, "w")
    assert delivery.id == parent.id
    assert await state_of(backend, child.id) == "waiting"
    assert await backend.settle([succeeded(delivery)]) == [True]

    assert await state_of(backend, child.id) == "pending"
    assert [d.id for d in await backend.fetch([QUEUE], 10, "w")] == [child.id]


async def test_follow_up_enqueued_after_its_parent_settled_is_pending_at_once(
    backend: Backend,
) -> None:
    parent = make_message()
    await backend.enqueue([parent])
    [delivery] = await backend.fetch([QUEUE], 1, "w")
    assert await backend.settle([succeeded(delivery)]) == [True]

    child = make_message(after=parent.id, mode="then")
    await backend.enqueue([child])

    assert await state_of(backend, child.id) == "pending"
    assert [d.id for d in await backend.fetch([QUEUE], 1, "w")] == [child.id]


async def test_follow_up_in_another_queue_is_released_there(backend: Backend) -> None:
    parent = make_message()
    child = make_message("follow", after=parent.id, mode="finally")
    await backend.enqueue([parent, child])
    [delivery] = await backend.fetch([QUEUE], 1, "w")

    assert await backend.settle([succeeded(delivery)]) == [True]

    assert (await backend.stats()).queues["follow"] == QueueStats(pending=1)
    assert [d.id for d in await backend.fetch(["follow"], 1, "w")] == [child.id]


@pytest.mark.parametrize("state", ["failed", "dead", "cancelled"])
async def test_follow_ups_of_every_mode_are_released_whatever_the_parent_outcome(
    backend: Backend, state: str
) -> None:
    parent = make_message()
    children = [make_message(after=parent.id, mode=mode) for mode in ("then", "catch", "finally")]
    await backend.enqueue([parent, *children])
    [delivery] = await backend.fetch([QUEUE], 10, "w")

    assert await backend.settle([settle_as(delivery, state)]) == [True]

    for child in children:
        assert await state_of(backend, child.id) == "pending"


async def test_retry_of_the_parent_leaves_its_follow_up_waiting(backend: Backend) -> None:
    parent = make_message()
    child = make_message(after=parent.id, mode="then")
    await backend.enqueue([parent, child])
    [delivery] = await backend.fetch([QUEUE], 1, "w")

    assert await backend.settle([retry(delivery, retry_in=100)]) == [True]

    assert await state_of(backend, child.id) == "waiting"


async def test_refused_settle_of_the_parent_leaves_its_follow_up_waiting(
    backend: Backend,
) -> None:
    parent = make_message()
    child = make_message(after=parent.id, mode="then")
    await backend.enqueue([parent, child])
    [delivery] = await backend.fetch([QUEUE], 1, "w")

    stale = Outcome(delivery.id, delivery.attempt + 1, "succeeded")
    assert await backend.settle([stale]) == [False]

    assert await state_of(backend, child.id) == "waiting"


async def test_cancelling_a_parent_releases_its_follow_ups(backend: Backend) -> None:
    parent = make_message(delay=100)
    child = make_message(after=parent.id, mode="catch")
    await backend.enqueue([parent, child])

    assert await backend.cancel([parent.id]) == [parent.id]

    assert await state_of(backend, child.id) == "pending"


async def test_expired_parent_releases_its_follow_ups(backend: Backend) -> None:
    parent = make_message(expires_at=await backend.time() - 1)
    child = make_message(after=parent.id, mode="catch")
    await backend.enqueue([parent, child])

    fetched = await backend.fetch([QUEUE], 10, "w")

    assert parent.id not in {d.id for d in fetched}
    assert (await backend.results([parent.id]))[parent.id].state == "dead"
    assert child.id in {d.id for d in fetched} or await state_of(backend, child.id) == "pending"


async def test_poison_parent_releases_its_follow_ups(backend: Backend) -> None:
    parent = make_message(lease=0.1, max_deliveries=1)
    child = make_message("follow", after=parent.id, mode="catch")
    await backend.enqueue([parent, child])
    await backend.fetch([QUEUE], 1, "w")

    async def parent_dead() -> bool:
        assert await backend.fetch([QUEUE], 1, "w") == []
        return parent.id in await backend.results([parent.id])

    await eventually(parent_dead, "the poison parent to be dead-lettered")
    assert (await backend.results([parent.id]))[parent.id].state == "dead"
    assert await state_of(backend, child.id) == "pending"

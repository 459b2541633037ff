"""Joins: a join message fires exactly once, when its members settle as its mode requires."""

from __future__ import annotations

import pytest

from pigeon.backends import Backend
from pigeon.message import Delivery, JoinMode, JoinSpec, Message

from .messages import QUEUE, make_message, make_messages, settle_as, succeeded

JOINS = "joins"

#: mode, the outcomes of three members in the order they settle, how many settles fire it.
FIRING = [
    ("all", ["succeeded", "succeeded", "succeeded"], 3),
    ("all", ["succeeded", "failed", "succeeded"], 2),
    ("all", ["cancelled", "succeeded", "succeeded"], 1),
    ("all_settled", ["failed", "succeeded", "dead"], 3),
    ("any", ["failed", "succeeded", "failed"], 2),
    ("any", ["failed", "dead", "failed"], 3),
    ("race", ["failed", "succeeded", "succeeded"], 1),
    ("race", ["succeeded", "failed", "failed"], 1),
]


def make_join(members: list[Message], mode: JoinMode) -> Message:
    return make_message(JOINS, join=JoinSpec([m.id for m in members], mode))


async def state_of(backend: Backend, id: str) -> str:
    info = await backend.inspect(id)
    assert info is not None, f"{id} is unknown"
    return info.state


async def lease_members(backend: Backend, members: list[Message]) -> list[Delivery]:
    await backend.enqueue(members)
    deliveries = await backend.fetch([QUEUE], len(members), "w")
    assert [d.id for d in deliveries] == [m.id for m in members]
    return deliveries


@pytest.mark.parametrize(("mode", "outcomes", "fires_after"), FIRING)
async def test_join_fires_exactly_once_when_its_mode_is_satisfied(
    backend: Backend, mode: JoinMode, outcomes: list[str], fires_after: int
) -> None:
    members = make_messages(3)
    deliveries = await lease_members(backend, members)
    join = make_join(members, mode)
    await backend.enqueue([join])

    for settled, (delivery, state) in enumerate(zip(deliveries, outcomes, strict=True), 1):
        assert await state_of(backend, join.id) == "waiting"
        assert await backend.settle([settle_as(delivery, state)]) == [True]
        if settled < fires_after:
            assert await state_of(backend, join.id) == "waiting", f"fired after {settled}"
        else:
            assert await state_of(backend, join.id) == "pending", f"not fired after {settled}"
        if settled == fires_after:
            break

    for delivery, state in list(zip(deliveries, outcomes, strict=True))[fires_after:]:
        assert await backend.settle([settle_as(delivery, state)]) == [True]
    assert [d.id for d in await backend.fetch([JOINS], 10, "w")] == [join.id]
    assert await backend.fetch([JOINS], 10, "w") == []


async def test_join_that_ran_is_not_fired_again_by_later_members(backend: Backend) -> None:
    members = make_messages(3)
    deliveries = await lease_members(backend, members)
    join = make_join(members, "race")
    await backend.enqueue([join])
    assert await backend.settle([succeeded(deliveries[0])]) == [True]
    [fired] = await backend.fetch([JOINS], 10, "w")
    assert await backend.settle([succeeded(fired)]) == [True]

    assert await backend.settle([succeeded(d) for d in deliveries[1:]]) == [True, True]

    assert await backend.fetch([JOINS], 10, "w") == []
    assert await state_of(backend, join.id) == "succeeded"


async def test_join_settled_by_one_batch_of_its_members_fires_once(backend: Backend) -> None:
    members = make_messages(3)
    deliveries = await lease_members(backend, members)
    join = make_join(members, "race")
    await backend.enqueue([join])

    assert await backend.settle([succeeded(d) for d in deliveries]) == [True, True, True]

    assert [d.id for d in await backend.fetch([JOINS], 10, "w")] == [join.id]
    assert await backend.fetch([JOINS], 10, "w") == []


async def test_join_counts_members_settled_before_it_was_enqueued(backend: Backend) -> None:
    members = make_messages(2)
    first, second = await lease_members(backend, members)
    assert await backend.settle([succeeded(first)]) == [True]
    join = make_join(members, "all")

    await backend.enqueue([join])
    assert await state_of(backend, join.id) == "waiting"
    assert await backend.settle([succeeded(second)]) == [True]

    assert await state_of(backend, join.id) == "pending"


@pytest.mark.parametrize(
    ("mode", "outcomes"),
    [
        ("all", ["succeeded", "succeeded"]),
        ("all", ["failed", None]),
        ("all_settled", ["failed", "succeeded"]),
        ("any", ["succeeded", None]),
        ("race", ["failed", None]),
    ],
)
async def test_join_already_satisfied_at_enqueue_is_pending_at_once(
    backend: Backend, mode: JoinMode, outcomes: list[str | None]
) -> None:
    members = make_messages(2)
    deliveries = await lease_members(backend, members)
    settle = [settle_as(d, s) for d, s in zip(deliveries, outcomes, strict=True) if s]
    assert await backend.settle(settle) == [True] * len(settle)
    join = make_join(members, mode)

    await backend.enqueue([join])

    assert await state_of(backend, join.id) == "pending"
    assert [d.id for d in await backend.fetch([JOINS], 10, "w")] == [join.id]


@pytest.mark.parametrize("mode", ["all", "all_settled", "any"])
async def test_join_with_no_members_is_pending_at_once(backend: Backend, mode: JoinMode) -> None:
    join = make_message(JOINS, join=JoinSpec([], mode))

    await backend.enqueue([join])

    assert await state_of(backend, join.id) == "pending"


async def test_race_join_with_no_members_stays_waiting(backend: Backend) -> None:
    join = make_message(JOINS, join=JoinSpec([], "race"))

    await backend.enqueue([join])

    assert await state_of(backend, join.id) == "waiting"
    assert await backend.fetch([JOINS], 1, "w") == []


async def test_cancelled_member_counts_as_settled(backend: Backend) -> None:
    leased, pending = make_messages(2)
    await backend.enqueue([leased, pending])
    [delivery] = await backend.fetch([QUEUE], 1, "w")
    assert delivery.id == leased.id
    join = make_join([leased, pending], "all_settled")
    await backend.enqueue([join])

    assert await backend.settle([succeeded(delivery)]) == [True]
    assert await state_of(backend, join.id) == "waiting"
    assert await backend.cancel([pending.id]) == [pending.id]

    assert await state_of(backend, join.id) == "pending"


async def test_requeued_member_settling_again_does_not_advance_its_join_twice(
    backend: Backend,
) -> None:
    members = make_messages(2)
    first, second = await lease_members(backend, members)
    join = make_join(members, "all_settled")
    await backend.enqueue([join])
    assert await backend.settle([settle_as(first, "dead")]) == [True]
    assert await backend.requeue([first.id]) == 1
    [again] = await backend.fetch([QUEUE], 1, "w")

    assert await backend.settle([succeeded(again)]) == [True]
    assert await state_of(backend, join.id) == "waiting"

    assert await backend.settle([succeeded(second)]) == [True]
    assert await state_of(backend, join.id) == "pending"


async def test_member_settled_before_its_join_was_sent_counts_once_when_requeued(
    backend: Backend,
) -> None:
    # Counted at once when the join is enqueued; settling again after a requeue from the
    # dead letters must not count it a second time.
    members = make_messages(3)
    first, second, third = await lease_members(backend, members)
    assert await backend.settle([settle_as(first, "dead")]) == [True]
    join = make_join(members, "all_settled")
    await backend.enqueue([join])
    assert await backend.requeue([first.id]) == 1
    [again] = await backend.fetch([QUEUE], 1, "w")

    assert await backend.settle([succeeded(again)]) == [True]
    assert await backend.settle([succeeded(second)]) == [True]
    assert await state_of(backend, join.id) == "waiting"

    assert await backend.settle([succeeded(third)]) == [True]
    assert await state_of(backend, join.id) == "pending"

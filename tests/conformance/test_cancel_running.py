"""Cancelling running work: ``cancel`` marks a leased message, ``cancelling`` tells its holder,
and a ``cancelled`` outcome from the holding attempt settles it like any final outcome."""

from __future__ import annotations

import pytest

from pigeon.backends import Backend
from pigeon.message import Failure, JoinSpec, Lease, Outcome

from .messages import QUEUE, lease_of, make_message, make_messages, retry, succeeded
from .polling import fetch_eventually


@pytest.fixture(autouse=True)
def _needs_cancelling(backend: Backend) -> None:
    if not hasattr(backend, "cancelling"):
        pytest.skip(f"cancelling() not implemented on {type(backend).__name__} yet")


def cancelled(delivery_id: str, attempt: int) -> Outcome:
    error = Failure("Cancelled", "cancelled while it ran", id=delivery_id)
    return Outcome(delivery_id, attempt, "cancelled", error=error)


async def test_cancel_marks_a_leased_message_and_cancelling_names_it_to_its_holder(
    backend: Backend,
) -> None:
    target, other = make_messages(2)
    await backend.enqueue([target, other])
    held = await backend.fetch([QUEUE], 2, "w")
    assert await backend.cancelling([lease_of(d) for d in held]) == set()

    assert await backend.cancel([target.id]) == []  # not settled: it is running

    assert await backend.cancelling([lease_of(d) for d in held]) == {target.id}
    info = await backend.inspect(target.id)
    assert info is not None
    assert (info.state, info.result, info.cancel_requested) == ("leased", None, True)
    untouched = await backend.inspect(other.id)
    assert untouched is not None
    assert (untouched.state, untouched.cancel_requested) == ("leased", False)
    assert await backend.results([target.id]) == {}
    assert await backend.extend([lease_of(d) for d in held]) == set()  # the lease is kept
    assert await backend.cancelling([lease_of(d) for d in held]) == {target.id}  # no change


async def test_cancelling_answers_for_every_lease_in_one_call_and_ignores_unknown_ones(
    backend: Backend,
) -> None:
    messages = make_messages(30)
    await backend.enqueue(messages)
    held = await backend.fetch([QUEUE], 30, "w")
    marked = {m.id for m in messages[::3]}
    assert await backend.cancel(sorted(marked)) == []

    leases = [lease_of(d) for d in held]
    assert await backend.cancelling(leases) == marked
    assert await backend.cancelling([]) == set()
    assert await backend.cancelling([Lease(make_message().id, 1), *leases]) == marked


async def test_cancelling_does_not_name_a_lease_held_as_another_attempt(backend: Backend) -> None:
    message = make_message(lease=0.2)
    await backend.enqueue([message])
    [stale] = await backend.fetch([QUEUE], 1, "w1")
    [current] = await fetch_eventually(backend, worker="w2")
    assert await backend.cancel([message.id]) == []

    assert await backend.cancelling([lease_of(stale)]) == set()
    assert await backend.cancelling([lease_of(current)]) == {message.id}


async def test_cancelled_outcome_of_the_holder_settles_and_stores_the_cancellation(
    backend: Backend,
) -> None:
    message = make_message()
    await backend.enqueue([message])
    [delivery] = await backend.fetch([QUEUE], 1, "w")
    assert await backend.cancel([message.id]) == []

    assert await backend.settle([cancelled(delivery.id, delivery.attempt)]) == [True]

    result = (await backend.results([message.id]))[message.id]
    assert result.state == "cancelled"
    assert result.error is not None
    assert result.error.message == "cancelled while it ran"
    info = await backend.inspect(message.id)
    assert info is not None
    assert info.state == "cancelled"
    assert await backend.cancelling([lease_of(delivery)]) == set()
    assert await backend.cancel([message.id]) == []


async def test_cancelled_running_message_releases_its_follow_ups_and_advances_its_joins(
    backend: Backend,
) -> None:
    parent, sibling = make_messages(2)
    await backend.enqueue([parent, sibling])
    held = {d.id: d for d in await backend.fetch([QUEUE], 2, "w")}
    child = make_message("children", after=parent.id, mode="finally")
    join = make_message("joins", join=JoinSpec([parent.id, sibling.id], "all_settled"))
    await backend.enqueue([child, join])
    assert await backend.settle([succeeded(held[sibling.id])]) == [True]
    assert await backend.cancel([parent.id]) == []
    assert [d.id for d in await backend.fetch(["children", "joins"], 2, "w")] == []

    delivery = held[parent.id]
    assert await backend.settle([cancelled(delivery.id, delivery.attempt)]) == [True]

    due = await backend.fetch(["children", "joins"], 2, "w")
    assert sorted(d.id for d in due) == sorted([child.id, join.id])


async def test_the_request_stays_with_the_message_across_a_lapsed_lease_and_a_release(
    backend: Backend,
) -> None:
    message = make_message(lease=0.2)
    await backend.enqueue([message])
    await backend.fetch([QUEUE], 1, "w1")
    assert await backend.cancel([message.id]) == []

    [second] = await fetch_eventually(backend, worker="w2")  # the first holder died
    assert await backend.cancelling([lease_of(second)]) == {message.id}
    assert await backend.release([lease_of(second)]) == 1
    [third] = await backend.fetch([QUEUE], 1, "w3", lease=30)
    assert await backend.cancelling([lease_of(third)]) == {message.id}
    assert await backend.settle([retry(third)]) == [True]
    [fourth] = await backend.fetch([QUEUE], 1, "w4", lease=30)
    assert await backend.cancelling([lease_of(fourth)]) == {message.id}


async def test_a_running_message_that_was_not_cancelled_settles_as_usual(
    backend: Backend,
) -> None:
    running, cancelled_first = make_messages(2)
    await backend.enqueue([running, cancelled_first])
    held = await backend.fetch([QUEUE], 2, "w")
    assert await backend.cancel([cancelled_first.id]) == []

    assert await backend.settle([succeeded(d) for d in held]) == [True, True]

    results = await backend.results([running.id, cancelled_first.id])
    # A holder that finished before it heard of the cancellation: its outcome stands.
    assert {r.state for r in results.values()} == {"succeeded"}
    assert await backend.cancelling([lease_of(d) for d in held]) == set()

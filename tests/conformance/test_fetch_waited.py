"""Fetch: how long each delivery was due before it was leased (``Delivery.waited``).

It is the backend's reckoning, on its own clock, from the time the message became due: its
send (or its delay's end), its retry's backoff's end, or the end of a lease it lost. Each test
brackets it between two readings of this process's clock, taken before and after the fetch:
the backend's clock is this machine's (memory, SQLite) or a server's on loopback.
"""

from __future__ import annotations

import asyncio
import time

from pigeon.backends import Backend

from .messages import QUEUE, lease_of, make_message, retry

#: Rounding of the backends' clocks (Redis: microseconds; SQLite, PostgreSQL: floats) and
#: the gap between this process's clock readings and the backend's.
SLACK = 0.05


async def waited_within(backend: Backend, due_from: float, due_by: float) -> float:
    """The ``waited`` of the one delivery due between ``due_from`` and ``due_by`` (this
    process's monotonic clock), fetched 0.3 s after ``due_by``; checked against the span
    between the two readings that bracket the fetch."""
    await asyncio.sleep(max(due_by + 0.3 - time.monotonic(), 0.0))
    before = time.monotonic()
    [delivery] = await backend.fetch([QUEUE], 1, "w")
    after = time.monotonic()
    assert delivery.waited is not None
    assert before - due_by - SLACK <= delivery.waited <= after - due_from + SLACK
    return delivery.waited


async def test_a_first_delivery_waited_since_it_was_sent(backend: Backend) -> None:
    before = time.monotonic()
    await backend.enqueue([make_message()])
    after = time.monotonic()

    assert await waited_within(backend, before, after) >= 0.3 - SLACK


async def test_a_delayed_message_waited_since_its_delay_ended(backend: Backend) -> None:
    before = time.monotonic()
    await backend.enqueue([make_message(delay=0.6)])
    after = time.monotonic()

    # counted from the delay's end, never from the send
    await waited_within(backend, before + 0.6, after + 0.6)


async def test_a_retry_waited_since_its_backoff_ended_not_since_it_was_sent(
    backend: Backend,
) -> None:
    await backend.enqueue([make_message()])
    [first] = await backend.fetch([QUEUE], 1, "w")
    await asyncio.sleep(0.5)  # the first attempt "runs": none of this is the retry's wait
    before = time.monotonic()
    assert await backend.settle([retry(first, retry_in=0.2)]) == [True]
    after = time.monotonic()

    await waited_within(backend, before + 0.2, after + 0.2)


async def test_a_lost_lease_waited_since_the_lease_ran_out(backend: Backend) -> None:
    await backend.enqueue([make_message()])
    before = time.monotonic()
    [first] = await backend.fetch([QUEUE], 1, "w", lease=0.3)
    after = time.monotonic()

    await waited_within(backend, before + 0.3, after + 0.3)
    # the lease it lost is no longer held (fencing): extend names it as lost
    assert await backend.extend([lease_of(first)]) == {first.id}

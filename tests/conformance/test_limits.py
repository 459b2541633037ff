"""Rate and concurrency limits: token buckets (``take``), leased places (``acquire``), and
deferring a held message (``release`` with a delay)."""

from __future__ import annotations

import asyncio
import time

from pigeon.backends import Backend
from pigeon.message import Slot, Take

from .messages import QUEUE, lease_of, make_message
from .polling import clock_passes, fetch_eventually

#: Broker clocks and expiries are kept to the millisecond.
RESOLUTION = 0.005


# take ------------------------------------------------------------------------------------


async def test_the_first_take_of_a_bucket_starts_at_once(backend: Backend) -> None:
    assert await backend.take([Take("b", interval=10.0)]) == [0.0]


async def test_a_slot_beyond_hold_is_not_reserved(backend: Backend) -> None:
    assert await backend.take([Take("b", interval=10.0)]) == [0.0]
    [wait] = await backend.take([Take("b", interval=10.0, hold=0.0)])
    assert 10.0 - 1.0 < wait <= 10.0
    # nothing was reserved: the next slot is still the same one, not one interval later
    [again] = await backend.take([Take("b", interval=10.0, hold=0.0)])
    assert 10.0 - 1.0 < again <= wait


async def test_reserved_slots_are_one_interval_apart(backend: Backend) -> None:
    waits = await backend.take([Take("b", interval=0.5, hold=60.0)] * 6)
    assert waits[0] == 0.0
    for k, wait in enumerate(waits):
        assert abs(wait - k * 0.5) < RESOLUTION * 2, waits


async def test_burst_starts_back_to_back_then_one_per_interval(backend: Backend) -> None:
    waits = await backend.take([Take("b", interval=1.0, burst=3, hold=60.0)] * 5)
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert abs(waits[3] - 1.0) < RESOLUTION * 2
    assert abs(waits[4] - 2.0) < RESOLUTION * 2


async def test_buckets_are_independent(backend: Backend) -> None:
    assert await backend.take([Take("a", 10.0), Take("b", 10.0)]) == [0.0, 0.0]


async def test_a_bucket_refills_as_the_clock_passes(backend: Backend) -> None:
    assert await backend.take([Take("b", interval=0.2)]) == [0.0]
    start = await backend.time()
    await clock_passes(backend, start + 0.2 + RESOLUTION)
    assert await backend.take([Take("b", interval=0.2)]) == [0.0]


async def test_concurrent_takes_never_share_a_slot(
    backend: Backend, second_connection: Backend
) -> None:
    begun = time.monotonic()
    calls = [
        (backend if n % 2 else second_connection).take([Take("b", 1.0, hold=60.0)])
        for n in range(20)
    ]
    waits = sorted(w for [w] in await asyncio.gather(*calls))
    elapsed = time.monotonic() - begun
    assert waits[0] == 0.0
    # 20 reservations: the last is 19 intervals after the first, whatever the interleaving
    assert 19.0 - elapsed - RESOLUTION <= waits[-1] <= 19.0 + RESOLUTION, waits
    assert len({round(w) for w in waits}) == 20, waits


# acquire / release_slots ------------------------------------------------------------------


async def test_places_up_to_the_limit_then_refused(backend: Backend) -> None:
    got = await backend.acquire([Slot("s", h, limit=2) for h in ("a", "b", "c")])
    assert got == [True, True, False]
    assert await backend.acquire([Slot("s", "a", limit=2)]) == [True]  # a renewal
    assert await backend.acquire([Slot("other", "c", limit=2)]) == [True]  # names independent


async def test_a_released_place_is_free_at_once(backend: Backend) -> None:
    assert await backend.acquire([Slot("s", "a", limit=1)]) == [True]
    assert await backend.acquire([Slot("s", "b", limit=1)]) == [False]
    await backend.release_slots([Slot("s", "a"), Slot("s", "unknown")])
    assert await backend.acquire([Slot("s", "b", limit=1)]) == [True]


async def test_a_place_not_renewed_runs_out_after_its_ttl(backend: Backend) -> None:
    assert await backend.acquire([Slot("s", "dead-worker", limit=1, ttl=0.3)]) == [True]
    taken_at = await backend.time()
    assert await backend.acquire([Slot("s", "b", limit=1)]) == [False]
    await clock_passes(backend, taken_at + 0.3 + RESOLUTION)
    assert await backend.acquire([Slot("s", "b", limit=1)]) == [True]
    assert await backend.acquire([Slot("s", "dead-worker", limit=1)]) == [False]


async def test_renewing_keeps_a_place_past_its_first_ttl(backend: Backend) -> None:
    assert await backend.acquire([Slot("s", "a", limit=1, ttl=0.3)]) == [True]
    until = await backend.time() + 0.8
    while await backend.time() < until:
        assert await backend.acquire([Slot("s", "a", limit=1, ttl=0.3)]) == [True]
        assert await backend.acquire([Slot("s", "b", limit=1, ttl=0.3)]) == [False]
        await asyncio.sleep(0.05)


async def test_concurrent_acquires_never_exceed_the_limit(
    backend: Backend, second_connection: Backend
) -> None:
    calls = [
        (backend if n % 2 else second_connection).acquire([Slot("s", f"h{n}", limit=5)])
        for n in range(20)
    ]
    got = [g for [g] in await asyncio.gather(*calls)]
    assert got.count(True) == 5


# release with a delay ----------------------------------------------------------------------


async def test_release_with_a_delay_defers_without_counting_a_failure(backend: Backend) -> None:
    message = make_message()
    await backend.enqueue([message])
    [first] = await backend.fetch([QUEUE], 1, "w")
    released_at = await backend.time()
    assert await backend.release([lease_of(first)], delay=0.4) == 1

    assert await backend.fetch([QUEUE], 1, "w") == []
    info = await backend.inspect(message.id)
    assert info is not None
    assert info.state == "scheduled"

    [second] = await fetch_eventually(backend)
    assert await backend.time() >= released_at + 0.4 - RESOLUTION
    assert (second.attempt, second.failures) == (first.attempt + 1, first.failures)

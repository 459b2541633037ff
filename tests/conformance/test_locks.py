"""Named locks (the scheduler's leader lock): one owner at a time, for ttl seconds on the
backend clock, renewed by its owner, free at once when unlocked."""

from __future__ import annotations

import asyncio

import pytest

from pigeon.backends import Backend

from .polling import clock_passes

#: Brokers keep expiries to the millisecond (Redis PX): allow that much past the ttl.
RESOLUTION = 0.005


@pytest.fixture(autouse=True)
def _needs_locks(backend: Backend) -> None:
    if not hasattr(backend, "lock"):
        pytest.skip(f"lock() not implemented on {type(backend).__name__} yet")


async def test_a_free_lock_is_taken_and_refused_to_another_owner(backend: Backend) -> None:
    assert await backend.lock("leader", "a", 30) is True
    assert await backend.lock("leader", "b", 30) is False
    assert await backend.lock("leader", "a", 30) is True  # a renewal
    assert await backend.lock("other", "b", 30) is True  # names are independent


async def test_a_lock_not_renewed_expires_after_its_ttl_and_another_owner_takes_it(
    backend: Backend,
) -> None:
    assert await backend.lock("leader", "a", 0.3) is True
    taken_at = await backend.time()
    assert await backend.lock("leader", "b", 0.3) is False

    await clock_passes(backend, taken_at + 0.3 + RESOLUTION)

    assert await backend.lock("leader", "b", 30) is True
    assert await backend.lock("leader", "a", 30) is False


async def test_renewing_pushes_the_expiry_to_now_plus_ttl(backend: Backend) -> None:
    assert await backend.lock("leader", "a", 0.4) is True
    until = await backend.time() + 1.2  # three times the ttl

    while await backend.time() < until:
        assert await backend.lock("leader", "a", 0.4) is True
        assert await backend.lock("leader", "b", 0.4) is False, "taken while renewed"
        await asyncio.sleep(0.05)


async def test_an_owner_whose_lock_expired_untaken_takes_it_again(backend: Backend) -> None:
    assert await backend.lock("leader", "a", 0.2) is True
    await clock_passes(backend, await backend.time() + 0.2 + RESOLUTION)

    assert await backend.lock("leader", "a", 30) is True
    assert await backend.lock("leader", "b", 30) is False


async def test_unlock_frees_the_lock_at_once_only_for_its_owner(backend: Backend) -> None:
    assert await backend.lock("leader", "a", 30) is True

    await backend.unlock("leader", "b")  # not the owner: nothing happens
    assert await backend.lock("leader", "b", 30) is False
    await backend.unlock("leader", "a")
    assert await backend.lock("leader", "b", 30) is True
    await backend.unlock("leader", "a")  # no longer the owner
    assert await backend.lock("leader", "a", 30) is False
    await backend.unlock("never-taken", "a")


async def test_concurrent_attempts_give_the_lock_to_exactly_one_owner(backend: Backend) -> None:
    answers = await asyncio.gather(*(backend.lock("leader", f"w{n}", 30) for n in range(20)))

    assert answers.count(True) == 1
    winner = f"w{answers.index(True)}"
    assert await backend.lock("leader", winner, 30) is True


async def test_a_lock_held_through_one_connection_is_refused_through_another(
    backend: Backend, second_connection: Backend
) -> None:
    first = asyncio.gather(*(backend.lock("leader", f"a{n}", 30) for n in range(10)))
    second = asyncio.gather(*(second_connection.lock("leader", f"b{n}", 30) for n in range(10)))
    answers = [*await first, *await second]
    owners = [f"a{n}" for n in range(10)] + [f"b{n}" for n in range(10)]

    [winner] = [owner for owner, taken in zip(owners, answers, strict=True) if taken]
    assert await backend.lock("leader", "c", 30) is False
    assert await second_connection.lock("leader", "c", 30) is False
    other = second_connection if winner.startswith("a") else backend
    await other.unlock("leader", winner)  # through the connection that did not take it
    assert await backend.lock("leader", "c", 30) is True


async def test_a_ttl_that_is_not_positive_is_refused(backend: Backend) -> None:
    with pytest.raises(ValueError, match="ttl"):
        await backend.lock("leader", "a", 0)

"""The Batcher: many single requests into one call, and drain()."""

from __future__ import annotations

import asyncio

import pytest

from pigeon.batching import Batcher


class Slow:
    """A batched call that waits for the test to let each batch through."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.gate = asyncio.Event()

    async def __call__(self, items: list[int]) -> list[int]:
        self.calls.append(items)
        await self.gate.wait()
        self.gate.clear()
        return items


async def let_through(slow: Slow, batches: int) -> None:
    for _ in range(batches):
        while slow.gate.is_set():
            await asyncio.sleep(0)
        slow.gate.set()
        await asyncio.sleep(0)


async def test_sends_of_one_loop_iteration_share_a_batch_and_later_ones_wait_for_the_next() -> None:
    slow = Slow()
    batcher: Batcher[int, int] = Batcher(slow)
    first = [batcher.submit(i) for i in range(3)]
    await asyncio.sleep(0)  # the batch of 0-2 is in flight
    later = [batcher.submit(i) for i in range(3, 5)]
    assert slow.calls == [[0, 1, 2]]
    await let_through(slow, 2)
    await batcher.drain()
    assert slow.calls == [[0, 1, 2], [3, 4]]
    assert [f.result() for f in first + later] == [0, 1, 2, 3, 4]


async def test_drain_waits_for_what_was_submitted_before_it_and_no_longer() -> None:
    slow = Slow()
    batcher: Batcher[int, int] = Batcher(slow)
    batcher.submit(1)
    await asyncio.sleep(0)
    batcher.submit(2)  # waits for the next batch
    drained = asyncio.ensure_future(batcher.drain())
    batcher.submit(3)  # after the drain began: not waited for
    await asyncio.sleep(0.01)
    assert not drained.done()
    slow.gate.set()  # [1] returns, [2, 3] goes out and is held
    await asyncio.sleep(0.01)
    assert not drained.done()  # 2 is not handled yet
    slow.gate.set()
    await asyncio.wait_for(drained, 1)
    assert slow.calls == [[1], [2, 3]]
    assert batcher.idle


async def test_drain_of_an_idle_batcher_returns_at_once() -> None:
    batcher: Batcher[int, int] = Batcher(Slow())
    await asyncio.wait_for(batcher.drain(), 0.1)


async def test_a_cancelled_drain_cancels_neither_the_batch_nor_other_drains() -> None:
    slow = Slow()
    batcher: Batcher[int, int] = Batcher(slow)
    sent = batcher.submit(1)
    one = asyncio.ensure_future(batcher.drain())
    other = asyncio.ensure_future(batcher.drain())
    await asyncio.sleep(0.01)
    one.cancel()
    await asyncio.sleep(0)
    slow.gate.set()
    await asyncio.wait_for(other, 1)
    assert one.cancelled()
    assert sent.result() == 1


async def test_a_failed_batch_rejects_its_items_and_still_ends_the_drain() -> None:
    async def broken(items: list[int]) -> list[int]:
        raise ConnectionError("gone")

    batcher: Batcher[int, int] = Batcher(broken)
    futures = [batcher.submit(i) for i in range(3)]
    await asyncio.wait_for(batcher.drain(), 1)
    for f in futures:
        with pytest.raises(ConnectionError, match="gone"):
            f.result()
    assert batcher.idle

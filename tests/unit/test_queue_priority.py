"""Priorities across queues (``-q high,default``): the first queue is served first, and a
flood of it never starves the queues after it (one fetch in ten puts them first)."""

from __future__ import annotations

import asyncio

import pigeon
from pigeon.worker.queues import FAIR_EVERY, fetch_order

from .conftest import StartWorker
from .support import eventually


def test_fetch_order_keeps_the_given_order_except_every_tenth_fetch_which_rotates() -> None:
    queues = ["high", "default"]

    orders = [fetch_order(queues, n) for n in range(1, 31)]

    rotated = [n for n, order in enumerate(orders, 1) if order != queues]
    assert rotated == [10, 20, 30]
    assert orders[9] == ["default", "high"]


def test_with_three_queues_each_later_queue_takes_its_turn_at_the_front() -> None:
    queues = ["a", "b", "c"]

    fronts = [fetch_order(queues, FAIR_EVERY * turn)[0] for turn in range(1, 7)]

    assert fronts == ["b", "c", "b", "c", "b", "c"]
    assert fetch_order(queues, 1) == queues
    assert fetch_order(["only"], FAIR_EVERY) == ["only"]


async def run_order(app: pigeon.App) -> tuple[pigeon.Task[[str, int], None], list[str]]:
    done: list[str] = []

    @app.task
    async def work(queue: str, n: int) -> None:
        done.append(queue)

    return work, done


async def test_the_first_queue_is_taken_first_when_both_have_due_messages(
    app: pigeon.App, start_worker: StartWorker
) -> None:
    work, done = await run_order(app)
    for n in range(5):
        await work.options(queue="default").send("default", n).sent()
    for n in range(5):
        await work.options(queue="high").send("high", n).sent()

    await start_worker(concurrency=1, queues=["high", "default"])
    await eventually(lambda: len(done) == 10)

    assert done == ["high"] * 5 + ["default"] * 5


async def test_a_flood_of_the_first_queue_does_not_starve_the_second(
    app: pigeon.App, start_worker: StartWorker
) -> None:
    work, done = await run_order(app)
    flood = [work.options(queue="high").send("high", n) for n in range(300)]
    others = [work.options(queue="default").send("default", n) for n in range(3)]
    await asyncio.gather(*(p.sent() for p in [*flood, *others]))

    await start_worker(concurrency=1, queues=["high", "default"])
    await asyncio.wait_for(asyncio.gather(*others), 20)

    # Each default message was served by a fetch that put its queue first (the 10th, 20th
    # and 30th), while most of the flood was still waiting. (Positions in the order run: by
    # the time the sender hears of the third outcome, the worker has gone on with the flood.)
    positions = [i for i, queue in enumerate(done) if queue == "default"]
    assert len(positions) == 3
    for turn, position in enumerate(positions, 1):
        assert position <= turn * FAIR_EVERY - 1  # earlier if a fetch came back empty
    assert len(done) < len(flood)

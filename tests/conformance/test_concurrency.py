"""Concurrent fetchers, in one event loop and in other processes, never share a message."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections import Counter

from pigeon.backends import Backend

from .messages import QUEUE, make_messages
from .processes import fetch_and_settle_until_empty, fetch_until_empty


async def test_twenty_concurrent_fetchers_never_hold_one_message_twice(backend: Backend) -> None:
    messages = make_messages(500, lease=60)
    await backend.enqueue(messages)

    async def fetcher(n: int) -> list[str]:
        held: list[str] = []
        while batch := await backend.fetch([QUEUE], 7, f"w{n}"):
            held.extend(d.id for d in batch)
        return held

    held = [id for ids in await asyncio.gather(*(fetcher(n) for n in range(20))) for id in ids]

    twice = [id for id, count in Counter(held).items() if count > 1]
    assert twice == []
    assert sorted(held) == sorted(m.id for m in messages)
    assert (await backend.stats()).queues[QUEUE].leased == 500


async def test_fetchers_in_other_processes_never_lease_one_message_twice(
    backend: Backend, cross_process_url: str
) -> None:
    processes = 3
    messages = make_messages(600)
    await backend.enqueue(messages)
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(processes + 1)
    out = context.Queue()
    workers = [
        context.Process(
            target=fetch_and_settle_until_empty,
            args=(cross_process_url, QUEUE, start, out, f"proc-{n}"),
        )
        for n in range(processes)
    ]
    for process in workers:
        process.start()
    try:
        await asyncio.to_thread(start.wait, 60)
        mine, my_applied = await fetch_until_empty(backend, QUEUE, "main")
        reports = [await asyncio.to_thread(out.get, True, 60) for _ in workers]
    finally:
        for process in workers:
            await asyncio.to_thread(process.join, 30)
            if process.is_alive():
                process.kill()

    errors = [error for _, _, _, error in reports if error]
    assert errors == []
    leased = mine + [pair for _, pairs, _, _ in reports for pair in pairs]
    applied = my_applied + [ok for _, _, oks, _ in reports for ok in oks]
    twice = [id for id, count in Counter(id for id, _ in leased).items() if count > 1]
    assert twice == []
    assert sorted(id for id, _ in leased) == sorted(m.id for m in messages)
    assert all(attempt == 1 for _, attempt in leased)
    assert applied == [True] * len(messages)
    assert all(process.exitcode == 0 for process in workers)
    assert (await backend.stats()).results == len(messages)
    by_worker = Counter(worker for worker, pairs, _, _ in reports if pairs)
    assert len(by_worker) + bool(mine) >= 2, "no contention: one fetcher took everything"

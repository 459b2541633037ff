"""Pausing a queue: no fetch leases its messages until it is resumed (or its pause ends by
itself, on the backend's clock), while sends are still accepted and work already leased
still extends and settles."""

from __future__ import annotations

import asyncio
import math
import time

import pytest

from pigeon.backends import Backend

from .messages import QUEUE, lease_of, make_message, make_messages, succeeded
from .polling import clock_passes

OTHER = "other"


async def test_a_paused_queue_is_not_fetched_while_other_queues_are(backend: Backend) -> None:
    held = make_messages(3)
    free = make_messages(2, queue=OTHER)
    await backend.enqueue([*held, *free])
    await backend.pause(QUEUE)

    fetched = await backend.fetch([QUEUE, OTHER], 10, "w")

    assert sorted(d.id for d in fetched) == sorted(m.id for m in free)
    assert await backend.fetch([QUEUE], 10, "w") == []
    assert await backend.fetch([QUEUE], 10, "w", wait=0.2) == []


async def test_sends_to_a_paused_queue_are_accepted_and_counted(backend: Backend) -> None:
    await backend.pause(QUEUE, "deploying")
    messages = [*make_messages(2), make_message(delay=100)]

    assert await backend.enqueue(messages) == [m.id for m in messages]
    stats = await backend.stats()
    assert (stats.queues[QUEUE].pending, stats.queues[QUEUE].scheduled) == (2, 1)
    info = await backend.inspect(messages[0].id)
    assert info is not None
    assert info.state == "pending"


async def test_resume_makes_the_queue_fetchable_in_order(backend: Backend) -> None:
    messages = [make_message(priority=p) for p in (1, 5, 3)]
    await backend.pause(QUEUE)
    await backend.enqueue(messages)
    assert await backend.fetch([QUEUE], 10, "w") == []

    assert await backend.resume(QUEUE) is True

    fetched = await backend.fetch([QUEUE], 10, "w")
    assert [d.id for d in fetched] == [messages[1].id, messages[2].id, messages[0].id]
    assert await backend.paused() == {}
    assert await backend.resume(QUEUE) is False  # not paused any more


async def test_resume_wakes_a_waiting_fetch(backend: Backend) -> None:
    message = make_message()
    await backend.pause(QUEUE)
    await backend.enqueue([message])

    async def resume_soon() -> None:
        await asyncio.sleep(0.3)
        await backend.resume(QUEUE)

    start = time.monotonic()
    async with asyncio.TaskGroup() as group:
        group.create_task(resume_soon())
        fetched = await backend.fetch([QUEUE], 1, "w", wait=10)

    assert [d.id for d in fetched] == [message.id]
    assert 0.25 <= time.monotonic() - start < 3, "fetch slept instead of waking on the resume"


async def test_a_resume_through_another_connection_wakes_a_waiting_fetch(
    backend: Backend, second_connection: Backend
) -> None:
    message = make_message()
    await backend.pause(QUEUE)
    await backend.enqueue([message])

    async def resume_soon() -> None:
        await asyncio.sleep(0.3)
        await second_connection.resume(QUEUE)

    start = time.monotonic()
    async with asyncio.TaskGroup() as group:
        group.create_task(resume_soon())
        fetched = await backend.fetch([QUEUE], 1, "w", wait=10)

    assert [d.id for d in fetched] == [message.id]
    assert time.monotonic() - start < 3, "fetch slept instead of waking on the resume"


async def test_a_pause_with_an_expiry_ends_by_itself(backend: Backend) -> None:
    message = make_message()
    await backend.enqueue([message])
    until = await backend.time() + 0.5
    pause = await backend.pause(QUEUE, "maintenance", until)
    assert pause.until == pytest.approx(until, abs=1e-3)
    assert await backend.fetch([QUEUE], 1, "w") == []

    fetched = await backend.fetch([QUEUE], 1, "w", wait=10)  # wakes when the pause ends

    assert [d.id for d in fetched] == [message.id]
    assert await backend.time() >= until - 1e-3
    assert await backend.paused() == {}
    assert (await backend.stats()).paused == {}
    assert await backend.resume(QUEUE) is False  # it had ended


async def test_an_expiry_given_while_a_fetch_waits_ends_that_wait(backend: Backend) -> None:
    message = make_message()
    await backend.enqueue([message])
    await backend.pause(QUEUE, "until resumed")
    assert await backend.fetch([QUEUE], 1, "w", wait=0.2) == []  # a fetch learnt it is paused

    async def expire_soon() -> None:
        await asyncio.sleep(0.2)
        await backend.pause(QUEUE, "for a moment", await backend.time() + 0.3)

    start = time.monotonic()
    async with asyncio.TaskGroup() as group:
        group.create_task(expire_soon())
        fetched = await backend.fetch([QUEUE], 1, "w", wait=10)

    assert [d.id for d in fetched] == [message.id]
    assert 0.4 <= time.monotonic() - start < 3, "fetch slept past the pause's end"


async def test_an_expired_pause_leaves_the_queue_fetchable_without_a_wait(
    backend: Backend,
) -> None:
    until = await backend.time() + 0.2
    await backend.pause(QUEUE, None, until)
    await clock_passes(backend, until)
    message = make_message()
    await backend.enqueue([message])

    assert [d.id for d in await backend.fetch([QUEUE], 1, "w")] == [message.id]


async def test_work_leased_before_the_pause_extends_releases_and_settles(
    backend: Backend,
) -> None:
    first, second, third = make_messages(3)
    await backend.enqueue([first, second, third])
    running = await backend.fetch([QUEUE], 3, "w")
    assert len(running) == 3
    await backend.pause(QUEUE, "draining")

    assert await backend.extend([lease_of(d) for d in running]) == set()
    assert await backend.settle([succeeded(running[0])]) == [True]
    assert (await backend.results([running[0].id]))[running[0].id].state == "succeeded"
    assert await backend.release([lease_of(running[1])]) == 1
    assert await backend.cancel([running[2].id]) == []  # running: marked, not settled
    assert await backend.cancelling([lease_of(running[2])]) == {running[2].id}
    # The released message is pending again, and paused with its queue.
    assert await backend.fetch([QUEUE], 3, "w") == []
    await backend.resume(QUEUE)
    assert [d.id for d in await backend.fetch([QUEUE], 3, "w")] == [running[1].id]


async def test_pausing_again_updates_reason_and_until_and_keeps_since(backend: Backend) -> None:
    first = await backend.pause(QUEUE, "first")
    now = await backend.time()
    assert first.queue == QUEUE
    assert first.reason == "first"
    assert first.until is None
    assert first.since == pytest.approx(now, abs=5)

    until = now + 60
    second = await backend.pause(QUEUE, "second", until)
    assert (second.reason, second.since) == ("second", first.since)
    assert second.until == pytest.approx(until, abs=1e-3)
    assert await backend.paused() == {QUEUE: second}

    third = await backend.pause(QUEUE)
    assert (third.reason, third.until, third.since) == (None, None, first.since)
    assert await backend.paused() == {QUEUE: third}


async def test_a_pause_after_one_that_expired_starts_afresh(backend: Backend) -> None:
    until = await backend.time() + 0.2
    first = await backend.pause(QUEUE, "short", until)
    await clock_passes(backend, until)

    second = await backend.pause(QUEUE, "again")

    assert second.since > first.since
    assert await backend.paused() == {QUEUE: second}


@pytest.mark.parametrize(
    "reason",
    [
        None,
        "",
        "déploiement en cours: base de données 🚧",
        "数据库迁移\nsecond line\ttab",
        '"quoted" \\ back\\slash {json: [1]} %s %d',
        "x" * 5000,
    ],
)
async def test_the_reason_round_trips(backend: Backend, reason: str | None) -> None:
    stored = await backend.pause("émails-⚡", reason)

    assert stored.reason == reason
    assert (await backend.paused())["émails-⚡"].reason == reason
    assert (await backend.stats()).paused["émails-⚡"].reason == reason


async def test_paused_lists_every_paused_queue_and_stats_agrees(backend: Backend) -> None:
    await backend.enqueue([make_message(queue="b")])
    until = await backend.time() + 3600
    a = await backend.pause("a")  # no message at all
    b = await backend.pause("b", "slow", until)
    await backend.pause("c")
    await backend.resume("c")

    assert await backend.paused() == {"a": a, "b": b}
    stats = await backend.stats()
    assert stats.paused == {"a": a, "b": b}
    assert stats.queues["b"].pending == 1


async def test_a_pause_names_one_queue_exactly(backend: Backend) -> None:
    names = ["q", "q2", "Q", "q:x", "q x"]
    messages = {name: make_message(queue=name) for name in names}
    await backend.enqueue(list(messages.values()))
    await backend.pause("q")

    fetched = await backend.fetch(names, 10, "w")

    assert sorted(d.id for d in fetched) == sorted(messages[n].id for n in names[1:])


async def test_a_pause_is_seen_through_another_connection(
    backend: Backend, second_connection: Backend
) -> None:
    await backend.enqueue([make_message()])
    pause = await backend.pause(QUEUE, "from one process")

    assert await second_connection.paused() == {QUEUE: pause}
    assert await second_connection.fetch([QUEUE], 1, "w") == []
    assert await second_connection.resume(QUEUE) is True
    assert len(await backend.fetch([QUEUE], 1, "w")) == 1


async def test_bad_pauses_are_refused_and_change_nothing(backend: Backend) -> None:
    now = await backend.time()
    with pytest.raises(ValueError, match="name"):
        await backend.pause("")
    with pytest.raises(ValueError, match="name"):
        await backend.resume("")
    with pytest.raises(ValueError, match="not after the backend's now"):
        await backend.pause(QUEUE, "too late", now - 10)
    with pytest.raises(ValueError, match="finite"):
        await backend.pause(QUEUE, None, math.nan)
    with pytest.raises(ValueError, match="finite"):
        await backend.pause(QUEUE, None, math.inf)

    assert await backend.paused() == {}
    held = await backend.pause(QUEUE, "kept")
    with pytest.raises(ValueError, match="not after"):
        await backend.pause(QUEUE, "replaced?", now - 10)
    assert await backend.paused() == {QUEUE: held}


async def test_sweep_keeps_a_live_pause(backend: Backend) -> None:
    pause = await backend.pause(QUEUE, "kept", await backend.time() + 3600)
    await backend.sweep()

    assert await backend.paused() == {QUEUE: pause}


async def test_purge_of_a_paused_queue_keeps_the_pause(backend: Backend) -> None:
    await backend.enqueue(make_messages(2))
    pause = await backend.pause(QUEUE)

    assert await backend.purge(QUEUE) == 2
    assert await backend.paused() == {QUEUE: pause}

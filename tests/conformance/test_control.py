"""Control: cancel, dead letters, requeue, purge, stats, inspect, worker records."""

from __future__ import annotations

import pytest

from pigeon.backends import Backend
from pigeon.codec import decode_message
from pigeon.message import QueueStats, WorkerInfo

from .messages import QUEUE, dead, make_message, make_messages, retry, succeeded
from .polling import clock_passes, eventually


async def test_cancel_settles_pending_scheduled_and_waiting_messages_as_cancelled(
    backend: Backend,
) -> None:
    parent = make_message("elsewhere")
    pending, scheduled = make_message(), make_message(delay=100)
    waiting = make_message(after=parent.id, mode="then")
    await backend.enqueue([parent, pending, scheduled, waiting])
    ids = [pending.id, scheduled.id, waiting.id]

    assert sorted(await backend.cancel(ids)) == sorted(ids)

    results = await backend.results(ids)
    assert {id: r.state for id, r in results.items()} == dict.fromkeys(ids, "cancelled")
    for id in ids:
        info = await backend.inspect(id)
        assert info is not None
        assert info.state == "cancelled"
    assert await backend.fetch([QUEUE], 10, "w") == []
    assert (await backend.stats()).queues.get(QUEUE, QueueStats()) == QueueStats()
    assert await backend.cancel(ids) == []


async def test_cancel_leaves_leased_settled_and_unknown_messages_alone(backend: Backend) -> None:
    leased, settled = make_messages(2)
    await backend.enqueue([leased, settled])
    held, done = await backend.fetch([QUEUE], 2, "w")
    assert await backend.settle([succeeded(done)]) == [True]
    stored = await backend.results([settled.id])

    assert await backend.cancel([leased.id, settled.id, "no-such-id"]) == []

    assert await backend.results([settled.id]) == stored
    info = await backend.inspect(leased.id)
    assert info is not None
    assert info.state == "leased"
    assert await backend.settle([succeeded(held)]) == [True]


async def test_dead_outcome_lists_the_message_as_a_dead_letter_with_its_reason(
    backend: Backend,
) -> None:
    message = make_message()
    await backend.enqueue([message])
    [delivery] = await backend.fetch([QUEUE], 1, "w")
    before = await backend.time()

    assert await backend.settle([dead(delivery, "signature does not match")]) == [True]

    result = (await backend.results([message.id]))[message.id]
    assert result.state == "dead"
    assert result.error is not None
    assert result.error.message == "signature does not match"
    [letter] = await backend.dead_letters()
    assert (letter.id, letter.queue, letter.task) == (message.id, QUEUE, "t")
    assert "signature does not match" in letter.reason
    assert before <= letter.died_at <= await backend.time()
    assert decode_message(letter.body) == message
    assert await backend.dead_letters(queue="elsewhere") == []
    assert [d.id for d in await backend.dead_letters(queue=QUEUE)] == [message.id]
    stats = await backend.stats()
    assert (stats.dead, stats.results, stats.queues[QUEUE].dead) == (1, 1, 1)


async def test_dead_letters_are_listed_oldest_first_up_to_the_limit(backend: Backend) -> None:
    messages = make_messages(4)
    await backend.enqueue(messages)
    for delivery in await backend.fetch([QUEUE], 4, "w"):
        assert await backend.settle([dead(delivery)]) == [True]

    letters = await backend.dead_letters(limit=3)

    assert [d.id for d in letters] == [m.id for m in messages[:3]]
    assert [d.died_at for d in letters] == sorted(d.died_at for d in letters)


async def test_requeue_makes_a_dead_letter_pending_with_a_fresh_attempt_count(
    backend: Backend,
) -> None:
    message = make_message()
    await backend.enqueue([message])
    [first] = await backend.fetch([QUEUE], 1, "w")
    assert await backend.settle([retry(first)]) == [True]
    [second] = await backend.fetch([QUEUE], 1, "w")
    assert await backend.settle([dead(second)]) == [True]

    assert await backend.requeue([message.id, "no-such-id"]) == 1

    assert await backend.results([message.id]) == {}
    assert await backend.dead_letters() == []
    info = await backend.inspect(message.id)
    assert info is not None
    assert (info.state, info.attempt, info.result) == ("pending", 0, None)
    [again] = await backend.fetch([QUEUE], 1, "w")
    assert (again.id, again.attempt, again.failures) == (message.id, 1, 0)
    assert await backend.settle([succeeded(again, "second life")]) == [True]
    assert (await backend.results([message.id]))[message.id].state == "succeeded"


async def test_requeued_poison_message_is_delivered_again(backend: Backend) -> None:
    message = make_message(lease=0.1, max_deliveries=1)
    await backend.enqueue([message])
    assert len(await backend.fetch([QUEUE], 1, "w")) == 1

    async def dead_lettered() -> bool:
        assert await backend.fetch([QUEUE], 1, "w") == []
        return bool(await backend.dead_letters())

    await eventually(dead_lettered, "the poison message to be dead-lettered")
    assert await backend.requeue([message.id]) == 1

    [again] = await backend.fetch([QUEUE], 1, "w")
    assert (again.id, again.attempt) == (message.id, 1)


async def test_purge_dead_deletes_the_named_dead_letters_or_all(backend: Backend) -> None:
    messages = make_messages(3)
    await backend.enqueue(messages)
    deliveries = await backend.fetch([QUEUE], 3, "w")
    assert await backend.settle([dead(d) for d in deliveries]) == [True] * 3

    assert await backend.purge_dead([messages[0].id, "no-such-id"]) == 1
    assert [d.id for d in await backend.dead_letters()] == [m.id for m in messages[1:]]
    assert await backend.purge_dead() == 2
    assert await backend.dead_letters() == []
    assert await backend.requeue([m.id for m in messages]) == 0


async def test_purge_deletes_a_queues_waiting_scheduled_and_pending_messages_only(
    backend: Backend,
) -> None:
    parent = make_message("elsewhere")
    leased = make_message()
    doomed = [
        make_message(),
        make_message(),
        make_message(delay=100),
        make_message(after=parent.id, mode="then"),
    ]
    await backend.enqueue([parent, leased, *doomed])
    [held] = await backend.fetch([QUEUE], 1, "w")
    assert held.id == leased.id

    assert await backend.purge(QUEUE) == 4

    stats = await backend.stats()
    assert stats.queues[QUEUE] == QueueStats(leased=1)
    assert stats.queues["elsewhere"] == QueueStats(pending=1)
    for message in doomed:
        assert await backend.inspect(message.id) is None
    assert await backend.settle([succeeded(held)]) == [True]
    assert await backend.purge("no-such-queue") == 0


async def test_stats_counts_messages_per_queue_and_state(backend: Backend) -> None:
    parent = make_message("parents")
    await backend.enqueue(
        [
            parent,
            make_message(after=parent.id, mode="then"),
            *make_messages(2, delay=100),
            *make_messages(4),
            *make_messages(2, "other"),
        ]
    )
    leased = await backend.fetch([QUEUE], 2, "w")
    settled, died = await backend.fetch(["other"], 2, "w")
    assert await backend.settle([succeeded(settled), dead(died)]) == [True, True]

    stats = await backend.stats()

    assert stats.queues[QUEUE] == QueueStats(waiting=1, scheduled=2, pending=2, leased=2)
    assert stats.queues["other"] == QueueStats(dead=1)
    assert stats.queues["parents"] == QueueStats(pending=1)
    assert (stats.results, stats.dead, stats.workers) == (2, 1, [])
    assert len(leased) == 2


async def test_heartbeat_lists_a_worker_in_stats_until_it_retires(backend: Backend) -> None:
    started = await backend.time()
    info = WorkerInfo("w1", "host-a", 4242, ["q", "emails"], 8, running=1, started_at=started)
    other = WorkerInfo("w2", "host-b", 7, ["q"], 2)

    await backend.heartbeat(info, ttl=30)
    await backend.heartbeat(other, ttl=30)
    again = WorkerInfo("w1", "host-a", 4242, ["q", "emails"], 8, 3, 5, fetch_age=0.25, work_age=9.5)
    await backend.heartbeat(again, ttl=30)

    workers = {w.id: w for w in (await backend.stats()).workers}
    assert set(workers) == {"w1", "w2"}
    w1 = workers["w1"]
    assert (w1.host, w1.pid, w1.queues, w1.concurrency) == ("host-a", 4242, ["q", "emails"], 8)
    assert (w1.running, w1.done) == (3, 5)
    assert (w1.fetch_age, w1.work_age) == (0.25, 9.5)  # ages kept as sent
    assert (workers["w2"].fetch_age, workers["w2"].work_age) == (None, None)

    await backend.retire("w1")
    assert [w.id for w in (await backend.stats()).workers] == ["w2"]


async def test_sweep_removes_worker_records_past_their_ttl(backend: Backend) -> None:
    await backend.heartbeat(WorkerInfo("gone", "h", 1, ["q"], 1), ttl=0.1)
    await backend.heartbeat(WorkerInfo("alive", "h", 2, ["q"], 1), ttl=30)
    beat_by = await backend.time()

    await clock_passes(backend, beat_by + 0.1)

    assert await backend.sweep() >= 1
    assert [w.id for w in (await backend.stats()).workers] == ["alive"]


async def test_inspect_of_a_pending_message(backend: Backend) -> None:
    message = make_message(priority=3)
    await backend.enqueue([message])

    info = await backend.inspect(message.id)

    assert info is not None
    assert (info.id, info.state, info.queue, info.task) == (message.id, "pending", QUEUE, "t")
    assert (info.attempt, info.failures, info.worker, info.lease_until) == (0, 0, None, None)
    assert info.body is not None
    assert decode_message(info.body) == message


async def test_inspect_of_a_leased_message(backend: Backend) -> None:
    message = make_message(lease=60)
    await backend.enqueue([message])
    before = await backend.time()
    await backend.fetch([QUEUE], 1, "worker-7")
    after = await backend.time()

    info = await backend.inspect(message.id)

    assert info is not None
    assert (info.state, info.attempt, info.worker) == ("leased", 1, "worker-7")
    assert info.lease_until is not None
    assert before + 60 <= info.lease_until <= after + 60


async def test_inspect_of_a_settled_message(backend: Backend) -> None:
    message = make_message()
    await backend.enqueue([message])
    [delivery] = await backend.fetch([QUEUE], 1, "w")
    assert await backend.settle([succeeded(delivery, 42)]) == [True]

    info = await backend.inspect(message.id)

    assert info is not None
    assert info.state == "succeeded"
    assert info.result == (await backend.results([message.id]))[message.id]


async def test_inspect_of_a_dead_message(backend: Backend) -> None:
    message = make_message()
    await backend.enqueue([message])
    [delivery] = await backend.fetch([QUEUE], 1, "w")
    assert await backend.settle([dead(delivery, "unknown task 't'")]) == [True]

    info = await backend.inspect(message.id)

    assert info is not None
    assert (info.state, info.queue, info.task) == ("dead", QUEUE, "t")
    assert info.reason is not None
    assert "unknown task 't'" in info.reason
    assert info.result is not None
    assert info.result.state == "dead"


@pytest.mark.parametrize("id", ["no-such-id", "00000000-0000-7000-8000-000000000000"])
async def test_inspect_of_an_unknown_id_is_none(backend: Backend, id: str) -> None:
    await backend.enqueue([make_message()])

    assert await backend.inspect(id) is None

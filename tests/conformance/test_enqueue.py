"""Enqueue: durable storage, one id per input, idempotency keys, initial states."""

from __future__ import annotations

from pigeon.backends import Backend
from pigeon.codec import decode_message
from pigeon.message import QueueStats

from .messages import QUEUE, dead, make_message, make_messages, succeeded, value
from .polling import clock_passes


async def test_enqueue_of_a_batch_returns_each_messages_own_id_in_order(backend: Backend) -> None:
    messages = make_messages(200)
    assert await backend.enqueue(messages) == [m.id for m in messages]
    assert (await backend.stats()).queues[QUEUE] == QueueStats(pending=200)


async def test_enqueued_message_is_pending_and_inspectable(backend: Backend) -> None:
    message = make_message()
    await backend.enqueue([message])

    info = await backend.inspect(message.id)

    assert info is not None
    assert (info.state, info.queue, info.task) == ("pending", QUEUE, "t")
    assert (info.attempt, info.failures, info.result) == (0, 0, None)
    assert info.body is not None
    assert decode_message(info.body).id == message.id


async def test_reenqueueing_the_same_id_stores_it_once(backend: Backend) -> None:
    message = make_message()
    assert await backend.enqueue([message]) == [message.id]
    assert await backend.enqueue([message]) == [message.id]
    assert await backend.enqueue([message, message]) == [message.id, message.id]

    assert (await backend.stats()).queues[QUEUE] == QueueStats(pending=1)
    assert [d.id for d in await backend.fetch([QUEUE], 10, "w")] == [message.id]


async def test_ids_made_before_the_ones_stored_are_still_stored_once(backend: Backend) -> None:
    # Ids are time-ordered: these are lower than every id stored before them (the Redis
    # backend skips its lookups only for a batch of ids above every id ever stored).
    older, newer = make_messages(300), make_messages(300)
    assert await backend.enqueue(newer) == [m.id for m in newer]
    assert await backend.enqueue(older) == [m.id for m in older]
    assert len(await backend.fetch([QUEUE], 600, "w")) == 600  # leased: a second store shows
    again = [*older[::2], *newer[1::2], *make_messages(2)]

    assert await backend.enqueue(again) == [m.id for m in again]

    assert (await backend.stats()).queues[QUEUE] == QueueStats(pending=2, leased=600)


async def test_a_new_id_twice_in_one_batch_is_stored_once_as_first_given(
    backend: Backend,
) -> None:
    stored_before = make_message()
    await backend.enqueue([stored_before])
    first, other = make_messages(2, kwargs=value({"n": 1}))
    twin = make_message(id=first.id, kwargs=value({"n": 2}))

    assert await backend.enqueue([first, other, twin]) == [first.id, other.id, first.id]

    assert (await backend.stats()).queues[QUEUE] == QueueStats(pending=3)
    held = {d.id: d for d in await backend.fetch([QUEUE], 10, "w")}
    assert held.keys() == {stored_before.id, first.id, other.id}
    assert bytes(decode_message(held[first.id].body).kwargs) == b'{"n":1}'


async def test_ids_are_compared_by_their_bytes_whatever_the_servers_locale(
    backend: Backend,
) -> None:
    # "é" (UTF-8 c3 a9) is above "z" (7a) byte by byte, and below it in most locales' order.
    plain, accented = make_message(id="z-message"), make_message(id="\u00e9-message")
    for batch in ([plain], [accented], [plain], [accented, plain]):
        assert await backend.enqueue(batch) == [m.id for m in batch]

    assert (await backend.stats()).queues[QUEUE] == QueueStats(pending=2)


async def test_the_ids_of_outcomes_and_dead_letters_are_not_stored_again(
    backend: Backend,
) -> None:
    kept, dead_one = make_messages(2)
    await backend.enqueue([kept, dead_one])
    by_id = {d.id: d for d in await backend.fetch([QUEUE], 2, "w")}
    await backend.settle([succeeded(by_id[kept.id]), dead(by_id[dead_one.id])])
    newer = make_messages(3)  # above both ids

    for batch in ([kept], [dead_one], [kept, *newer], [newer[0], dead_one]):
        assert await backend.enqueue(batch) == [m.id for m in batch]

    assert (await backend.stats()).queues[QUEUE] == QueueStats(pending=3, dead=1)
    assert {d.id for d in await backend.fetch([QUEUE], 10, "w")} == {m.id for m in newer}


async def test_a_big_batch_stores_only_the_ids_not_stored_before(backend: Backend) -> None:
    # Over several of each backend's enqueue chunks, with ids already stored as a message, an
    # outcome and a dead letter, and one id twice, in different chunks.
    pending, kept, dead_one = make_messages(3)
    await backend.enqueue([kept, dead_one])
    first, second = await backend.fetch([QUEUE], 2, "w")
    by_id = {first.id: first, second.id: second}
    await backend.settle([succeeded(by_id[kept.id]), dead(by_id[dead_one.id])])
    await backend.enqueue([pending])
    fresh = make_messages(2_500)
    batch = [*fresh[:700], pending, *fresh[700:1300], kept, fresh[5], *fresh[1300:2100]]
    batch += [dead_one, *fresh[2100:]]

    assert await backend.enqueue(batch) == [m.id for m in batch]

    assert (await backend.stats()).queues[QUEUE] == QueueStats(pending=2_501, dead=1)
    assert set(await backend.results([kept.id, dead_one.id])) == {kept.id, dead_one.id}
    assert [d.id for d in await backend.dead_letters(QUEUE)] == [dead_one.id]


async def test_second_enqueue_with_the_same_key_returns_the_first_id_and_stores_nothing(
    backend: Backend,
) -> None:
    first, second = make_message(key="k"), make_message(key="k")
    assert await backend.enqueue([first]) == [first.id]

    assert await backend.enqueue([second]) == [first.id]

    assert await backend.inspect(second.id) is None
    assert (await backend.stats()).queues[QUEUE] == QueueStats(pending=1)


async def test_same_key_twice_in_one_batch_stores_only_the_first(backend: Backend) -> None:
    first, second, other = make_message(key="k"), make_message(key="k"), make_message(key="x")

    ids = await backend.enqueue([first, second, other])

    assert ids == [first.id, first.id, other.id]
    assert await backend.inspect(second.id) is None
    assert (await backend.stats()).queues[QUEUE] == QueueStats(pending=2)


async def test_key_is_still_held_after_its_message_settled(backend: Backend) -> None:
    first = make_message(key="k")
    await backend.enqueue([first])
    [delivery] = await backend.fetch([QUEUE], 1, "w")
    assert await backend.settle([succeeded(delivery)]) == [True]

    second = make_message(key="k")
    assert await backend.enqueue([second]) == [first.id]
    assert await backend.inspect(second.id) is None
    assert await backend.fetch([QUEUE], 1, "w") == []


async def test_key_is_free_again_once_the_first_messages_result_ttl_ran_out(
    backend: Backend,
) -> None:
    first = make_message(key="k", result_ttl=0.3)
    await backend.enqueue([first])
    enqueued_by = await backend.time()

    await clock_passes(backend, enqueued_by + 0.3 + 0.05)
    second = make_message(key="k")

    assert await backend.enqueue([second]) == [second.id]
    info = await backend.inspect(second.id)
    assert info is not None
    assert info.state == "pending"


async def test_message_after_an_unsettled_message_is_waiting(backend: Backend) -> None:
    parent = make_message()
    child = make_message(after=parent.id, mode="then")
    await backend.enqueue([child, parent])  # the parent comes later in the batch

    info = await backend.inspect(child.id)
    assert info is not None
    assert info.state == "waiting"
    assert (await backend.stats()).queues[QUEUE] == QueueStats(waiting=1, pending=1)


async def test_delayed_message_is_scheduled(backend: Backend) -> None:
    now = await backend.time()
    by_delay, by_run_at = make_message(delay=100), make_message(run_at=now + 100)
    await backend.enqueue([by_delay, by_run_at])

    for message in (by_delay, by_run_at):
        info = await backend.inspect(message.id)
        assert info is not None
        assert info.state == "scheduled"
        assert info.run_at is not None
        assert now + 99 < info.run_at < now + 101
    assert (await backend.stats()).queues[QUEUE] == QueueStats(scheduled=2)


async def test_run_at_in_the_past_is_pending(backend: Backend) -> None:
    message = make_message(run_at=await backend.time() - 10)
    await backend.enqueue([message])

    [delivery] = await backend.fetch([QUEUE], 1, "w")
    assert delivery.id == message.id

"""What only the NATS backend has: records at their subjects with server-side TTLs, fencing by
compare-and-set on the record's sequence, bounded retries when the view was stale, the
server's clock from message timestamps, and waits pushed by the view's consumer. The whole
contract is the conformance suite's (``PIGEON_TEST_BACKENDS=nats``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import msgspec
import pytest

from pigeon.backends.nats import NatsBackend
from pigeon.backends.nats import records as r
from pigeon.backends.nats.batch import Write
from pigeon.backends.nats.writes import CAS_ATTEMPTS, attempt
from pigeon.errors import BackendError
from pigeon.message import JoinSpec, Lease, Message, Outcome, WorkerInfo, new_id

QUEUE = "q"


def message(**fields: object) -> Message:
    return Message(**{"id": new_id(), "task": "t", "queue": QUEUE, **fields})  # type: ignore[arg-type]


def ok(id: str, attempt: int, result_ttl: float = 86400.0) -> Outcome:
    return Outcome(id, attempt, "succeeded", value=msgspec.Raw(b'"ok"'), result_ttl=result_ttl)


@pytest.fixture
async def backend(nats_url: str) -> AsyncIterator[NatsBackend]:
    opened = NatsBackend(nats_url)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def other(nats_url: str, backend: NatsBackend) -> AsyncIterator[NatsBackend]:
    """A second backend object on the same stream, as another process opens it."""
    opened = NatsBackend(nats_url)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


async def test_a_settled_messages_tombstone_keeps_its_outcome_for_its_ttl_rounded_up(
    backend: NatsBackend,
) -> None:
    m = message(key="a.b*>ü", result_ttl=1.5)
    await backend.enqueue([m])
    [d] = await backend.fetch([QUEUE], 1, "w")
    assert await backend.settle([ok(d.id, d.attempt, result_ttl=1.5)]) == [True]

    js, stream = backend.js, backend.subjects.stream
    key = await js.get_msg(stream, subject=backend.subjects.key("a.b*>ü"), direct=True)
    assert key.data is not None
    assert r.KEY.decode(key.data).id == m.id
    tomb = await js.get_msg(stream, subject=backend.subjects.message(m.id), direct=True)
    assert tomb.headers is not None
    assert tomb.headers["Nats-TTL"] == "2"  # the outcome's 1.5 s, in whole seconds
    assert tomb.data is not None
    record = r.RECORD.decode(tomb.data)
    assert record.state == "done"
    kept = r.kept_of(record)
    assert kept is not None
    assert kept.result.state == "succeeded"


def test_any_name_is_one_subject_token_and_back() -> None:
    for name in ("plain-name_1", "a.b", "*", ">", "with space", "ünï", "~x", ""):
        tok = r.token(name) if name else "~"
        assert not set(tok) & set(". *>")
        assert r.untoken(tok) == name


async def test_a_stale_workers_settle_is_refused_once_another_took_the_lease_over(
    backend: NatsBackend, other: NatsBackend
) -> None:
    await backend.enqueue([message(lease=0.3)])
    [first] = await backend.fetch([QUEUE], 1, "stale")
    await asyncio.sleep(0.4)  # the lease runs out on the server's clock
    [second] = await other.fetch([QUEUE], 1, "fresh", wait=2.0)
    assert (second.id, second.attempt) == (first.id, first.attempt + 1)

    assert await backend.settle([ok(first.id, first.attempt)]) == [False]
    assert await backend.extend([Lease(first.id, first.attempt)]) == {first.id}
    assert await other.settle([ok(second.id, second.attempt)]) == [True]
    assert (await backend.results([first.id]))[first.id].state == "succeeded"


async def test_a_settle_from_a_stale_view_is_retried_on_the_fresh_record(
    backend: NatsBackend,
) -> None:
    await backend.enqueue([message()])
    [d] = await backend.fetch([QUEUE], 1, "w")
    subject = backend.subjects.message(d.id)
    backend.view.seen[subject] -= 1  # as if a replica had answered with an older record

    assert await backend.settle([ok(d.id, d.attempt)]) == [True]
    assert d.id in await backend.results([d.id])


async def test_compare_and_set_retries_are_bounded(backend: NatsBackend) -> None:
    subject = backend.subjects.named("l", "never")
    calls = 0

    def step() -> list[Write]:
        nonlocal calls
        calls += 1
        return [Write(subject, b"x", 987_654)]  # a sequence the subject never reaches

    with pytest.raises(BackendError, match="conflicted"):
        await attempt(backend.nc, backend.view, backend.js, step)
    assert calls == CAS_ATTEMPTS


async def test_backend_time_is_the_servers_whatever_the_host_clock_says(
    backend: NatsBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = time.time()
    monkeypatch.setattr(time, "time", lambda: real + 3600)
    await backend._fresh()  # a new sample, taken under the skewed host clock

    assert abs(await backend.time() - real) < 5


async def test_wait_is_woken_by_a_settle_elsewhere_without_polling(
    backend: NatsBackend, other: NatsBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = message()
    await backend.enqueue([m])
    [d] = await other.fetch([QUEUE], 1, "w")
    barriers = 0
    fresh = backend._fresh

    async def counted() -> float:
        nonlocal barriers
        barriers += 1
        return await fresh()

    monkeypatch.setattr(backend, "_fresh", counted)
    waiter = asyncio.ensure_future(backend.wait([m.id], timeout=10.0))
    await asyncio.sleep(0.3)
    assert not waiter.done()
    begun = time.monotonic()
    assert await other.settle([ok(d.id, d.attempt)]) == [True]

    found = await asyncio.wait_for(waiter, 5.0)
    assert m.id in found
    assert time.monotonic() - begun < 1.0
    assert barriers <= 1, "the wait read once, then was pushed"


async def test_concurrent_fetches_from_two_objects_never_share_a_message(
    backend: NatsBackend, other: NatsBackend
) -> None:
    sent = [message() for _ in range(60)]
    await backend.enqueue(sent)

    async def drain(b: NatsBackend) -> list[str]:
        got: list[str] = []
        while batch := await b.fetch([QUEUE], 7, "w"):
            got += [x.id for x in batch]
        return got

    a, b = await asyncio.gather(drain(backend), drain(other))
    assert not set(a) & set(b)
    assert sorted(a + b) == sorted(m.id for m in sent)


async def test_a_parent_with_more_followers_than_one_batch_holds_releases_them_all(
    backend: NatsBackend,
) -> None:
    parent = message()
    children = [message(after=parent.id, mode="then") for _ in range(1_100)]
    await backend.enqueue([parent, *children])
    [d] = await backend.fetch([QUEUE], 1, "w")
    assert d.id == parent.id

    assert await backend.settle([ok(d.id, d.attempt)]) == [True]

    assert (await backend.stats()).queues[QUEUE].pending == len(children)
    assert not backend.view.unreleased


async def test_releases_a_settler_left_behind_are_finished_by_the_next_fetch(
    backend: NatsBackend, other: NatsBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    parent = message()
    children = [message(after=parent.id, mode="then") for _ in range(1_050)]
    await backend.enqueue([parent, *children])
    [d] = await backend.fetch([QUEUE], 1, "w")

    async def dies(id: str) -> None:  # the settler dies after its first batch
        return None

    monkeypatch.setattr(backend, "_release_rest", dies)
    assert await backend.settle([ok(d.id, d.attempt)]) == [True]
    assert (await other.stats()).queues[QUEUE].pending == 998
    monkeypatch.setattr("pigeon.backends.nats.core.RESUME_AFTER", 0.0)

    await other.fetch([QUEUE], 1, "w")

    stats = (await other.stats()).queues[QUEUE]
    assert stats.pending + stats.leased == len(children)


async def test_a_join_of_more_members_than_one_batch_holds_fires_once_all_settle(
    backend: NatsBackend,
) -> None:
    members = [message() for _ in range(1_100)]
    await backend.enqueue(members)
    done_early = await backend.fetch([QUEUE], 1, "w")
    join = message(queue="joins", join=JoinSpec([m.id for m in members], "all"))
    await backend.enqueue([join])
    assert backend.view.records[join.id].linking == []
    assert await backend.settle([ok(d.id, d.attempt) for d in done_early]) == [True]

    while batch := await backend.fetch([QUEUE], 200, "w"):
        assert all(await backend.settle([ok(d.id, d.attempt) for d in batch]))

    [fired] = await backend.fetch(["joins"], 1, "w", wait=2.0)
    assert fired.id == join.id
    counts = backend.view.records[join.id].join
    assert counts is not None
    assert (counts.settled, counts.succeeded) == (1_100, 1_100)


async def test_sweep_lets_the_view_forget_what_is_gone(
    backend: NatsBackend, other: NatsBackend
) -> None:
    info = WorkerInfo("w1", "host", 1, [QUEUE], 1)
    await backend.heartbeat(info, 30.0)
    await backend.retire("w1")
    await other.time()  # another object's tick
    for m in [message() for _ in range(3)]:
        await backend.enqueue([m])
        await backend.purge(QUEUE)

    await backend.sweep()

    kinds = [backend.subjects.split(s) for s in backend.view.seen]
    assert ("w", "w1") not in kinds
    assert [k for k in kinds if k is not None and k[0] in "mt"] == [
        ("t", backend.view.tick_subject.rsplit(".", 1)[1])
    ]
    assert not backend.view.scheduled

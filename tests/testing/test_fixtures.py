"""pigeon.testing as a user meets it: send, drain, assert on what ran and what was sent."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import pytest

import pigeon
from pigeon.testing import InProcessWorker, ManualClock
from tests.testing import shop


async def test_drain_runs_what_was_sent_and_returns_what_ran(
    pigeon_worker: InProcessWorker,
) -> None:
    p = shop.add.send(2, 3)
    ran = await pigeon_worker.drain()
    assert [(r.task, r.state, r.value) for r in ran] == [("shop.add", "succeeded", 5)]
    assert await p == 5
    assert await pigeon_worker.drain() == []  # nothing left


async def test_sent_shows_arguments_as_the_worker_decodes_them(
    pigeon_worker: InProcessWorker,
) -> None:
    placed = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
    p = shop.total.send(shop.Order(7, placed, ["a", "b"]), rate=0.5)
    await p.sent()
    [sent] = pigeon_worker.sent(shop.total)
    # a dataclass again (not a dict), with its datetime
    assert sent.arguments == {"order": shop.Order(7, placed, ["a", "b"]), "rate": 0.5}
    assert pigeon_worker.sent(shop.add) == []
    assert pigeon_worker.assert_sent(shop.total, shop.Order(7, placed, ["a", "b"]), rate=0.5)
    with pytest.raises(AssertionError, match="was not sent with"):
        pigeon_worker.assert_sent(shop.total, shop.Order(8, placed, []))
    await pigeon_worker.drain()
    assert await p == 10.0


async def test_follow_ups_and_joins_run_in_one_drain(pigeon_worker: InProcessWorker) -> None:
    doubled = shop.add.send(1, 2).then(shop.double)
    joined = pigeon.Promise.all([shop.add.send(1, 1), shop.add.send(2, 2)]).then(shop.summed)
    recovered = shop.broken.send("no stock").catch(shop.recover)
    ran = await pigeon_worker.drain()
    assert await doubled == 6
    assert await joined == 6
    assert await recovered == "recovered from ValueError"
    assert sorted(r.task for r in ran if r.task != "pigeon.join").count("shop.add") == 3


async def test_a_retry_after_a_minute_of_backoff_runs_when_the_clock_is_advanced(
    pigeon_worker: InProcessWorker, pigeon_clock: ManualClock
) -> None:
    key = uuid.uuid4().hex
    p = shop.slow_flaky.send(key)
    assert [r.state for r in await pigeon_worker.drain()] == ["retry"]
    began = time.monotonic()
    ran = await pigeon_worker.advance(95)  # backoff 60 s +-50%
    assert [(r.state, r.attempt) for r in ran] == [("succeeded", 2)]
    assert await p == 2
    assert time.monotonic() - began < 2  # a minute and a half in milliseconds


async def test_a_failure_without_retries_left_is_dead_lettered(
    pigeon_worker: InProcessWorker,
) -> None:
    p = shop.broken.send("out of stock")
    [ran] = await pigeon_worker.drain()
    assert ran.state == "dead"
    assert ran.error is not None
    assert ran.error.type == "ValueError"
    [letter] = await pigeon_worker.backend.dead_letters()
    assert letter.id == p.id
    with pytest.raises(pigeon.TaskError, match="out of stock"):
        await p


async def test_delays_and_expiries_follow_the_clock(
    pigeon_worker: InProcessWorker, pigeon_clock: ManualClock
) -> None:
    later = shop.add.options(delay=3600).send(1, 1)
    stale = shop.add.options(delay=20, expires=10).send(2, 2)
    assert await pigeon_worker.drain() == []
    ran = await pigeon_worker.advance(3600)
    # The expired one never reaches a worker: the backend dead-letters it when it is due.
    assert [(r.id, r.state) for r in ran] == [(later.id, "succeeded")]
    assert (await pigeon_worker.backend.results([stale.id]))[stale.id].state == "dead"
    [letter] = await pigeon_worker.backend.dead_letters()
    assert (letter.id, "expired" in letter.reason) == (stale.id, True)


async def test_a_cancelled_message_never_runs(pigeon_worker: InProcessWorker) -> None:
    p = shop.add.options(delay=60).send(1, 2)
    await p.sent()
    await p.cancel()
    assert await pigeon_worker.advance(120) == []
    assert (await pigeon_worker.backend.results([p.id]))[p.id].state == "cancelled"


async def test_arguments_that_do_not_match_the_hints_are_refused_at_send(
    pigeon_worker: InProcessWorker,
) -> None:
    with pytest.raises(pigeon.EncodeError, match="invalid arguments"):
        shop.add.send("two", 3)  # type: ignore[arg-type]
    assert pigeon_worker.sent() == []


async def test_a_payload_over_the_limit_is_refused_at_send(
    pigeon_worker: InProcessWorker,
) -> None:
    with pytest.raises(pigeon.PigeonError, match="max_payload"):
        shop.summed.send(list(range(pigeon_worker.app.max_payload)))
    assert pigeon_worker.sent() == []


async def test_a_limited_task_runs_one_at_a_time_and_all_run(
    pigeon_worker: InProcessWorker,
) -> None:
    promises = [shop.limited.send(n) for n in range(5)]
    first = await pigeon_worker.drain()
    # The others found no free place: deferred (a fraction of a second, on the clock).
    assert [r.state for r in first] == ["succeeded"]
    rest = await pigeon_worker.advance(5)
    assert [r.state for r in rest] == ["succeeded"] * 4
    assert [await p for p in promises] == list(range(5))


def test_a_sync_test_runs_the_worker_until_idle(pigeon_worker: InProcessWorker) -> None:
    p = shop.add.send(20, 22)
    ran = pigeon_worker.run_until_idle()
    assert [r.value for r in ran] == [42]
    assert p.result(timeout=5) == 42
    key = uuid.uuid4().hex
    q = shop.slow_flaky.send(key)
    pigeon_worker.run_until_idle()
    pigeon_worker.advance_sync(95)
    assert q.result(timeout=5) == 2

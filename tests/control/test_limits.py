"""Rate and concurrency limits, applied by in-process workers through each backend."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

import pytest

import pigeon
from pigeon.errors import ConfigError
from pigeon.limits import parse_rate
from pigeon.message import Event

from .conftest import StartWorker


def most_in_any_window(starts: list[float], window: float) -> int:
    """The largest number of ``starts`` within any ``window`` seconds."""
    starts = sorted(starts)
    best, lo = 0, 0
    for hi, t in enumerate(starts):
        while t - starts[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


async def test_a_rate_spaces_starts_across_workers_and_fails_nothing(
    app: pigeon.App, start_worker: StartWorker
) -> None:
    starts: list[float] = []

    @app.task(rate="20/s")
    async def limited(n: int) -> int:
        starts.append(time.monotonic())
        return n

    await start_worker(concurrency=10)
    await start_worker(concurrency=10)
    promises = [limited.send(n) for n in range(30)]
    assert await asyncio.wait_for(pigeon.Promise.all(promises), 30) == list(range(30))

    assert most_in_any_window(starts, 1.0) <= 21  # 20/s, and the first one at once
    assert max(starts) - min(starts) >= 29 / 20 - 0.1  # 30 starts 50 ms apart


async def test_a_rate_per_key_gives_each_key_its_own_bucket(
    app: pigeon.App, start_worker: StartWorker
) -> None:
    starts: dict[str, list[float]] = defaultdict(list)

    @app.task(rate="10/s", rate_key=lambda user, **_: user)
    async def per_user(user: str, n: int) -> None:
        starts[user].append(time.monotonic())

    await start_worker(concurrency=20)
    begun = time.monotonic()
    promises = [per_user.send(user, n) for n in range(10) for user in ("ann", "bob")]
    await asyncio.wait_for(pigeon.Promise.all(promises), 30)
    elapsed = time.monotonic() - begun

    for user in ("ann", "bob"):
        assert len(starts[user]) == 10
        assert most_in_any_window(starts[user], 1.0) <= 11
        assert max(starts[user]) - min(starts[user]) >= 0.9 - 0.05
    assert elapsed < 1.9  # the two keys ran side by side, not one after the other


async def test_a_concurrency_limit_holds_across_workers(
    app: pigeon.App, start_worker: StartWorker
) -> None:
    running = 0
    most = 0

    @app.task(limit=2)
    async def narrow(n: int) -> int:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.05)
        running -= 1
        return n

    await start_worker(concurrency=8)
    await start_worker(concurrency=8)
    promises = [narrow.send(n) for n in range(16)]
    assert await asyncio.wait_for(pigeon.Promise.all(promises), 30) == list(range(16))
    assert most == 2


async def test_a_message_deferred_by_its_limit_is_released_with_its_task_and_queue(
    app: pigeon.App, start_worker: StartWorker
) -> None:
    gate = asyncio.Event()

    @app.task(limit=1, queue="narrow")
    async def one_at_a_time(n: int) -> int:
        await gate.wait()
        return n

    backend = await app.open()
    cursor, _ = await backend.read_events(None, 1000, 0.0)  # from now on
    worker = await start_worker(concurrency=4, queues=["narrow"])
    promises = [one_at_a_time.send(n) for n in range(3)]
    released: list[Event] = []
    async with asyncio.timeout(10):  # the two that find no free place are given back
        while not released:
            cursor, events = await backend.read_events(cursor, 1000, 0.5)
            released += [e for e in events if e.kind == "released"]
    gate.set()
    assert await asyncio.wait_for(pigeon.Promise.all(promises), 10) == [0, 1, 2]
    event = released[0]
    assert event.id in {p.id for p in promises}
    assert (event.task, event.queue, event.worker) == (one_at_a_time.name, "narrow", worker.id)
    assert event.attempt >= 1


async def test_a_concurrency_limit_per_key(app: pigeon.App, start_worker: StartWorker) -> None:
    running: dict[str, int] = defaultdict(int)
    most: dict[str, int] = defaultdict(int)
    together = 0

    @app.task(limit=1, limit_key=lambda account, **_: account)
    async def per_account(account: str) -> None:
        nonlocal together
        running[account] += 1
        most[account] = max(most[account], running[account])
        together = max(together, sum(running.values()))
        await asyncio.sleep(0.05)
        running[account] -= 1

    await start_worker(concurrency=8)
    promises = [per_account.send(a) for _ in range(5) for a in ("a", "b")]
    await asyncio.wait_for(pigeon.Promise.all(promises), 30)
    assert most == {"a": 1, "b": 1}
    assert together == 2  # different keys ran at once


async def test_a_failing_rate_key_fails_the_message_with_its_error(
    app: pigeon.App, start_worker: StartWorker
) -> None:
    def key(n: int) -> str:
        raise LookupError(f"no account for {n}")

    @app.task(rate="100/s", rate_key=key)
    async def keyed(n: int) -> None:
        return None

    await start_worker()
    with pytest.raises(pigeon.TaskError, match="no account for 7"):
        await asyncio.wait_for(keyed.send(7), 10)


@pytest.mark.parametrize(
    ("rate", "interval"),
    [("100/s", 0.01), ("10/m", 6.0), ("1000/h", 3.6), ("2/d", 43200.0), ("3/10s", 10 / 3)],
)
def test_rates_are_parsed(rate: str, interval: float) -> None:
    assert parse_rate(rate) == pytest.approx(interval)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"rate": "fast"}, "COUNT/PERIOD"),
        ({"rate": "0/s"}, "more than 0"),
        ({"rate": "10/s", "burst": 0}, "burst must be an integer >= 1"),
        ({"limit": 0}, "limit must be an integer >= 1"),
        ({"limit_key": lambda: "k"}, "limit_key needs limit="),
        ({"rate_key": lambda: "k"}, "rate_key needs rate="),
        ({"limit": 2, "limit_key": "account"}, "limit_key must be callable"),
    ],
)
def test_bad_limits_are_refused_at_registration(options: dict[str, object], message: str) -> None:
    app = pigeon.App("memory://")
    with pytest.raises(ConfigError, match=message):
        app.task(**options)(lambda: None)  # type: ignore[call-overload]


async def test_a_message_cancelled_while_it_waits_for_its_rate_never_runs(
    app: pigeon.App, start_worker: StartWorker
) -> None:
    ran: list[int] = []

    @app.task(rate="1/s")
    async def slow_lane(n: int) -> None:
        ran.append(n)

    await start_worker()
    first = slow_lane.send(1)
    await asyncio.wait_for(first, 5)
    second = slow_lane.send(2)  # its slot is about a second away: it waits on the worker
    await asyncio.sleep(0.2)
    assert await second.cancel() is True
    with pytest.raises(pigeon.Cancelled):
        await asyncio.wait_for(second, 5)
    assert ran == [1]

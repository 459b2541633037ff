"""Periodic tasks: when schedules tick, how ticks become keyed messages, and how schedulers
take turns leading, catch up and never send a tick twice."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import pigeon
from pigeon.backends import Backend
from pigeon.codec import decode_message
from pigeon.context import TICK_HEADER
from pigeon.scheduler import KEY_MARGIN, Scheduler, Timing, lock_name

from .conftest import StartWorker
from .support import eventually


def scheduler_of(app: pigeon.App, backend: Backend, owner: str, **timing: float) -> Scheduler:
    """The scheduler of ``app``'s schedules, as a worker makes it."""
    return Scheduler(list(app.schedules.values()), app.enqueue, backend, owner, **timing)


def epoch(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


# when schedules tick ------------------------------------------------------------------------


def test_every_ticks_at_whole_multiples_of_the_interval_since_the_epoch() -> None:
    timing = Timing(every=timedelta(seconds=5))

    assert timing.ticks(1000.0, 1020.0) == [1005.0, 1010.0, 1015.0, 1020.0]
    assert timing.ticks(1001.5, 1009.9) == [1005.0]
    assert timing.ticks(1010.0, 1010.0) == []
    assert timing.next_after(1000.0) == 1005.0
    assert timing.next_after(1004.999) == 1005.0
    assert Timing(every=timedelta(hours=1)).next_after(epoch(2025, 6, 1, 10, 20)) == epoch(
        2025, 6, 1, 11, 0
    )


def test_cron_ticks_in_utc_unless_a_time_zone_is_given() -> None:
    timing = Timing(cron="*/5 * * * *")

    start = epoch(2025, 6, 1, 10, 0)
    assert timing.ticks(start, start + 900) == [start + 300, start + 600, start + 900]
    assert timing.next_after(start) == start + 300  # strictly after
    assert timing.next_after(start + 0.5) == start + 300


def test_cron_follows_the_wall_clock_of_its_time_zone_across_daylight_saving_time() -> None:
    timing = Timing(cron="0 9 * * *", tz="Europe/Paris")

    # 09:00 in Paris is 08:00 UTC in winter and 07:00 UTC in summer (DST from 30 March 2025).
    winter = timing.next_after(epoch(2025, 3, 28, 12, 0))
    assert winter == epoch(2025, 3, 29, 8, 0)
    assert timing.next_after(winter) == epoch(2025, 3, 30, 7, 0)


def test_cron_with_six_fields_ticks_by_the_second() -> None:
    timing = Timing(cron="* * * * * */10")

    start = epoch(2025, 6, 1, 10, 0, 0)
    assert timing.ticks(start, start + 30) == [start + 10, start + 20, start + 30]


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        ({}, "cron=... or every=..."),
        ({"cron": "* * * * *", "every": timedelta(seconds=1)}, "cron=... or every=..."),
        ({"cron": "61 * * * *"}, "not a valid cron expression"),
        ({"cron": "0 0 30 2 *"}, "never ticks"),
        ({"cron": "* * * * *", "tz": "Mars/Olympus"}, "not a known IANA time zone"),
        ({"every": timedelta(milliseconds=500)}, "whole number of seconds"),
        ({"every": 1.5}, "whole number of seconds"),
        ({"every": 60, "tz": "Europe/Paris"}, "tz= applies to cron"),
        ({"every": 60, "catch_up": -1}, "catch_up must be >= 0"),
    ],
)
def test_a_schedule_that_cannot_work_is_refused_with_the_reason(
    options: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(pigeon.ConfigError, match=complaint.replace("(", r"\(")):
        Timing(**options)


# ticks as messages ---------------------------------------------------------------------------


async def test_a_periodic_task_is_an_ordinary_task_with_a_schedule(app: pigeon.App) -> None:
    @app.periodic(every=timedelta(minutes=1), name="report", queue="reports", priority=7)
    async def report() -> str:
        return "ok"

    assert app.tasks["report"] is report
    schedule = app.schedules["report"]
    assert schedule.task is report
    assert await report() == "ok"  # callable here, like any task

    m = schedule.message(1_700_000_040.0)
    assert (m.task, m.queue, m.priority) == ("report", "reports", 7)
    assert m.key == "periodic:report:1700000040"
    assert m.headers[TICK_HEADER] == "1700000040"
    assert bytes(m.args) == b"[]"
    # the key (kept as long as the outcome) outlives the window a new leader looks back over
    assert m.result_ttl >= schedule.timing.catch_up + KEY_MARGIN


def test_a_periodic_function_must_take_no_required_arguments(app: pigeon.App) -> None:
    with pytest.raises(pigeon.ConfigError, match="give path a default"):

        @app.periodic(every=60)
        def clean(path: str, keep: int = 3) -> None: ...


def test_the_leader_lock_is_named_after_the_set_of_schedules(app: pigeon.App) -> None:
    @app.periodic(every=60, name="a")
    def a() -> None: ...

    first = lock_name(list(app.schedules.values()))

    @app.periodic(every=60, name="b")
    def b() -> None: ...

    assert lock_name(list(app.schedules.values())) != first
    assert lock_name(list(app.schedules.values())) == lock_name(
        list(reversed(app.schedules.values()))
    )


# leading, catching up, never twice -----------------------------------------------------------


class Clock:
    """The backend clock as the schedulers read it, moved by the test."""

    def __init__(self, now: float) -> None:
        self.now = now

    async def time(self) -> float:
        return self.now


async def stored_ticks(backend: Backend, queue: str = "ticks") -> list[int]:
    """The tick of every message stored in ``queue`` (leasing them all to read them)."""
    deliveries = await backend.fetch([queue], 10_000, "reader")
    return sorted(int(decode_message(d.body).headers[TICK_HEADER]) for d in deliveries)


@pytest.fixture
def clock(app: pigeon.App, monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock(1000.5)
    monkeypatch.setattr(app.backend, "time", clock.time)
    return clock


def every_second(app: pigeon.App, catch_up: float = 5.0) -> None:
    @app.periodic(every=1, catch_up=catch_up, name="tick", queue="ticks")
    def tick() -> None: ...


async def test_only_the_lock_holder_sends_and_it_catches_up_its_window_on_taking_over(
    app: pigeon.App, clock: Clock
) -> None:
    every_second(app)
    backend = await app.open()
    a = scheduler_of(app, backend, "a", ttl=0.2, renew=0.1, retry=0.05)
    b = scheduler_of(app, backend, "b", ttl=0.2, renew=0.1, retry=0.05)

    assert await a.step() <= 0.1
    assert await b.step() == b.retry
    assert (a.leading, b.leading) == (True, False)
    # the window (995.4, 1000.5] (catch_up 5 s and a round): it cannot know what was sent
    assert a.sent == 5
    clock.now = 1003.2
    await a.step()
    await b.step()
    assert (a.sent, b.sent) == (8, 0)

    # a dies (stops renewing); b takes over once the lock has expired, and catches up
    clock.now = 1006.7
    deadline = time.monotonic() + 5
    while not b.leading:
        assert time.monotonic() < deadline, "b never took over"
        await b.step()
        await asyncio.sleep(0.02)

    assert b.sent == 3  # 1004..1006; 1002 and 1003 were sent by a and are not sent again
    assert await stored_ticks(backend) == list(range(996, 1007))


async def test_a_leader_sends_each_tick_once_however_often_it_runs(
    app: pigeon.App, clock: Clock
) -> None:
    every_second(app)
    backend = await app.open()
    leader = scheduler_of(app, backend, "a")
    for step in range(30):
        clock.now = 1000.5 + step * 0.25
        await leader.step()

    assert await stored_ticks(backend) == list(range(995, 1008))
    assert leader.sent == 13


async def test_two_leaders_at_once_still_send_each_tick_once(app: pigeon.App, clock: Clock) -> None:
    every_second(app)
    backend = await app.open()
    a = scheduler_of(app, backend, "a")
    b = scheduler_of(app, backend, "b")
    assert await backend.lock(a.lock, "a", 30)
    await a.step()
    # b believes it leads too (a leader that stalled past its lock's expiry): keys dedup.
    await backend.unlock(a.lock, "a")
    await b.step()

    assert b.leading
    assert b.sent == 0
    assert await stored_ticks(backend) == list(range(995, 1001))


async def test_ticks_older_than_the_catch_up_window_are_skipped(
    app: pigeon.App, clock: Clock
) -> None:
    every_second(app, catch_up=3)
    backend = await app.open()
    leader = scheduler_of(app, backend, "a")
    await leader.step()
    clock.now = 1100.2  # no worker ran for 100 s

    await leader.step()

    assert await stored_ticks(backend) == [997, 998, 999, 1000, 1097, 1098, 1099, 1100]


async def test_a_stopping_scheduler_hands_the_lock_over_at_once(app: pigeon.App) -> None:
    every_second(app)
    backend = await app.open()
    scheduler = scheduler_of(app, backend, "a")
    stopping = asyncio.Event()
    running = asyncio.create_task(scheduler.run(stopping))
    await eventually(lambda: scheduler.leading)
    assert not await backend.lock(scheduler.lock, "b", 30)

    stopping.set()
    await asyncio.wait_for(running, 5)

    assert await backend.lock(scheduler.lock, "b", 30)


async def test_a_backend_error_is_logged_and_the_round_is_tried_again(
    app: pigeon.App, clock: Clock, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    every_second(app)
    backend = await app.open()
    scheduler = scheduler_of(app, backend, "a")

    async def broken(*args: object) -> bool:
        raise pigeon.BackendError("connection lost")

    monkeypatch.setattr(backend, "lock", broken)
    assert await scheduler.step() == scheduler.retry
    assert "connection lost" in caplog.text
    monkeypatch.undo()
    monkeypatch.setattr(app.backend, "time", clock.time)
    await scheduler.step()
    assert scheduler.sent == 6


# in workers ----------------------------------------------------------------------------------


async def test_workers_run_the_scheduler_and_each_tick_runs_once(
    app: pigeon.App, start_worker: StartWorker
) -> None:
    runs: list[float] = []

    @app.periodic(every=1, catch_up=0, name="tick")
    async def tick() -> None:
        current = pigeon.current().tick
        assert current is not None
        runs.append(current)

    await start_worker()
    await start_worker()
    await start_worker(scheduler=False)
    await eventually(lambda: len(runs) >= 3, timeout=10)

    assert Counter(runs).most_common(1)[0][1] == 1
    assert sorted(runs) == [runs[0] + n for n in range(len(runs))]


async def test_a_worker_without_the_scheduler_sends_no_ticks(
    app: pigeon.App, start_worker: StartWorker
) -> None:
    every_second(app)
    await start_worker(scheduler=False)
    await asyncio.sleep(1.5)  # what is asserted is that nothing happens: a tick a second

    assert (await app.backend.stats()).queues == {}

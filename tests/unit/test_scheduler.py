"""Periodic tasks: when schedules tick, how ticks become keyed messages, and how schedulers
take turns leading, start a new schedule from when it is first seen, catch up what their
predecessors did not send (the latest missed tick, or all) and never send a tick twice."""

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
from pigeon.scheduler import KEY_MARGIN, RETRY, TTL, Scheduler, Timing, lock_name

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
        ({"every": 60, "missed": "none"}, "missed='none'"),
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


def every_second(app: pigeon.App, catch_up: float = 5.0, missed: str | None = None) -> None:
    """A schedule "tick" every second into queue "ticks" (``missed``: the default if None)."""
    choice: dict[str, Any] = {} if missed is None else {"missed": missed}

    @app.periodic(every=1, catch_up=catch_up, name="tick", queue="ticks", **choice)
    def tick() -> None: ...


async def marks(backend: Backend) -> dict[str, float]:
    return await backend.schedules(["tick"])


async def test_only_the_lock_holder_sends_and_it_catches_up_its_window_on_taking_over(
    app: pigeon.App, clock: Clock
) -> None:
    # missed="all": the clock jumps by more than these short ttls' grace, and every tick
    # a did not send is still within catch_up
    every_second(app, missed="all")
    backend = await app.open()
    a = scheduler_of(app, backend, "a", ttl=0.2, renew=0.1, retry=0.05)
    b = scheduler_of(app, backend, "b", ttl=0.2, renew=0.1, retry=0.05)

    assert await a.step() <= 0.1
    assert await b.step() == b.retry
    assert (a.leading, b.leading) == (True, False)
    # the schedule is new: nothing from before a first saw it at 1000.5
    assert a.sent == 0
    clock.now = 1003.2
    await a.step()
    await b.step()
    assert (a.sent, b.sent) == (3, 0)

    # a dies (stops renewing); b takes over once the lock has expired, and catches up
    clock.now = 1006.7
    deadline = time.monotonic() + 5
    while not b.leading:
        assert time.monotonic() < deadline, "b never took over"
        await b.step()
        await asyncio.sleep(0.02)

    assert b.sent == 3  # 1004..1006; 1002 and 1003 were sent by a and are not sent again
    assert await stored_ticks(backend) == list(range(1001, 1007))


async def test_a_leader_sends_each_tick_once_however_often_it_runs(
    app: pigeon.App, clock: Clock
) -> None:
    every_second(app)
    backend = await app.open()
    leader = scheduler_of(app, backend, "a")
    for step in range(30):
        clock.now = 1000.5 + step * 0.25
        await leader.step()

    assert await stored_ticks(backend) == list(range(1001, 1008))  # from 1000.5, first seen
    assert leader.sent == 7


async def test_two_leaders_at_once_still_send_each_tick_once(app: pigeon.App, clock: Clock) -> None:
    every_second(app)
    backend = await app.open()
    await backend.mark_schedules({"tick": 995.5})  # an earlier leader's last round
    entered, resume = asyncio.Event(), asyncio.Event()

    async def stalling(messages: Any) -> list[str]:
        entered.set()
        await resume.wait()
        return await app.enqueue(messages)

    a = Scheduler(list(app.schedules.values()), stalling, backend, "a")
    b = scheduler_of(app, backend, "b")
    assert await backend.lock(a.lock, "a", 30)
    stalled = asyncio.create_task(a.step())
    await entered.wait()
    # a stalls past its lock's expiry (it holds 996..1000, unsent); b takes over and leads
    await backend.unlock(a.lock, "a")
    await b.step()
    clock.now = 1001.5
    await b.step()
    # a resumes and sends what b already sent: the keys deduplicate it, and a's late mark
    # (1000.5) does not rewind b's (1001.5)
    resume.set()
    await stalled

    assert b.leading
    assert (a.sent, b.sent) == (0, 6)
    assert await stored_ticks(backend) == list(range(996, 1002))
    assert await marks(backend) == {"tick": 1001.5}


async def test_ticks_older_than_the_catch_up_window_are_skipped(
    app: pigeon.App, clock: Clock
) -> None:
    every_second(app, catch_up=3, missed="all")
    backend = await app.open()
    await backend.mark_schedules({"tick": 990.5})  # seen long ago: 991..996 are too old
    leader = scheduler_of(app, backend, "a")
    await leader.step()
    clock.now = 1100.2  # no worker ran for 100 s

    await leader.step()

    assert await stored_ticks(backend) == [997, 998, 999, 1000, 1097, 1098, 1099, 1100]


async def test_a_first_leader_sends_no_tick_from_before_it_first_saw_the_schedule(
    app: pigeon.App, clock: Clock
) -> None:
    every_second(app, catch_up=30, missed="all")  # even when every missed tick is wanted
    backend = await app.open()
    leader = scheduler_of(app, backend, "a")

    await leader.step()

    assert leader.sent == 0  # 971..1000 were never due: the schedule did not exist yet
    assert await stored_ticks(backend) == []
    assert await marks(backend) == {"tick": 1000.5}  # marked at once
    clock.now = 1002.2
    await leader.step()
    assert await stored_ticks(backend) == [1001, 1002]
    assert await marks(backend) == {"tick": 1002.2}


async def test_a_new_leader_after_an_outage_sends_the_latest_missed_tick_and_the_recent_ones(
    app: pigeon.App, clock: Clock
) -> None:
    every_second(app, catch_up=30)  # missed="latest", the default
    backend = await app.open()
    await backend.mark_schedules({"tick": 980.5})  # the last round before the outage
    leader = scheduler_of(app, backend, "a")
    assert leader.grace == TTL + RETRY + 1.0  # ttl + retry + renew

    await leader.step()

    # 981..1000 were missed; of those before the grace (now - 4.5 s = 996.0) only the latest
    assert await stored_ticks(backend) == [996, 997, 998, 999, 1000]
    assert await marks(backend) == {"tick": 1000.5}


async def test_missed_all_sends_every_missed_tick_within_catch_up(
    app: pigeon.App, clock: Clock
) -> None:
    every_second(app, catch_up=10, missed="all")
    backend = await app.open()
    await backend.mark_schedules({"tick": 980.5})
    leader = scheduler_of(app, backend, "a")

    await leader.step()

    # (989.5, 1000.5]: catch_up and a round; 981..989 are too old even for "all"
    assert await stored_ticks(backend) == list(range(990, 1001))


async def test_a_handover_within_the_grace_loses_no_tick(app: pigeon.App, clock: Clock) -> None:
    every_second(app)  # missed="latest", the default
    backend = await app.open()
    a = scheduler_of(app, backend, "a")
    b = scheduler_of(app, backend, "b")
    await a.step()  # 1000.5: the schedule is new
    clock.now = 1001.2
    await a.step()
    assert await stored_ticks(backend) == [1001]

    # a is killed: its lock lapses (TTL after its last round), and b, trying every RETRY
    # seconds, takes it over at the latest TTL + RETRY after that round.
    await backend.unlock(a.lock, "a")
    clock.now = 1001.2 + TTL + RETRY
    await b.step()

    assert b.leading
    assert await stored_ticks(backend) == [1002, 1003, 1004]


async def test_ticks_a_dead_leader_sent_but_did_not_mark_are_sent_once(
    app: pigeon.App, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    every_second(app)
    backend = await app.open()
    await backend.mark_schedules({"tick": 998.5})
    a = scheduler_of(app, backend, "a")
    b = scheduler_of(app, backend, "b")

    async def dies(marks: object) -> None:
        raise pigeon.BackendError("killed between the enqueue and the mark")

    monkeypatch.setattr(backend, "mark_schedules", dies)
    await a.step()  # stores 999 and 1000, but not its mark
    monkeypatch.undo()
    monkeypatch.setattr(app.backend, "time", clock.time)
    assert a.sent == 2
    assert await marks(backend) == {"tick": 998.5}

    await backend.unlock(a.lock, "a")
    clock.now = 1002.5
    await b.step()

    assert b.sent == 2  # 1001 and 1002; 999 and 1000 sent again, deduplicated by their keys
    assert await stored_ticks(backend) == [999, 1000, 1001, 1002]
    assert await marks(backend) == {"tick": 1002.5}


def test_a_missed_choice_that_does_not_exist_is_refused_naming_the_choices(
    app: pigeon.App,
) -> None:
    with pytest.raises(pigeon.ConfigError) as refused:
        app.periodic(every=60, missed="skip")  # type: ignore[arg-type]

    assert "'skip'" in str(refused.value)
    assert '"latest"' in str(refused.value)
    assert '"all"' in str(refused.value)


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
    await backend.mark_schedules({"tick": 996.5})
    scheduler = scheduler_of(app, backend, "a")

    async def broken(*args: object) -> bool:
        raise pigeon.BackendError("connection lost")

    monkeypatch.setattr(backend, "lock", broken)
    assert await scheduler.step() == scheduler.retry
    assert "connection lost" in caplog.text
    monkeypatch.undo()
    monkeypatch.setattr(app.backend, "time", clock.time)
    await scheduler.step()
    assert scheduler.sent == 4  # 997..1000, after the mark


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


async def test_three_fresh_workers_run_a_new_schedule_once_a_second_from_the_start(
    app: pigeon.App, start_worker: StartWorker
) -> None:
    # issue 15: the first leader sent 30 s of ticks that were never due, ~31 runs at once
    runs: list[float] = []

    @app.periodic(every=timedelta(seconds=1), name="tick")  # catch_up and missed: defaults
    async def tick() -> None:
        current = pigeon.current().tick
        assert current is not None
        runs.append(current)

    started = await app.backend.time()
    for _ in range(3):
        await start_worker()
    await eventually(lambda: len(runs) >= 2, timeout=10)
    elapsed = await app.backend.time() - started

    assert min(runs) > started
    assert len(runs) <= elapsed + 1
    assert sorted(runs) == [min(runs) + n for n in range(len(runs))]


async def test_a_worker_without_the_scheduler_sends_no_ticks(
    app: pigeon.App, start_worker: StartWorker
) -> None:
    every_second(app)
    await start_worker(scheduler=False)
    await asyncio.sleep(1.5)  # what is asserted is that nothing happens: a tick a second

    assert (await app.backend.stats()).queues == {}

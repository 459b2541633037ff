"""Periodic tasks: their schedules, and the scheduler that sends their ticks from workers.

``@app.periodic(cron="*/5 * * * *", tz="Europe/Paris")`` or ``@app.periodic(every=
timedelta(minutes=1))`` registers an ordinary task plus a ``Schedule``. There is no separate
beat process: every worker runs a ``Scheduler``, and the one holding the backend's leader
lock sends the ticks.

Why each tick is sent exactly once, however many workers run and whichever of them dies:

- **One sender at a time.** A scheduler takes or renews the lock (``Backend.lock``, ``TTL``
  seconds on the backend clock) before each round and sends only if it holds it; the leader
  renews it every ``RENEW`` seconds, the others try every ``RETRY`` seconds. A leader that
  stops hands it over (``unlock``); one that dies loses it when it expires, so another
  worker leads at most ``TTL + RETRY`` seconds later.
- **No duplicates, even across a change of leader.** Tick ``t`` of schedule ``name`` is a
  message with the idempotency key ``periodic:{name}:{t}`` (``t`` in whole epoch seconds):
  if two schedulers ever send the same tick (a leader that stalled past its lock's expiry),
  the backend stores the first and ignores the other. Tick messages keep their key (and
  outcome) at least ``catch_up`` plus a minute, longer than any scheduler can look back.
- **No missed tick, and no burst.** The backend keeps, per schedule, its *mark*: the time
  up to which every tick has been sent (``Backend.schedules``, ``Backend.mark_schedules``;
  a mark only moves forward, so a stalled ex-leader cannot rewind it). A scheduler that
  becomes leader reads the marks of its schedules and sends the ticks after them; it raises
  the marks after each round that sent ticks, once the ticks are stored (a leader that dies
  in between leaves them unmarked: its successor sends them again, and their keys
  deduplicate them). A schedule with no mark was never seen: its ticks start from the
  moment it is first seen, and its mark is written at once, so a new schedule on a new
  database never sends a burst of ticks that were never due.
- **Missed ticks.** A new leader looks back at most ``catch_up`` seconds (30 by default)
  plus one round (``RENEW``): older ticks are skipped. Of the ticks in that window that
  fell due more than ``TTL + RETRY + RENEW`` seconds ago (while no worker led: an outage),
  ``missed="latest"`` (the default, as Kubernetes CronJobs) sends only the latest, and
  ``missed="all"`` sends every one. Ticks within those last ``TTL + RETRY + RENEW``
  seconds are always sent: a killed leader is replaced at most ``TTL + RETRY`` seconds
  after its last round, so a handover loses no tick.

Ticks are computed on the backend's clock. ``every`` ticks at whole multiples of the interval
since the Unix epoch (``every=timedelta(hours=1)`` ticks on the hour, UTC); ``cron`` (five
fields, or six with seconds last, read by croniter) follows the wall clock of ``tz`` (an IANA
name, UTC by default), daylight saving time included. A tick runs as an ordinary message of
the task, with no arguments; ``pigeon.current().tick`` is its scheduled time.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import inspect
import logging
import math
import time
import zoneinfo
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta, tzinfo
from typing import Any, Literal, TypedDict, get_args

import msgspec

from pigeon.backends.base import Backend
from pigeon.clock import SYSTEM, Clock
from pigeon.context import TICK_HEADER
from pigeon.errors import ConfigError
from pigeon.message import Message
from pigeon.task import Task

log = logging.getLogger("pigeon.scheduler")

#: Seconds the leader lock lasts after each renewal.
TTL = 3.0
#: Seconds between two renewals by the leader.
RENEW = 1.0
#: Seconds between two attempts of a worker that does not lead.
RETRY = 0.5
#: How far back a new leader looks for ticks that may not have been sent.
CATCH_UP = timedelta(seconds=30)
#: How much longer than ``catch_up`` a tick's idempotency key is kept.
KEY_MARGIN = 60.0
#: Ticks sent per enqueue call (one round trip each).
BATCH = 500

#: Which missed ticks (fallen due while no worker led) a new leader sends: the latest, or all.
Missed = Literal["latest", "all"]


class PeriodicOptions(TypedDict, total=False):
    """The task options ``App.periodic`` takes besides the schedule (see ``TaskOptions``)."""

    name: str
    queue: str
    retries: int
    timeout: float
    lease: float
    priority: int
    result_ttl: float
    max_deliveries: int
    retry_backoff: float
    retry_backoff_max: float


class Timing:
    """When a schedule ticks: a cron expression in a time zone, or a fixed interval.

    ``catch_up`` is how late a tick may still be sent; ``missed`` which of the ticks missed
    in an outage are (see the module docstring).

    Raises ConfigError, naming what is wrong, for a bad expression, an unknown time zone,
    both or neither of ``cron`` and ``every``, an interval that is not a whole number of
    seconds of at least one, or a ``missed`` that is not ``"latest"`` or ``"all"``.
    """

    def __init__(
        self,
        *,
        cron: str | None = None,
        every: timedelta | float | None = None,
        tz: str | tzinfo | None = None,
        catch_up: timedelta | float | None = None,
        missed: Missed = "latest",
    ) -> None:
        if (cron is None) == (every is None):
            raise ConfigError("a periodic task needs cron=... or every=..., and not both")
        window = _seconds(catch_up) if catch_up is not None else CATCH_UP.total_seconds()
        if window < 0:
            raise ConfigError(f"catch_up must be >= 0 seconds, not {window}")
        self.catch_up = window
        if missed not in get_args(Missed):
            raise ConfigError(
                f'missed={missed!r}: say which missed ticks a new leader sends, "latest"'
                ' (only the latest of them) or "all" (every one within catch_up)'
            )
        self.missed: Missed = missed
        self.cron = cron
        self.every: int | None = None
        self.tz: tzinfo = zoneinfo.ZoneInfo("UTC")
        if every is not None:
            if tz is not None:
                raise ConfigError(
                    "tz= applies to cron schedules; every= ticks at multiples of the interval"
                    " since the Unix epoch (use cron= for times of day in a time zone)"
                )
            interval = _seconds(every)
            if interval < 1 or interval != int(interval):
                raise ConfigError(
                    f"every= must be a whole number of seconds, at least 1, not {interval}"
                )
            self.every = int(interval)
            return
        assert cron is not None
        from croniter import croniter

        if not croniter.is_valid(cron):
            raise ConfigError(
                f"cron={cron!r} is not a valid cron expression (five fields: minute hour"
                " day-of-month month day-of-week, or six with seconds last)"
            )
        if isinstance(tz, str):
            try:
                self.tz = zoneinfo.ZoneInfo(tz)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ConfigError(f"tz={tz!r} is not a known IANA time zone") from None
        elif tz is not None:
            self.tz = tz
        try:
            self.next_after(time.time())
        except ValueError:  # croniter's CroniterBadDateError: a date that never comes
            raise ConfigError(f"cron={cron!r} never ticks (a day that does not exist?)") from None

    def __repr__(self) -> str:
        if self.every is not None:
            return f"every {self.every}s"
        return f"cron {self.cron!r} in {self.tz}"

    def ticks(self, after: float, until: float) -> list[float]:
        """Every tick ``t`` with ``after < t <= until`` (epoch seconds), in order."""
        if until <= after:
            return []
        if self.every is not None:
            first = math.floor(after / self.every) + 1
            last = math.floor(until / self.every)
            return [float(k * self.every) for k in range(first, last + 1)]
        out: list[float] = []
        t = self.next_after(after)
        while t <= until:
            out.append(t)
            t = self.next_after(t)
        return out

    def next_after(self, moment: float) -> float:
        """The first tick strictly after ``moment`` (epoch seconds)."""
        if self.every is not None:
            return float((math.floor(moment / self.every) + 1) * self.every)
        from croniter import croniter

        assert self.cron is not None
        t = float(croniter(self.cron, datetime.fromtimestamp(moment, self.tz)).get_next(float))
        while t <= moment:  # never the start itself, whatever croniter does with fractions
            t = float(croniter(self.cron, datetime.fromtimestamp(t, self.tz)).get_next(float))
        return t


class Schedule:
    """A periodic task: the task, when it ticks, and how its tick messages are made."""

    def __init__(self, task: Task[Any, Any], timing: Timing) -> None:
        self.task = task
        self.name = task.name
        self.timing = timing
        # The key of a tick must outlive the window any scheduler looks back over.
        self.result_ttl = max(task.defaults.result_ttl, timing.catch_up + KEY_MARGIN)

    def __repr__(self) -> str:
        return f"<Schedule {self.name} {self.timing!r}>"

    def key(self, tick: float) -> str:
        """The idempotency key of one tick: the same in every worker."""
        return f"periodic:{self.name}:{round(tick)}"

    def message(self, tick: float) -> Message:
        """The message that runs tick ``tick`` (keyed, so a second send stores nothing)."""
        options = msgspec.structs.replace(self.task.defaults, key=self.key(tick))
        m = self.task.message((), {}, options, result_ttl=self.result_ttl)
        return msgspec.structs.replace(m, headers={**m.headers, TICK_HEADER: str(round(tick))})


def lock_name(schedules: Sequence[Schedule]) -> str:
    """The leader lock of a set of schedules.

    Named after the schedules, so that apps with different schedules on one backend each
    get a leader; during a rolling deploy that changes the set, the old and the new set
    each have one, and the ticks both send are deduplicated by their keys.
    """
    names = "\n".join(sorted(s.name for s in schedules))
    return f"pigeon.scheduler.{hashlib.sha256(names.encode()).hexdigest()[:16]}"


class Scheduler:
    """Sends the ticks of ``schedules`` while ``owner`` (a worker id) leads.

    ``enqueue`` stores a batch of tick messages and returns the ids that stand for them (the
    App's ``enqueue``: signed, with events); ``backend`` holds the lock and the marks, and
    tells the time; ``clock`` is what the pauses between rounds are waited on (the system's,
    or the test's of ``pigeon.testing``, whose backend tells its time).
    Runs inside a worker (``run``), owned by the worker's TaskGroup, until the worker stops.
    """

    def __init__(
        self,
        schedules: Sequence[Schedule],
        enqueue: Callable[[Sequence[Message]], Awaitable[list[str]]],
        backend: Backend,
        owner: str,
        *,
        ttl: float = TTL,
        renew: float = RENEW,
        retry: float = RETRY,
        clock: Clock = SYSTEM,
    ) -> None:
        if not renew < ttl:
            raise ValueError(f"the lock must be renewed ({renew}s) within its ttl ({ttl}s)")
        self.enqueue = enqueue
        self.backend = backend
        self.owner = owner
        self.schedules = list(schedules)
        self.lock = lock_name(self.schedules)
        self.ttl = ttl
        self.renew = renew
        self.retry = retry
        self.clock = clock
        self.leading = False
        self.sent = 0
        #: Missed ticks this recent are always sent: a dead leader's successor leads at most
        #: ttl + retry after its last round, and one more round covers the rounds' latency.
        self.grace = ttl + retry + renew
        # Per schedule, the backend time up to which every tick has been sent, as this
        # leader knows it (empty: not leading, or the term's marks are not read yet) ...
        self._sent_up_to: dict[str, float] = {}
        # ... and the schedules whose mark in the backend is behind it.
        self._unmarked: set[str] = set()

    async def run(self, stopping: asyncio.Event) -> None:
        """Lead or stand by until ``stopping`` is set; then hand the lock over."""
        log.info(
            "scheduler of worker %s: %d periodic tasks, lock %s",
            self.owner,
            len(self.schedules),
            self.lock,
        )
        try:
            while not stopping.is_set():
                pause = await self.step()
                await self.clock.wait(stopping, pause)
        finally:
            if self.leading:
                await self._resign()

    async def step(self) -> float:
        """One round: take or renew the lock, and send the due ticks if this leads.

        Returns the seconds to wait before the next round. Backend errors are logged and the
        round is tried again later: they never stop the worker.
        """
        try:
            now = await self.backend.time()
            leading = await self.backend.lock(self.lock, self.owner, self.ttl)
        except Exception as exc:
            log.warning(
                "scheduler of worker %s: taking the leader lock failed: %s", self.owner, exc
            )
            return self.retry
        if leading and not self.leading:
            log.info("worker %s leads the scheduler (lock %s)", self.owner, self.lock)
        elif self.leading and not leading:
            log.warning("worker %s no longer leads the scheduler: the lock expired", self.owner)
        self.leading = leading
        if not leading:
            self._sent_up_to.clear()  # a later term starts from the backend's marks
            self._unmarked.clear()
            return self.retry
        try:
            await self._send_due(now)
            upcoming = min(s.timing.next_after(now) for s in self.schedules)
        except Exception as exc:
            log.warning("scheduler of worker %s: sending ticks failed: %s", self.owner, exc)
            return self.retry
        # Wake just after the next tick (the backend clock is read again then), or to renew.
        return min(self.renew, max(upcoming - now + 0.001, 0.001))

    async def _send_due(self, now: float) -> None:
        if not self._sent_up_to:  # the first round of a term
            await self._read_marks(now)
        messages: list[Message] = []
        for s in self.schedules:
            due = self._due(s, now)
            if due:
                messages.extend(s.message(t) for t in due)
                self._unmarked.add(s.name)
        for i in range(0, len(messages), BATCH):
            batch = messages[i : i + BATCH]
            ids = await self.enqueue(batch)
            fresh = sum(mid == m.id for mid, m in zip(ids, batch, strict=True))
            self.sent += fresh
            if fresh:
                log.debug("scheduler sent %d ticks (%d already sent)", fresh, len(batch) - fresh)
        for s in self.schedules:
            self._sent_up_to[s.name] = now
        if self._unmarked:
            # Only once the ticks are stored: a leader that dies before this leaves them
            # to its successor, whose sends of them the keys deduplicate.
            await self.backend.mark_schedules({n: self._sent_up_to[n] for n in self._unmarked})
            self._unmarked.clear()

    async def _read_marks(self, now: float) -> None:
        """Learn what the previous leaders sent: the backend's marks of our schedules."""
        marks = await self.backend.schedules([s.name for s in self.schedules])
        for s in self.schedules:
            if s.name in marks:
                self._sent_up_to[s.name] = marks[s.name]
            else:
                # Never seen: no tick of it was ever due, so it starts now (marked at once).
                log.info("periodic task %s is new (no mark yet): it ticks from now", s.name)
                self._sent_up_to[s.name] = now
                self._unmarked.add(s.name)

    def _due(self, s: Schedule, now: float) -> list[float]:
        """The ticks of ``s`` to send at ``now``: those after its mark, within catch_up."""
        # A tick may be late by catch_up, plus the round it waited for (even with a catch_up
        # of 0, a leader sends its ticks a moment after they fall due).
        since = max(self._sent_up_to[s.name], now - (s.timing.catch_up + self.renew))
        ticks = s.timing.ticks(since, now)
        if s.timing.missed == "all":
            return ticks
        # Ticks older than the grace fell due while no one led (an outage): the latest only.
        missed = bisect.bisect_right(ticks, now - self.grace)
        return ticks[max(missed - 1, 0) :]

    async def _resign(self) -> None:
        self.leading = False
        try:
            await self.backend.unlock(self.lock, self.owner)
        except Exception as exc:
            log.warning(
                "worker %s could not hand over the scheduler lock (another worker takes it"
                " when it expires, within %gs): %s",
                self.owner,
                self.ttl,
                exc,
            )
        else:
            log.info("worker %s handed over the scheduler", self.owner)


def check_periodic(fn: Callable[..., Any]) -> None:
    """Raise ConfigError unless ``fn`` can be called with no arguments, as its ticks are."""
    required = [
        p.name
        for p in inspect.signature(fn).parameters.values()
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if required:
        raise ConfigError(
            f"periodic task {fn.__qualname__}: its ticks are sent with no arguments, so"
            f" give {', '.join(required)} a default"
        )


def _seconds(value: timedelta | float) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)

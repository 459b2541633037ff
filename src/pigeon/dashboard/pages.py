"""The dashboard's Periodic and Limits pages, read through the Backend contract.

**Periodic**: each schedule of the App (``App.schedules``), when it ticks, its mark (the
backend time up to which every tick has been sent: ``Backend.schedules``), the last tick
at or before the mark with the state of its message (found by its idempotency key,
``periodic:NAME:EPOCH``, with ``list_messages``), and the next tick. Who leads is not
readable: ``Backend.lock`` takes a lock and says whether the caller holds it, and no
operation tells who holds one (asking with ``lock`` would take a free lock). The page shows
the lock's name, and whether a leader is sending: a tick due more than ``OVERDUE`` seconds
ago that is not marked sent means no worker of this App's schedules leads.

**Limits**: each task declared with ``rate=`` or ``limit=`` (``Task.limits``), and how many
of its messages are leased now (``list_messages(task, state="leased")``, up to
``LIST_LIMIT``): a message holds a concurrency place while it runs, so for a limit without
``limit_key`` that is the places in use. The buckets' reservations (``take``) and the
places per key (``acquire``) are not readable: the contract has no read of either.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

import msgspec
from croniter import croniter
from starlette.requests import Request
from starlette.responses import Response

from pigeon.backends import Backend
from pigeon.backends.base import LIST_LIMIT, MessagePage, MessageQuery, MessageRow
from pigeon.dashboard.host import Host
from pigeon.limits import TaskLimits
from pigeon.scheduler import RENEW, RETRY, TTL, Schedule, Timing, lock_name
from pigeon.timetext import format_when

#: A tick this late (seconds) and still not marked sent means that no scheduler leads: a
#: dead leader is replaced within TTL + RETRY, and a round takes at most RENEW.
OVERDUE = TTL + RETRY + RENEW + 5.0


def last_tick(timing: Timing, moment: float) -> float | None:
    """The latest tick at or before ``moment`` (epoch seconds); None before the first."""
    if timing.every is not None:
        return float(math.floor(moment / timing.every) * timing.every)
    assert timing.cron is not None
    # croniter's get_prev is strictly before its start: start just after the moment.
    start = datetime.fromtimestamp(moment + 0.001, timing.tz)
    try:
        return float(croniter(timing.cron, start).get_prev(float))
    except ValueError:  # CroniterBadDateError: no earlier tick
        return None


@dataclass(frozen=True)
class ScheduleRow:
    name: str
    timing: str
    queue: str
    mark: str  # when the backend last marked its ticks sent
    last: str  # its last tick at or before the mark, while its message is kept
    last_row: MessageRow | None  # that tick's message, while it is kept
    next: str
    overdue: str  # the oldest tick due and not marked sent, when it is late


def schedule_row(
    s: Schedule, mark: float | None, found: MessageRow | None, now: float
) -> ScheduleRow:
    last = last_tick(s.timing, mark) if mark is not None else None
    unsent = s.timing.next_after(mark) if mark is not None else None
    late = unsent is not None and unsent < now - OVERDUE
    return ScheduleRow(
        name=s.name,
        timing=repr(s.timing),
        queue=s.task.defaults.queue,
        mark=format_when(mark, now) if mark is not None else "never (no scheduler ran it yet)",
        # Shown only with its message: a tick before a new schedule's first mark, or one
        # whose outcome expired, cannot be told apart from one that was never sent.
        last=format_when(last, now) if last is not None and found is not None else "",
        last_row=found,
        next=format_when(s.timing.next_after(now), now),
        overdue=format_when(unsent, now) if late else "",
    )


class PeriodicPage:
    def __init__(self, host: Host) -> None:
        self.host = host

    async def page(self, request: Request) -> Response:
        schedules = sorted(self.host.pigeon_app.schedules.values(), key=lambda s: s.name)

        async def read(b: Backend) -> tuple[dict[str, float], dict[str, MessageRow], float]:
            now = await b.time()
            marks = await b.schedules([s.name for s in schedules]) if schedules else {}
            found: dict[str, MessageRow] = {}
            for s in schedules:
                mark = marks.get(s.name)
                last = last_tick(s.timing, mark) if mark is not None else None
                if last is None:
                    continue
                listed = await b.list_messages(MessageQuery(key=s.key(last), limit=1))
                if listed.rows:
                    found[s.name] = listed.rows[0]
            return marks, found, now

        marks, found, now = await self.host.call(read)
        rows = [schedule_row(s, marks.get(s.name), found.get(s.name), now) for s in schedules]
        context = {
            "schedules": rows,
            "lock": lock_name(schedules) if schedules else "",
            "leading": bool(rows) and not any(r.overdue for r in rows),
            "ttl": TTL,
        }
        return self.host.render(request, "periodic.html", context)


@dataclass(frozen=True)
class LimitRow:
    task: str
    queue: str
    rate: str
    rate_per: str  # "task" or "key"
    limit: str
    limit_per: str
    leased: int
    more: bool  # more leased than one page shows


def describe_rate(limits: TaskLimits) -> str:
    if limits.interval is None:
        return ""
    per_second = 1.0 / limits.interval
    if per_second >= 1:
        text = f"{per_second:g}/s"
    elif per_second * 60 >= 1:
        text = f"{per_second * 60:g}/m"
    else:
        text = f"{per_second * 3600:g}/h"
    return text + (f", burst {limits.burst}" if limits.burst != 1 else "")


class LimitsPage:
    def __init__(self, host: Host) -> None:
        self.host = host

    async def page(self, request: Request) -> Response:
        tasks = sorted(
            (t for t in self.host.pigeon_app.tasks.values() if t.limits is not None),
            key=lambda t: t.name,
        )

        async def read(b: Backend) -> dict[str, MessagePage]:
            query = MessageQuery(state="leased", limit=LIST_LIMIT)
            return {
                t.name: await b.list_messages(msgspec.structs.replace(query, task=t.name))
                for t in tasks
            }

        leased = await self.host.call(read) if tasks else {}
        rows = []
        for t in tasks:
            limits = t.limits
            assert limits is not None
            page = leased[t.name]
            rows.append(
                LimitRow(
                    task=t.name,
                    queue=t.defaults.queue,
                    rate=describe_rate(limits),
                    rate_per="key" if limits.rate_key is not None else "task",
                    limit=str(limits.limit) if limits.limit is not None else "",
                    limit_per="key" if limits.limit_key is not None else "task",
                    leased=len(page.rows),
                    more=page.next is not None,
                )
            )
        return self.host.render(request, "limits.html", {"limits": rows})

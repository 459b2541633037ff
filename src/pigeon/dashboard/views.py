"""What each page shows, read from the backend's records: plain values for the templates.

Nothing here knows of HTTP or HTML; every text is left as it is (the templates escape it),
except arguments and results, whose ``pigeon.Secret`` values are replaced by ``***`` here,
before they leave the server.
"""

from __future__ import annotations

from dataclasses import dataclass

from pigeon.inspection import body_rows, info_rows, result_rows
from pigeon.message import DeadLetter, MessageInfo, Pause, QueueStats, Stats, WorkerInfo
from pigeon.timetext import describe_pause, format_duration, heartbeat_age

#: The states a queue's depth is counted in (``Backend.stats``), in the order shown.
STATES = ("waiting", "scheduled", "pending", "leased", "dead")

#: A worker up this long (seconds) that runs nothing while one of its queues, not paused,
#: has pending messages is flagged stalled: a healthy worker with a free slot fetches due
#: work within its fetch wait (a second or so), so a whole minute of it is not a moment
#: caught between two fetches.
STALLED_AFTER = 60.0


@dataclass(frozen=True)
class QueueRow:
    name: str
    counts: QueueStats
    pause: Pause | None
    pause_text: str
    workers: int

    def count(self, state: str) -> int:
        return int(getattr(self.counts, state))


@dataclass(frozen=True)
class WorkerRow:
    info: WorkerInfo
    up: str
    last_seen: str
    last_fetch: str  # when a fetch last answered
    last_work: str  # when a fetch last brought messages
    stalled: bool
    waiting_on: list[str]  # its queues with pending work, when stalled


@dataclass(frozen=True)
class LetterRow:
    id: str
    queue: str
    task: str
    died: str
    reason: str


def queue_rows(stats: Stats, now: float) -> list[QueueRow]:
    """Every queue that holds a message or is paused, by name."""
    rows = []
    for name in sorted({*stats.queues, *stats.paused}):
        pause = stats.paused.get(name)
        rows.append(
            QueueRow(
                name=name,
                counts=stats.queues.get(name, QueueStats()),
                pause=pause,
                pause_text=describe_pause(pause, now) if pause else "",
                workers=sum(1 for w in stats.workers if name in w.queues),
            )
        )
    return rows


def totals(stats: Stats) -> dict[str, int]:
    return {s: sum(getattr(q, s) for q in stats.queues.values()) for s in STATES}


def starved_queues(worker: WorkerInfo, stats: Stats) -> list[str]:
    """The worker's queues that have pending (due) messages and are not paused."""
    return [
        q
        for q in worker.queues
        if q not in stats.paused and q in stats.queues and stats.queues[q].pending > 0
    ]


def is_stalled(worker: WorkerInfo, stats: Stats, now: float) -> bool:
    """Alive but not consuming (celery #8030): its heartbeat is fresh (it is listed), it has
    a free slot, one of its queues (not paused) has due work, and no fetch has brought it a
    message for ``STALLED_AFTER`` seconds: a worker that fetches gets due work within its
    fetch wait (a second or so).

    The heartbeat says how long before ``last_seen`` a fetch last brought messages
    (``work_age``, an age, so that the worker's clock never meets the backend's). A worker
    that has brought none yet is judged by its uptime, running nothing.
    """
    if worker.running >= worker.concurrency or not starved_queues(worker, stats):
        return False
    if worker.work_age is not None:
        return now - worker.last_seen + worker.work_age > STALLED_AFTER
    return (
        worker.running == 0 and bool(worker.started_at) and now - worker.started_at > STALLED_AFTER
    )


def worker_rows(stats: Stats, now: float) -> list[WorkerRow]:
    rows = []
    for w in sorted(stats.workers, key=lambda w: (w.host, w.pid, w.id)):
        stalled = is_stalled(w, stats, now)
        rows.append(
            WorkerRow(
                info=w,
                up=format_duration(now - w.started_at) if w.started_at else "",
                last_seen=f"{format_duration(now - w.last_seen)} ago" if w.last_seen else "",
                last_fetch=heartbeat_age(w, w.fetch_age, now),
                last_work=heartbeat_age(w, w.work_age, now),
                stalled=stalled,
                waiting_on=starved_queues(w, stats) if stalled else [],
            )
        )
    return rows


def letter_rows(letters: list[DeadLetter], now: float) -> list[LetterRow]:
    return [
        LetterRow(
            id=d.id,
            queue=d.queue,
            task=d.task,
            died=f"{format_duration(now - d.died_at)} ago",
            reason=d.reason.strip().splitlines()[0] if d.reason.strip() else "",
        )
        for d in letters
    ]


def detail_rows(info: MessageInfo, now: float) -> list[tuple[str, str]]:
    """What the detail page lists of one message, as (label, text), as ``pigeon inspect``
    does (``pigeon.inspection``): empty ones left out."""
    rows = [("state", info.state), *info_rows(info, now)]
    if info.result is not None:
        rows.extend(result_rows(info.result, now))
    if info.body is not None:
        rows.extend(body_rows(info.body, now, info.sent_at))
    return rows

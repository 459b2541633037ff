"""The pure-Python logic that every backend runs the same way, written once.

``base.py`` states the contract; this module holds the steps of it that are not the
broker's business: how ``stats`` counts, which outcome of a batch a ``settle`` applies and
what it answers, the state a new message starts in and when it expires, and how the leases
of a fetch whose caller was cancelled are handed back (``inspect``'s rule is in
``info.py``). Each backend reads its rows and calls these; none of them costs a round trip.
(What needs the broker's atomicity, such as advancing a join when its member settles, stays
in the backend's Lua or SQL: the conformance suite checks that every copy agrees.)
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, NamedTuple

from pigeon.backends.base import (
    LIST_LIMIT,
    MessagePage,
    MessageQuery,
    MessageRow,
    join_fired,
)
from pigeon.message import (
    FINAL_STATES,
    JoinSpec,
    Lease,
    Message,
    Outcome,
    Pause,
    QueueStats,
    Stats,
    WorkerInfo,
)

log = logging.getLogger("pigeon.backends")

#: Every this many events appended, the event log drops all but the newest ``EVENTS_KEPT``
#: (so it holds at most ``EVENTS_KEPT + EVENTS_PRUNE_EVERY``), where the broker does not
#: trim it by itself.
EVENTS_PRUNE_EVERY = 1000


# stats ------------------------------------------------------------------------------------


class Tally:
    """The counts ``stats`` returns, added up from a backend's rows.

    ``message`` counts messages of a queue in a stored state (``waiting``, ``pending`` or
    ``leased``; a pending one that is not due yet, ``later``, counts as scheduled), and
    ``dead_letters`` the dead letters of a queue. A queue appears once anything of it is
    counted.
    """

    __slots__ = ("dead", "queues")

    def __init__(self) -> None:
        self.queues: dict[str, QueueStats] = {}
        self.dead = 0

    def message(self, queue: str, state: str, later: bool, n: int = 1) -> None:
        qs = self.queues.get(queue)
        if qs is None:
            qs = self.queues[queue] = QueueStats()
        if state == "waiting":
            qs.waiting += n
        elif state == "leased":
            qs.leased += n
        elif later:
            qs.scheduled += n
        else:
            qs.pending += n

    def dead_letters(self, queue: str, n: int = 1) -> None:
        qs = self.queues.get(queue)
        if qs is None:
            qs = self.queues[queue] = QueueStats()
        qs.dead += n
        self.dead += n

    def stats(
        self,
        results: int,
        workers: Iterable[WorkerInfo],
        paused: Mapping[str, Pause] | None = None,
    ) -> Stats:
        """The ``Stats``: these counts, ``results`` kept outcomes, the live workers by id,
        the unexpired pauses."""
        workers = sorted(workers, key=lambda w: w.id)
        return Stats(self.queues, results, self.dead, workers, dict(paused or {}))


# pause ------------------------------------------------------------------------------------


def check_pause(queue: str, until: float | None) -> None:
    """Refuse, before anything is stored, a pause no backend could keep: ValueError."""
    if not isinstance(queue, str) or not queue:
        raise ValueError(f"a queue to pause or resume needs a name, not {queue!r}")
    if until is not None and not math.isfinite(until):
        raise ValueError(f"a pause's until must be a finite time (epoch seconds), not {until!r}")


def until_passed(queue: str, until: float, now: float) -> ValueError:
    """The error of a pause whose ``until`` is not after the backend's ``now``."""
    return ValueError(
        f"cannot pause queue {queue!r} until {until:.3f}: that is not after the backend's "
        f"now ({now:.3f}); give a time in the future (now + seconds), or resume it instead"
    )


# settle -----------------------------------------------------------------------------------


def first_outcomes(outcomes: Sequence[Outcome]) -> dict[tuple[str, int], Outcome]:
    """The outcome a settle applies for each delivery ``(id, attempt)`` named in
    ``outcomes``: the first one given (the later ones are refused, as if applied in order)."""
    first: dict[tuple[str, int], Outcome] = {}
    for o in outcomes:
        first.setdefault((o.id, o.attempt), o)
    return first


def verdicts(
    outcomes: Sequence[Outcome],
    first: dict[tuple[str, int], Outcome],
    applied: set[tuple[str, int]],
) -> list[bool]:
    """What ``settle(outcomes)`` returns: per outcome, whether it was applied.

    ``first`` is ``first_outcomes(outcomes)`` (it is emptied) and ``applied`` the deliveries
    the backend found still held and settled. An outcome is applied when its delivery was and
    it is the one ``first`` chose; so of one outcome object given twice only the first
    counts.
    """
    out: list[bool] = []
    for o in outcomes:
        key = (o.id, o.attempt)
        chosen = first.get(key) is o
        out.append(chosen and key in applied)
        if chosen:
            del first[key]  # a duplicate of this very object later in the batch is refused
    return out


# enqueue ----------------------------------------------------------------------------------


class JoinStart(NamedTuple):
    """The counters a join message starts with: members already settled count at once."""

    mode: str
    total: int
    settled: int
    succeeded: int
    fired: bool
    #: The members still to be counted when they settle (a member listed twice is twice).
    unsettled: list[str]


def start_join(join: JoinSpec, outcomes: Mapping[str, str]) -> JoinStart:
    """The counters of a new join, given the states of the members' stored ``outcomes``."""
    settled = succeeded = 0
    unsettled: list[str] = []
    for member in join.members:
        state = outcomes.get(member)
        if state is None:
            unsettled.append(member)
        else:
            settled += 1
            succeeded += state == "succeeded"
    total = len(join.members)
    fired = join_fired(join.mode, total, settled, succeeded)
    return JoinStart(join.mode, total, settled, succeeded, fired, unsettled)


def first_state(
    m: Message, outcomes: Mapping[str, str]
) -> tuple[Literal["waiting", "pending"], JoinStart | None]:
    """The state a new message is stored in, and its join's counters if it is a join.

    ``outcomes`` holds the states of the stored outcomes of the ids it depends on (its
    ``after``, its join's members). A join waits until its counters fire it; a follow-up
    waits until ``after`` has an outcome; anything else is pending (scheduled while its due
    time is in the future).
    """
    if m.join is not None:
        join = start_join(m.join, outcomes)
        return ("pending" if join.fired else "waiting"), join
    if m.after is not None and m.after not in outcomes:
        return "waiting", None
    return "pending", None


def expiry(m: Message, now: float) -> float | None:
    """When ``m`` expires, stored at ``now`` (backend clock): the earlier of its absolute
    ``expires_at`` and ``now`` + its relative ``expires``, or None when it has neither."""
    if m.expires is None:
        return m.expires_at
    relative = now + m.expires
    return relative if m.expires_at is None else min(m.expires_at, relative)


def dependencies(messages: Iterable[Message]) -> list[str]:
    """The ids whose stored outcomes decide the first state of ``messages``."""
    refs: list[str] = []
    for m in messages:
        if m.join is not None:
            refs.extend(m.join.members)
        elif m.after is not None:
            refs.append(m.after)
    return refs


# a fetch whose caller was cancelled ----------------------------------------------------------


def orphaned_leases(job: asyncio.Future[Any], leases: Callable[[Any], list[Lease]]) -> list[Lease]:
    """What a fetch that ran on after its caller was cancelled leased: ``leases`` of its
    result, or none if it failed or was cancelled itself."""
    if job.cancelled() or job.exception() is not None:
        return []
    return leases(job.result())


async def release_orphans(
    release: Callable[[Sequence[Lease]], Awaitable[int]], leases: Sequence[Lease]
) -> None:
    """Hand back the leases of a cancelled fetch at once, rather than let them run out and
    count as lost deliveries; a failure is logged (they are fetched again later)."""
    try:
        await release(leases)
    except Exception as exc:
        log_orphans(leases, exc)


def log_orphans(leases: Sequence[Lease], exc: BaseException) -> None:
    log.warning(
        "could not release %d messages leased by a cancelled fetch (%s): %s; they will be "
        "fetched again when their lease runs out",
        len(leases),
        ", ".join(x.id for x in leases),
        exc,
    )


# listing ----------------------------------------------------------------------------------

#: Above every id (ids are lowercase hex digits and dashes), in byte order and in the
#: collations of PostgreSQL alike.
ID_TOP = "g"
_HEX = "0123456789abcdef"

#: The states a message that can still run is listed in.
LIVE_STATES: frozenset[str] = frozenset({"waiting", "scheduled", "pending", "leased"})


def id_at(seconds: float) -> str:
    """The start of the ids (UUIDv7) made in the millisecond of ``seconds``."""
    h = f"{max(0, int(seconds * 1000)):012x}"
    return f"{h[:8]}-{h[8:12]}"


def id_time(id: str) -> float | None:
    """When the UUIDv7 ``id`` was made (epoch seconds), or None for another kind of id."""
    try:
        return int(id[:8] + id[9:13], 16) / 1000 if len(id) >= 13 and id[8] == "-" else None
    except ValueError:
        return None


def above(prefix: str) -> str:
    """The lowest string above every id that starts with ``prefix``: the prefix without its
    trailing f's and dashes, its last digit raised by one ("01a-ff" gives "01b"). Made of
    hex digits and dashes only, so that it compares with ids the same way under any
    collation (a "~" would not: PostgreSQL's linguistic collations skip punctuation)."""
    stem = prefix.rstrip("f-")
    if not stem:
        return ID_TOP
    digit = _HEX.find(stem[-1])
    if digit < 0:
        return prefix + "~"  # not an id's prefix: nothing starts with it anyway
    return stem[:-1] + _HEX[digit + 1]


class Walk(NamedTuple):
    """The id range a listing walks: ``lo <= id < hi``, downwards (empty when lo >= hi)."""

    lo: str
    hi: str

    @property
    def empty(self) -> bool:
        return self.lo >= self.hi


def walk_of(query: MessageQuery, key_id: str | None = None) -> Walk:
    """The id range ``query`` walks: below its cursor, within its time range and id prefix,
    and, when it names a ``key``, only ``key_id`` (the id the key stands for; None: none,
    so nothing matches). Raises ValueError for a limit outside 1..LIST_LIMIT."""
    if not 1 <= query.limit <= LIST_LIMIT:
        raise ValueError(f"a page holds 1 to {LIST_LIMIT} rows, not {query.limit!r}")
    lo, hi = "", ID_TOP
    if query.cursor is not None:
        hi = query.cursor
    if query.since is not None:
        lo = max(lo, id_at(query.since))
    if query.until is not None:
        hi = min(hi, above(id_at(query.until)))
    if query.prefix:
        prefix = query.prefix.lower()
        lo, hi = max(lo, prefix), min(hi, above(prefix))
    if query.key is not None:
        if key_id is None:
            return Walk(ID_TOP, ID_TOP)
        lo, hi = max(lo, key_id), min(hi, above(key_id))
    return Walk(lo, hi)


def sources(query: MessageQuery) -> tuple[bool, bool]:
    """Whether ``query`` can match messages that can still run, and finished ones."""
    state = query.state
    return state is None or state in LIVE_STATES, state is None or state in FINAL_STATES


def error_type(reason: str) -> str | None:
    """The error type in a dead letter's reason (``base.dead_reason``), if it names one."""
    kind, colon, _ = reason.partition(": ")
    return kind if colon else None


class Sifted(NamedTuple):
    """What one source of a listing found: its rows, newest first, and how far down it
    looked (``reached``: every id of the source at or above it was looked at; None: the
    source was walked to the end of the range)."""

    rows: list[MessageRow]
    reached: str | None


def matches(query: MessageQuery, row: MessageRow) -> bool:
    """Whether ``row`` matches the fields of ``query`` that are not id ranges."""
    return (
        (query.state is None or row.state == query.state)
        and (query.queue is None or row.queue == query.queue)
        and (query.task is None or row.task == query.task)
        and (query.error is None or row.error == query.error)
    )


def sift(query: MessageQuery, walked: Iterable[MessageRow | None], cut_at: str | None) -> Sifted:
    """One source's part of a page: the rows among ``walked`` (the entries its index walk
    read, newest first; None for an entry that is gone, such as an expired outcome) that
    match ``query``, at most ``query.limit``. ``cut_at`` is the id of the last entry walked
    when the walk stopped at its budget (``LIST_SCAN``), None when it reached the end."""
    rows: list[MessageRow] = []
    for row in walked:
        if row is not None and matches(query, row):
            rows.append(row)
            if len(rows) == query.limit:
                return Sifted(rows, row.id)
    return Sifted(rows, cut_at)


def merge(query: MessageQuery, found: Iterable[Sifted]) -> MessagePage:
    """The page of ``query`` from what each source found: every row above the highest point
    a source stopped at (below it, that source has not looked yet), newest first, an id
    listed by two sources once (the first source given wins), at most ``query.limit``."""
    found = list(found)
    floor = max((f.reached for f in found if f.reached is not None), default=None)
    seen: dict[str, MessageRow] = {}
    for f in found:
        for row in f.rows:
            if (floor is None or row.id >= floor) and row.id not in seen:
                seen[row.id] = row
    rows = sorted(seen.values(), key=lambda r: r.id, reverse=True)
    if len(rows) >= query.limit:
        rows = rows[: query.limit]
        return MessagePage(rows, rows[-1].id)
    return MessagePage(rows, floor)


#: One store's rows within a walk, newest first (None: an entry gone meanwhile).
Rows = Callable[[Walk], Iterable[MessageRow | None]]


def page_in_process(
    query: MessageQuery, key_id: str | None, live: Rows, finished: Sequence[Rows]
) -> MessagePage:
    """One page of ``query`` over stores held in this process (memory's dicts, NATS's view):
    the ``live`` rows and each of the ``finished`` stores' rows within the walk, merged.
    ``key_id`` is the id ``query.key`` stands for (see ``walk_of``)."""
    walk = walk_of(query, key_id)
    if walk.empty:
        return MessagePage([])
    want_live, want_finished = sources(query)
    found = []
    if want_live:
        found.append(sift(query, live(walk), None))
    if want_finished:
        found.extend(sift(query, rows(walk), None) for rows in finished)
    return merge(query, found)


def inside(walk: Walk, ids: Iterable[str]) -> list[str]:
    """The ids within ``walk``'s range, newest first (a pass over all of them)."""
    return sorted((i for i in ids if walk.lo <= i < walk.hi), reverse=True)

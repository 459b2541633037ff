"""The Backend contract: what every broker module implements, and what they all share.

Every operation is batched: one call, one round trip (or one transaction) for many
messages. The conformance suite in ``tests/conformance/`` is the executable form of this
contract; a backend is done when it passes all of it.

Semantics every backend keeps (the suite checks each):

Enqueue
    ``enqueue(messages)`` stores the messages durably before it returns and returns, for each
    input, the id that now stands for it: its own id, or, when its ``key`` is already held by
    a message enqueued within that message's ``result_ttl``, the first message's id (nothing
    new is stored; a key on a message that keeps no outcome, ``result_ttl`` 0, therefore
    protects nothing). An id that already exists, as a message, a kept outcome or a dead
    letter, is not stored twice (sends may be retried). A follow-up whose ``after`` names an
    id that never gets an outcome waits until it is cancelled or purged.
    A message is ``waiting`` when it has ``after`` and that message has no stored outcome
    yet, or when it is a ``join`` whose members have not settled as its mode requires;
    ``scheduled`` when its due time (``max(now + delay, run_at)``, backend clock) is in the
    future; otherwise ``pending``. The backend's clock at enqueue is the message's
    ``sent_at`` (``inspect``), never the sender's ``created_at``.

Fetch
    ``fetch(queues, limit, worker, lease, wait)`` leases up to ``limit`` due messages, from
    the queues in
    the order given, within a queue highest ``priority`` first, then earliest due time, then
    id (FIFO). Each lease lasts the message's ``lease`` seconds (or ``lease`` if given) on the
    backend's clock. Every fetch increments the message's ``attempt`` (the fencing token).
    A message whose lease ran out is due again: the next fetch takes it over (and only then
    does the old attempt lose it: until a fetch takes it over it still counts as held by its
    attempt, for ``extend``, ``settle``, ``cancel``, ``stats`` and ``inspect``). When a lease
    has run out ``max_deliveries`` times without a settle, the fetch that finds it
    dead-letters it as poison instead of delivering it; expired and poison messages do not
    take a place in ``limit``. Each delivery's ``waited`` is the seconds, on the backend's
    clock, between the message's due time (its send, delay or ``run_at``; a retry's backoff's
    end; a lost lease's end) and this lease (``tests/conformance/test_fetch_waited.py``).
    A message whose expiry has passed is settled ``dead`` (expired) instead. Its expiry is
    resolved at enqueue on the backend's clock, as its due time is: the earlier of
    ``expires_at`` (absolute) and now + ``expires`` (relative), when set; a ``requeue``
    resolves a relative ``expires`` afresh from the time of the requeue.
    Two concurrent fetches never lease the same message. When nothing is due, fetch waits up
    to ``wait`` seconds for a message to become due (pushed where the broker can, polled
    otherwise) before it returns an empty list.

Extend, release
    ``extend(leases)`` pushes the lease deadline of each held delivery to now + the
    message's own ``lease`` (not a ``lease`` given to fetch) and returns the ids that are no
    longer held as that attempt (settled, or taken over).
    ``release(leases, delay=0.0)`` makes held messages due again ``delay`` seconds from now
    (backend clock; at once by default) without counting a failure or a lost delivery (a
    worker shutting down, or one deferring a message over its rate or concurrency limit);
    it returns how many it released.

Settle
    ``settle(outcomes)`` applies each outcome atomically and returns, per outcome, whether it
    was applied. An outcome is refused (``False``) unless its message is still leased as
    ``outcome.attempt``. Applying a final outcome (succeeded, failed, cancelled, dead) in one
    step: stores the result for ``result_ttl`` seconds (``dead`` also stores a dead letter),
    removes the message, makes every message waiting ``after`` it due, and advances every join
    it is a member of (firing the join message once when its mode is satisfied). The first
    stored outcome of an id wins: a later one never replaces it. ``retry`` makes the message
    scheduled ``retry_in`` seconds from now with ``failures + 1``.

Joins
    A join message's ``join.members`` are message ids. It fires (becomes due) exactly once:
    ``all`` when every member succeeded or any failed; ``all_settled`` when every member
    settled; ``any`` when one succeeded or all settled; ``race`` when one settled. Members
    already settled when the join is enqueued count at once; a member counts once, even if it
    is re-queued from the dead letters and settles again. With no members, ``all``, ``any``
    and ``all_settled`` are due at once and ``race`` never is (JavaScript's ``race([])``).
    The join message is then run by the worker like any other; the worker combines the
    members' results.

Results, wait
    ``results(ids)`` returns the stored, unexpired outcomes among ``ids``. ``wait(ids,
    timeout)`` returns as soon as at least one of ``ids`` has an outcome (all that have one),
    or an empty dict when ``timeout`` runs out. Backends push where the broker can push;
    polling backends poll adaptively.

Control
    ``cancel(ids)`` settles each waiting, scheduled or pending message as ``cancelled`` (its
    followers are released and its joins advanced, as for any final outcome) and returns the
    ids it settled so, in the order given. A leased message is not settled and not in the
    returned list: it is marked *cancel-requested* (its lease, attempt and outcome are left
    alone) and its worker learns of it through ``cancelling``. The mark stays with the
    message until it settles: after a lapsed lease, a ``release`` or a ``retry``, the next
    holder is told too. A settled or unknown id is left alone.
    ``dead_letters(queue, limit)`` lists dead letters, oldest first. ``requeue(ids)`` moves
    dead letters back to pending with fresh attempt, failure and lost-lease counts and
    forgets their stored outcome.
    ``purge_dead(ids)`` deletes dead letters (all when ids is None). ``purge(queue)`` deletes
    the queue's waiting, scheduled and pending messages. ``stats()`` counts by queue and
    state. ``inspect(id)`` tells all that is known of one id. ``heartbeat`` records a live
    worker for ``ttl`` seconds; ``retire`` removes its record. ``sweep()`` deletes expired
    results, keys, dead letters and worker records and returns how many rows it removed.

Pausing
    ``pause(queue, reason, until)`` pauses a queue for every worker: no fetch leases its
    messages until ``resume(queue)``, or until ``until`` (absolute, backend clock) when it is
    given, after which the pause ends by itself. Sends are still accepted, and work already
    leased is untouched (``extend``, ``settle``, ``release`` and ``cancel`` work as ever).
    Pausing a paused queue replaces its reason and ``until`` and keeps its ``since``; it
    returns the ``Pause`` as stored. An empty queue name, or an ``until`` that is not after
    the backend's now, raises ValueError and changes nothing. ``resume(queue)`` ends the
    pause at once, wakes fetches waiting on the queue, and returns whether it was paused (an
    expired pause is not). ``paused()`` returns the unexpired pauses by queue, as does
    ``stats().paused``.

Cancelling running work
    ``cancelling(leases)`` returns the ids among ``leases`` that are still held as that
    attempt (as for ``extend``) and whose cancellation was requested; a lease no longer held
    is simply not named. It changes nothing. Workers call it with every lease they hold at
    least once a second, so it must cost one round trip (a read where the broker can) for
    any number of leases. The holder then settles the message with a final
    ``Outcome(state="cancelled")``, applied as any final outcome (followers released, joins
    advanced).

Coordination
    ``lock(name, owner, ttl)`` takes the named lock for ``owner`` when it is free, has
    expired, or is already held by ``owner`` (a renewal), setting its expiry to now + ``ttl``
    seconds on the backend's clock; it returns True iff ``owner`` holds the lock after the
    call. While one owner holds an unexpired lock every other owner's call returns False
    and changes nothing; two concurrent calls never both return True. ``ttl`` must be > 0.
    ``unlock(name, owner)`` frees the lock at once if ``owner`` holds it (expired or not);
    otherwise it does nothing. Locks need no other cleanup (an expired lock is free), and
    ``sweep`` may delete expired ones.

Schedules
    The scheduler's memory of what it sent (see ``pigeon.scheduler``): per schedule name, a
    *mark*, the backend time (epoch seconds) up to which every tick of the schedule has been
    sent. ``schedules(names)`` returns the stored marks among ``names`` (a name never marked
    is absent), in one round trip however many names. ``mark_schedules(marks)`` stores each
    mark as ``max(stored, given)``, all in one round trip: a mark never moves back, so a
    stalled ex-leader that marks late cannot rewind what its successor recorded. Marks are
    exactly the floats given (not rounded), never expire, and ``sweep`` leaves them alone
    (one tiny record per schedule).

Rate limits
    ``take(takes)`` hands out start slots from token buckets by the generic cell rate
    algorithm, one ``Take`` at a time in the order given, and returns for each the seconds
    from now (backend clock) until its slot. Each bucket keeps one time ``tat`` (absent:
    none yet). For a take at ``now`` its slot is ``wait = max(0, tat - (burst - 1) *
    interval - now)`` seconds away (0 when the bucket is absent or ``tat`` passed). When
    ``wait <= hold`` the slot is reserved: ``tat`` becomes ``max(tat, now) + interval``;
    otherwise nothing changes (the caller tries again later). So starts are at least
    ``interval`` apart beyond the first ``burst``, across every caller of the bucket.
    A bucket whose ``tat`` has passed is the same as an absent one: ``sweep`` may delete it.

Concurrency limits
    ``acquire(slots)`` takes one place of the limit ``slot.name`` for ``slot.holder``, for
    ``slot.ttl`` seconds on the backend's clock, one slot at a time in the order given; it
    returns, per slot, whether the holder has a place after the call. A holder that already
    has an unexpired place of that name keeps it (its expiry moves to now + ``ttl``: how
    places are renewed); otherwise it gets one iff fewer than ``slot.limit`` unexpired places
    of that name are held. ``release_slots(slots)`` gives the holders' places back at once
    (``limit`` and ``ttl`` are ignored; an unknown one is left alone). A place whose holder
    died runs out after its ``ttl``: ``sweep`` may delete expired places.

Progress
    ``report(progress, ttl)`` stores each ``Progress`` as the latest of its message id, kept
    ``ttl`` seconds (a later report replaces it). ``progress(ids)`` returns the stored,
    unexpired latest reports among ``ids``.

Listing
    ``list_messages(query)`` returns one ``MessagePage`` of the messages that ``query``
    (a ``MessageQuery``) matches, newest first: ids are time-ordered (UUIDv7), so newest
    first is id descending and a time range (``since``/``until``, the time in the id, i.e.
    when the message was made) is a range of ids. It lists the messages that can still run
    (waiting, scheduled, pending, leased) and the finished ones whose outcome is still kept
    (``result_ttl``; a dead letter for its own TTL); a message whose outcome is not kept
    (``fire``, ``result_ttl`` 0) leaves no history once it settled. A message's row moves
    between states as the message does: each page reads the current state. It never counts
    everything and never scans everything: each source (live messages, kept outcomes, dead
    letters) is walked down an index in id order from the cursor, at most ``LIST_SCAN``
    entries per page (``key`` is a point lookup; ``queue`` and ``task`` have an index of
    their own on the backends that say so; id prefix and time range bound the walk; state
    and error type are checked on the entries walked). A page may therefore hold fewer than
    ``limit`` rows, even none, while ``next`` is not None: pass it back as
    ``query.cursor`` to go on. ``next`` is None only when nothing older matches. Paging
    never repeats or skips a row of a message that stays put; ``sweep`` drops the entries
    of expired outcomes.

Events
    ``publish(events)`` appends events to one log shared by every client of the backend, in
    the order given; the log keeps at least the newest ``EVENTS_KEPT`` events (older ones may
    be dropped). ``read_events(after, limit, wait)`` returns ``(cursor, events)``: up to
    ``limit`` events published after the cursor ``after``, oldest first, waiting up to
    ``wait`` seconds for one when there is none yet, and the cursor to pass next time (an
    opaque string; ``after=None`` starts at the end of the log: only events published after
    the call are returned).
"""

from __future__ import annotations

import asyncio
import operator
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec

from pigeon.errors import ConfigError
from pigeon.message import (
    DeadLetter,
    Delivery,
    Event,
    Failure,
    Lease,
    Message,
    MessageInfo,
    Outcome,
    Pause,
    Progress,
    Result,
    Slot,
    State,
    Stats,
    Take,
    WorkerInfo,
)

#: Dead letters are kept this long (seconds) unless the App says otherwise.
DEAD_LETTER_TTL = 7 * 86400.0

#: The event log keeps at least this many of the newest events.
EVENTS_KEPT = 10_000

#: A result with follow-ups or joins waiting on it is kept this long even when its ttl is 0.
KEEP_FOR_DEPENDENTS = 86400.0

#: ``list_messages`` walks at most this many index entries per source and page.
LIST_SCAN = 1000

#: A page of ``list_messages`` holds at most this many rows.
LIST_LIMIT = 500

#: ``sweep`` and ``purge`` delete at most this many rows per statement, transaction or
#: script call, so that they never hold locks (or block a Redis server) long.
SWEEP_CHUNK = 5000


@runtime_checkable
class Backend(Protocol):
    """The operations every broker module implements. See the module docstring."""

    url: str
    """The URL the backend was made from, with any password replaced by ``***``."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def time(self) -> float: ...

    async def enqueue(self, messages: Sequence[Message]) -> list[str]: ...
    async def fetch(
        self,
        queues: Sequence[str],
        limit: int,
        worker: str,
        lease: float | None = None,
        wait: float = 0.0,
    ) -> list[Delivery]: ...
    async def extend(self, leases: Sequence[Lease]) -> set[str]: ...
    async def settle(self, outcomes: Sequence[Outcome]) -> list[bool]: ...
    async def release(self, leases: Sequence[Lease], delay: float = 0.0) -> int: ...

    async def results(self, ids: Collection[str]) -> dict[str, Result]: ...
    async def wait(self, ids: Collection[str], timeout: float) -> dict[str, Result]: ...

    async def cancel(self, ids: Collection[str]) -> list[str]: ...
    async def dead_letters(
        self, queue: str | None = None, limit: int = 100
    ) -> list[DeadLetter]: ...
    async def requeue(self, ids: Collection[str]) -> int: ...
    async def purge_dead(self, ids: Collection[str] | None = None) -> int: ...
    async def purge(self, queue: str) -> int: ...
    async def inspect(self, id: str) -> MessageInfo | None: ...
    async def stats(self) -> Stats: ...
    async def heartbeat(self, info: WorkerInfo, ttl: float) -> None: ...
    async def retire(self, worker: str) -> None: ...
    async def sweep(self) -> int: ...

    async def pause(
        self, queue: str, reason: str | None = None, until: float | None = None
    ) -> Pause: ...
    async def resume(self, queue: str) -> bool: ...
    async def paused(self) -> dict[str, Pause]: ...

    async def cancelling(self, leases: Sequence[Lease]) -> set[str]: ...
    async def lock(self, name: str, owner: str, ttl: float) -> bool: ...
    async def unlock(self, name: str, owner: str) -> None: ...
    async def schedules(self, names: Collection[str]) -> dict[str, float]: ...
    async def mark_schedules(self, marks: Mapping[str, float]) -> None: ...
    async def take(self, takes: Sequence[Take]) -> list[float]: ...
    async def acquire(self, slots: Sequence[Slot]) -> list[bool]: ...
    async def release_slots(self, slots: Sequence[Slot]) -> None: ...

    async def report(self, progress: Sequence[Progress], ttl: float) -> None: ...
    async def progress(self, ids: Collection[str]) -> dict[str, Progress]: ...
    async def publish(self, events: Sequence[Event]) -> None: ...
    async def read_events(
        self, after: str | None, limit: int = 1000, wait: float = 0.0
    ) -> tuple[str, list[Event]]: ...

    async def list_messages(self, query: MessageQuery) -> MessagePage: ...


class MessageQuery(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What ``list_messages`` lists: every field given must match (None: any).

    Indexed: ``key`` (one lookup), ``prefix``, ``since``/``until`` and the cursor (ranges of
    the id index), and ``queue`` or ``task`` where the backend keeps an index of them (see
    each backend's ``list_messages``). ``state`` and ``error`` are checked on the entries
    walked, at most ``LIST_SCAN`` of them per source and page.
    """

    queue: str | None = None
    task: str | None = None
    state: State | None = None
    #: The idempotency key the message was sent with (while the key is kept).
    key: str | None = None
    #: Made at or after this time (epoch seconds, the time in the id).
    since: float | None = None
    #: Made at or before this time.
    until: float | None = None
    #: The type of the error of a failed, dead or cancelled message (``Failure.type``).
    error: str | None = None
    #: The start of the message's id.
    prefix: str | None = None
    #: ``MessagePage.next`` of the page before; None for the newest page.
    cursor: str | None = None
    limit: int = 50


class MessageRow(msgspec.Struct, frozen=True, omit_defaults=True):
    """One message of a page, as ``list_messages`` found it."""

    id: str
    state: State
    queue: str
    task: str
    #: The type of its error, for a finished message that has one.
    error: str | None = None


class MessagePage(msgspec.Struct, frozen=True):
    """One page of ``list_messages``: rows newest first, and the cursor of the next page
    (None when nothing older matches)."""

    rows: list[MessageRow]
    next: str | None = None


@runtime_checkable
class TransactionalBackend(Protocol):
    """A backend that can also write messages through the application's own database
    connection, inside the application's transaction (``App.transaction``): they become
    visible only if that transaction commits. A capability, not part of ``Backend``."""

    async def enqueue_in(self, connection: Any, messages: Sequence[Message]) -> list[str]: ...


@runtime_checkable
class SyncTransactionalBackend(Protocol):
    """A backend that writes messages through a synchronous application connection (the
    ``sqlite3`` connection of ``sqlite://``), for ``with app.transaction(conn):``."""

    def enqueue_in_sync(self, connection: Any, messages: Sequence[Message]) -> list[str]: ...


@runtime_checkable
class MigratingBackend(Protocol):
    """A backend whose storage has a versioned schema to create and upgrade
    (``pigeon migrate``). A capability, not part of ``Backend``."""

    async def migrate(self) -> list[str]: ...
    async def schema_version(self) -> int: ...


@runtime_checkable
class RetryingBackend(Protocol):
    """A backend whose calls keep retrying while the server is unreachable (a restart, a
    failover, a dropped connection), for up to ``retry_for`` seconds per call, before they
    raise BackendError (``redis://``: see its ``retry_for`` URL parameter). Workers keep the
    default, long enough to ride out a restart; an interactive caller that would rather say
    at once that the server is down (the ``pigeon`` CLI) lowers it before the first call. A
    capability, not part of ``Backend``: the other backends do not retry."""

    retry_for: float


_SECRET_WORDS = ("password", "secret")


def redact(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``, safe for logs and errors:
    the one before ``@`` and any query parameter whose name says password or secret
    (``ssl_password=``, the passphrase of a client key)."""
    parts = urlsplit(url)
    if parts.password is None and not any(w in parts.query.lower() for w in _SECRET_WORDS):
        return url  # as given (urlunsplit would turn sqlite:///x into sqlite:/x)
    if any(w in parts.query.lower() for w in _SECRET_WORDS):
        query = "&".join(
            f"{name}=***" if any(w in name.lower() for w in _SECRET_WORDS) else item
            for item in parts.query.split("&")
            for name in [item.split("=", 1)[0]]
        )
        parts = parts._replace(query=query)
    if parts.password is None:
        return urlunsplit(parts)
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


class BrokerURL(NamedTuple):
    """A broker URL read by ``read_url``: pigeon's own query parameters taken out."""

    parts: SplitResult
    """The URL as given, split."""
    own: dict[str, str]
    """pigeon's own query parameters that were given (the last value of a repeated one)."""
    rest: str
    """The URL without them: what the broker's client library is given."""


def read_url(url: str, schemes: Collection[str], broker: str, own: Collection[str]) -> BrokerURL:
    """Check that ``url`` is one of ``schemes`` (any case) and take the query parameters
    named in ``own`` (pigeon's, such as ``prefix`` or ``schema``) out of it; the others are
    left for the broker's client. Raises ConfigError naming ``broker`` and the redacted URL.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() not in schemes:
        raise ConfigError(f"not a {broker} URL: {redact(url)!r}")
    found: dict[str, str] = {}
    rest: list[tuple[str, str]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in own:
            found[name] = value
        else:
            rest.append((name, value))
    return BrokerURL(parts, found, urlunsplit(parts._replace(query=urlencode(rest))))


#: The states a message settles in for good (an outcome is stored).
FinalState = Literal["succeeded", "failed", "cancelled", "dead"]


class Done(NamedTuple):
    """A message leaving a backend's store for good, and the outcome to store for it.

    Made by whatever took the message (a settle, a cancel, a lapsed lease past
    ``max_deliveries``, an expired message) and stored by the backend in the same step.
    """

    id: str
    queue: str
    task: str
    #: The encoded message, as stored (kept in its dead letter when ``state`` is ``dead``).
    body: bytes
    state: FinalState
    value: msgspec.Raw | None
    error: Failure | None
    #: Seconds to keep the outcome (0: not kept, unless something waits on it).
    result_ttl: float


def dead_reason(error: Failure | None) -> str:
    """The reason a dead letter gives for ``error`` (what ``pigeon dlq`` shows)."""
    return f"{error.type}: {error.message}" if error is not None else "dead"


def join_fired(mode: str, total: int, settled: int, succeeded: int) -> bool:
    """Whether a join with these counts is satisfied (the rule every backend shares)."""
    failed = settled - succeeded
    if mode == "all":
        return failed > 0 or settled >= total
    if mode == "all_settled":
        return settled >= total
    if mode == "any":
        return succeeded > 0 or settled >= total
    if mode == "race":
        return settled > 0  # JavaScript: race([]) never settles
    raise ValueError(f"unknown join mode {mode!r}")


class PlainOptions(NamedTuple):
    """What the messages of a plain batch share (see ``plain_options``)."""

    queue: str
    task: str
    priority: int
    delay: float
    run_at: float | None
    max_deliveries: int
    lease: float
    expires_at: float | None
    result_ttl: float
    #: Relative (seconds from enqueue, backend clock), like ``delay``.
    expires: float | None


_plain_fields = operator.attrgetter(
    "queue", "task", "priority", "delay", "run_at", "max_deliveries", "lease", "expires_at",
    "result_ttl", "expires", "key", "after", "join",
)  # fmt: skip
_NOT_LINKED = (None, None, None)


def plain_options(messages: Sequence[Message]) -> PlainOptions | None:
    """The options every message shares when none has a key, a follow-up or a join and all
    share their queue, task and every other stored option (a bulk send, or a burst of one
    task's sends), else None. Such a batch needs neither deduplication by key nor links to
    other messages, and backends store it along a leaner path (only ids and bodies differ)."""
    first = _plain_fields(messages[0])
    if first[10:] != _NOT_LINKED:
        return None
    for m in messages:
        if _plain_fields(m) != first:
            return None
    return PlainOptions(*first[:10])


class Poller:
    """Adaptive polling for backends that cannot push (SQLite).

    Waits start fast (so a round trip costs about a millisecond) and slow down while
    nothing happens, so an idle worker or waiter costs little CPU. A settle or enqueue made
    through the same backend object in this process wakes waiters at once through ``kick``.
    """

    def __init__(self, fastest: float = 0.0005, slowest: float = 0.05, patience: float = 0.2):
        self.fastest = fastest
        self.slowest = slowest
        self.patience = patience  # seconds of fast polling before backing off
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def kick(self) -> None:
        """Something changed in this process: wake every poller now."""
        if self._event is not None:
            self._event.set()

    async def sleep(self, idle_since: float) -> None:
        """Sleep for the next polling interval, or until kicked."""
        idle = time.monotonic() - idle_since
        if idle < self.patience:
            delay = self.fastest
        else:
            delay = min(self.slowest, self.fastest * (1 + (idle - self.patience) * 100))
        loop = asyncio.get_running_loop()
        if self._event is None or self._loop is not loop:
            # An asyncio.Event belongs to one loop; a backend may outlive the loop it was
            # first used on (an App that moves to a new loop), so make one per loop.
            self._event = asyncio.Event()
            self._loop = loop
        event = self._event
        try:
            async with asyncio.timeout(delay):
                await event.wait()
        except TimeoutError:
            pass
        if event.is_set():
            # Replace rather than clear, so every sleeper woken by this kick sees it.
            self._event = asyncio.Event()

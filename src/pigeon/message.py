"""The records that travel between the App, the backends and the workers.

Everything here is a msgspec Struct so that it encodes in one pass and costs little to
build. Nothing here knows about task functions or about a particular broker.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any, Literal

import msgspec

#: The states a message can be in, as the CLI shows them.
#:   waiting    held until another message (``after``) settles or a join fires
#:   scheduled  pending, but not due before its run_at
#:   pending    ready to be fetched
#:   leased     held by a worker until its lease runs out
#:   succeeded / failed / cancelled / dead: settled, an outcome is stored
State = Literal[
    "waiting", "scheduled", "pending", "leased", "succeeded", "failed", "cancelled", "dead"
]
FINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled", "dead"})

#: How a follow-up message depends on the message named by its ``after``.
Mode = Literal["then", "catch", "finally"]
#: How a join combines its members (JavaScript's Promise combinators).
JoinMode = Literal["all", "any", "race", "all_settled"]

#: The built-in task of a durable join's message (``Promise.all(...).then(task)``): the worker
#: combines its members' outcomes instead of calling a function.
JOIN_TASK = "pigeon.join"

EMPTY_ARGS = msgspec.Raw(b"[]")
EMPTY_KWARGS = msgspec.Raw(b"{}")

_rng = random.Random()
_last_ms = 0
_seq = 0
_VARIANT = 0b10 << 62  # the UUID variant bits, above an id's 62 random bits


def _reseed() -> None:
    global _last_ms, _seq
    _rng.seed(os.urandom(16))
    _last_ms = _seq = 0


os.register_at_fork(after_in_child=_reseed)


def new_id() -> str:
    """A UUIDv7 string: time-ordered (millisecond, then a counter) and random beyond that.

    Ids made by one process sort in the order they were made, which keeps FIFO order cheap to
    index and makes ids readable as a rough timeline.
    """
    global _last_ms, _seq
    ms = time.time_ns() // 1_000_000
    if ms <= _last_ms:
        ms = _last_ms
        _seq += 1
        if _seq > 0xFFF:  # 4,096 ids in one millisecond: borrow the next millisecond
            ms += 1
            _seq = 0
    else:
        _seq = _rng.getrandbits(8)
    _last_ms = ms
    rand = _rng.getrandbits(62)
    value = (ms << 80) | (0x7 << 76) | (_seq << 64) | (0b10 << 62) | rand
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_ids(n: int) -> list[str]:
    """``n`` ids as ``new_id`` makes them, in one go (for a bulk send): each sorts after the
    one before. Within one millisecond a 12-bit counter orders them; past 4,096 ids the
    counter borrows the next millisecond. The random bits of all of them are drawn at once
    (``os.urandom``) and cut from one hex string: about a microsecond less per id than
    formatting each."""
    global _last_ms, _seq
    if n <= 0:
        return []
    ms = time.time_ns() // 1_000_000
    if ms <= _last_ms:
        ms = _last_ms
        seq = _seq + 1
    else:
        seq = _rng.getrandbits(8)
    prefix = _id_prefix(ms)
    # 8 random bytes per id, the first of each with the variant's top bits (0b10)
    raw = bytearray(os.urandom(8 * n))
    raw[0::8] = raw[0::8].translate(_WITH_VARIANT)
    hexed = raw.hex()
    counters = _COUNTERS
    ids: list[str] = []
    append = ids.append
    for at in range(0, 16 * n, 16):
        if seq > 0xFFF:  # 4,096 ids in one millisecond: borrow the next millisecond
            ms += 1
            seq = 0
            prefix = _id_prefix(ms)
        # version 7 is in the prefix; then the counter, the variant and 62 random bits
        append(f"{prefix}{counters[seq]}{hexed[at : at + 4]}-{hexed[at + 4 : at + 16]}")
        seq += 1
    _last_ms = ms
    _seq = seq - 1
    return ids


#: The counter of an id as its 3 hex digits and the dash after them, by value.
_COUNTERS = [f"{i:03x}-" for i in range(0x1000)]
#: A byte with its top two bits set to the UUID variant (0b10), by value.
_WITH_VARIANT = bytes(0x80 | (b & 0x3F) for b in range(256))


def _id_prefix(ms: int) -> str:
    """The first 15 characters of the ids of millisecond ``ms``: its 48 bits and version 7."""
    h = f"{ms:012x}"
    return f"{h[:8]}-{h[8:]}-7"


class JoinSpec(msgspec.Struct, frozen=True, array_like=True):
    """Makes a message a join: it is held until its members settle as ``mode`` requires."""

    members: list[str]
    mode: JoinMode


class Message(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    """One request for work, as stored in the backend.

    Times are seconds. ``delay`` is relative to the backend's clock at enqueue; ``run_at`` is
    an absolute epoch time (the later of the two wins). Expiry likewise: ``expires`` is
    relative, resolved on the backend's clock at enqueue (and afresh by a ``requeue``), and
    ``expires_at`` absolute; when both are set the earlier wins. ``created_at`` is the
    sender's clock when it made the message, for the record only: no backend decides anything
    by it (the time the backend stored it is ``MessageInfo.sent_at``). ``result_ttl`` 0
    keeps no outcome (``fire``). ``after``/``mode`` make this a follow-up of another message:
    it is held until that message settles, then runs with its outcome. ``join`` makes this a
    join message.

    (``gc=False``: its fields, strings, numbers and a dict of strings, can never lead back
    to it, so the cyclic garbage collector need not track the many a bulk send makes.)
    """

    id: str
    task: str
    queue: str = "default"
    args: msgspec.Raw = EMPTY_ARGS
    kwargs: msgspec.Raw = EMPTY_KWARGS
    priority: int = 0
    delay: float = 0.0
    run_at: float | None = None
    max_attempts: int = 1
    max_deliveries: int = 3
    timeout: float | None = None
    lease: float = 30.0
    key: str | None = None
    expires_at: float | None = None
    result_ttl: float = 86400.0
    after: str | None = None
    mode: Mode | None = None
    join: JoinSpec | None = None
    headers: dict[str, str] = {}
    created_at: float = 0.0
    expires: float | None = None


class Delivery(msgspec.Struct, frozen=True):
    """A message leased to one worker by ``fetch``.

    ``body`` is the message as stored (decoded by the worker, which dead-letters it when it
    cannot). ``attempt`` counts the deliveries of this message and is the fencing token a
    settle must carry. ``failures`` counts the failed attempts so far (retries spent).
    ``lease`` is the length of the lease in seconds (the worker extends it a third of the way
    through). ``waited`` is how long the message was due before this lease, in seconds of
    the backend's clock (so a worker's skewed clock does not change it): since it was sent
    (or its delay or ``run_at`` passed), since its retry's backoff ended, or since the lease
    it lost ran out. A follow-up's counts from its own send's due time, before its parent
    settled. None from a backend that does not tell.
    """

    id: str
    attempt: int
    failures: int
    body: bytes
    lease: float = 30.0
    waited: float | None = None


class Lease(msgspec.Struct, frozen=True, array_like=True):
    """Names one held delivery: the message id and the attempt it was leased as."""

    id: str
    attempt: int


class Failure(msgspec.Struct, frozen=True, omit_defaults=True):
    """Why a message failed: the remote exception, as a ``catch`` follow-up receives it."""

    type: str
    message: str
    traceback: str = ""
    id: str = ""


class Settled(msgspec.Struct, frozen=True, omit_defaults=True):
    """One entry of ``Promise.all_settled``: ``fulfilled`` with a value or ``rejected``."""

    status: Literal["fulfilled", "rejected"]
    value: Any = None
    reason: Any = None


OutcomeState = Literal["succeeded", "failed", "retry", "cancelled", "dead"]


class Outcome(msgspec.Struct, frozen=True, omit_defaults=True):
    """What a worker reports for one delivery, applied atomically by ``settle``.

    - ``succeeded``: ``value`` (encoded result) is stored for ``result_ttl`` seconds.
    - ``failed`` / ``dead``: ``error`` is stored; ``dead`` also keeps the message in the
      dead-letter store with ``error`` as the reason, from where it can be re-queued.
    - ``retry``: nothing is stored; the message is pending again ``retry_in`` seconds from
      now (backend clock) with one more failure counted.
    - ``cancelled``: the outcome says so.
    ``attempt`` is the fencing token: the settle is refused unless the message is still
    leased as that attempt.
    """

    id: str
    attempt: int
    state: OutcomeState
    value: msgspec.Raw | None = None
    error: Failure | None = None
    retry_in: float = 0.0
    result_ttl: float = 86400.0


class Result(msgspec.Struct, frozen=True, omit_defaults=True):
    """A stored outcome, as ``results`` and ``wait`` return it."""

    id: str
    state: Literal["succeeded", "failed", "cancelled", "dead"]
    value: msgspec.Raw | None = None
    error: Failure | None = None
    settled_at: float = 0.0


class DeadLetter(msgspec.Struct, frozen=True):
    """A message that will not run again unless re-queued, with the reason why."""

    id: str
    queue: str
    task: str
    reason: str
    died_at: float
    body: bytes


class MessageInfo(msgspec.Struct, frozen=True, omit_defaults=True):
    """Everything the backend knows of one message id, for ``pigeon inspect``."""

    id: str
    state: State
    queue: str = ""
    task: str = ""
    attempt: int = 0
    failures: int = 0
    run_at: float | None = None
    lease_until: float | None = None
    worker: str | None = None
    result: Result | None = None
    reason: str | None = None
    body: bytes | None = None
    cancel_requested: bool = False
    """``cancel()`` was asked while the message was leased: its worker is told to stop it."""
    sent_at: float | None = None
    """When the backend stored the message, on the backend's clock (not the sender's)."""


class QueueStats(msgspec.Struct):
    """Counts of the messages of one queue by state."""

    waiting: int = 0
    scheduled: int = 0
    pending: int = 0
    leased: int = 0
    dead: int = 0


class WorkerInfo(msgspec.Struct, frozen=True, omit_defaults=True):
    """A worker process's heartbeat record."""

    id: str
    host: str
    pid: int
    queues: list[str]
    concurrency: int
    running: int = 0
    done: int = 0
    started_at: float = 0.0
    last_seen: float = 0.0
    #: Seconds before ``last_seen`` that a fetch of the worker's last answered, and that one
    #: last brought it messages; None: not yet. Ages, not times: the worker's clock is never
    #: compared with the backend's (``last_seen`` is the backend's).
    fetch_age: float | None = None
    work_age: float | None = None


class Pause(msgspec.Struct, frozen=True):
    """A paused queue (``Backend.pause``): its messages are not fetched until it is resumed,
    or until ``until`` (backend clock, epoch seconds) when that is set. ``since`` is when it
    was first paused (a pause renewed keeps it)."""

    queue: str
    reason: str | None
    since: float
    until: float | None


class Stats(msgspec.Struct):
    """What ``pigeon status`` shows: per-queue counts, stored outcomes and live workers."""

    queues: dict[str, QueueStats]
    results: int
    dead: int
    workers: list[WorkerInfo]
    #: The paused queues (``Backend.paused``), whether or not they hold messages.
    paused: dict[str, Pause] = msgspec.field(default_factory=dict)


class Take(msgspec.Struct, frozen=True, array_like=True):
    """One request for a start slot from the rate-limit bucket ``bucket`` (``take``).

    ``interval`` is the time between two starts (1 / rate, seconds); ``burst`` how many may
    start back to back; ``hold`` the furthest ahead (seconds) a slot may be reserved.
    """

    bucket: str
    interval: float
    burst: int = 1
    hold: float = 0.0


class Slot(msgspec.Struct, frozen=True, array_like=True):
    """One of ``limit`` leased places of the concurrency limit ``name``, held by ``holder``
    (a message id and attempt) for ``ttl`` seconds unless renewed (``acquire``)."""

    name: str
    holder: str
    limit: int = 1
    ttl: float = 30.0


class Progress(msgspec.Struct, frozen=True, omit_defaults=True):
    """How far a running message has got, as its task last reported (``report``).

    ``fraction`` is 0.0-1.0, or None when the task only says what it is doing; ``at`` is the
    reporting worker's clock (epoch seconds).
    """

    id: str
    fraction: float | None = None
    text: str = ""
    at: float = 0.0


EventKind = Literal[
    "sent",
    "started",
    "retried",
    "succeeded",
    "failed",
    "cancelled",
    "dead",
    "released",
    "requeued",
    "purged",
]


class Event(msgspec.Struct, frozen=True, omit_defaults=True):
    """One thing that happened to a message, for monitoring (``app.events()``).

    ``at`` is the publisher's clock (epoch seconds); ``error`` is ``Type: message`` for
    retried, failed and dead events; ``worker`` is the worker's id for worker events.
    """

    kind: EventKind
    id: str
    task: str = ""
    queue: str = ""
    at: float = 0.0
    attempt: int = 0
    worker: str = ""
    error: str = ""

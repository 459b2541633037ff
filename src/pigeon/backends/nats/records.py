"""What the NATS backend stores: one record per subject of the stream, and how each is named
and encoded.

Every subject of the stream ``S`` holds at most one message (``max_msgs_per_subject=1``),
its record. Records are JSON-encoded structs; an empty message is a *delete marker*
(the record is absent), written with ``Nats-TTL: 1`` so that the server drops it soon.

=============  ==============================================================
subject        record
=============  ==============================================================
``S.m.<id>``   ``Record``: a message's whole life (waiting, pending, leased, and
               after it settled a tombstone, ``done`` or ``dead``, that holds its
               outcome and dead letter, with ``Nats-TTL`` as long as either is kept,
               so that its id is not stored twice)
``S.k.<key>``  ``KeyHold``: the id an idempotency key stands for, same TTL
``S.w.<id>``   ``WorkerRecord``: a live worker (TTL: its heartbeat's)
``S.l.<name>`` ``LockRecord``; ``S.b.<name>`` ``Bucket`` (GCRA);
               ``S.s.<name>`` ``Places`` (concurrency); ``S.c.<name>`` ``Mark``
``S.p.<queue>`` ``PauseRecord``; ``S.g.<id>`` ``ProgressRecord`` (TTL)
``S.e.<id>``   ``EventRecord`` (one subject per event, TTL ``EVENT_TTL``)
``S.t.<client>`` the clock and barrier tick of one backend object (TTL 60 s)
=============  ==============================================================

Names that are not already subject-safe (keys, queues, lock names) are written as ``~``
and their UTF-8 in unpadded base64url (``token``), so any string is one token.
"""

from __future__ import annotations

import base64
import math
import re
from typing import Literal, NamedTuple

import msgspec

from pigeon.codec import decode_result_record, encode_result_record
from pigeon.message import Event, Failure, Pause, Progress, Result, WorkerInfo

#: Seconds an event record is kept (the log also keeps at most ``EVENTS_KEPT`` in view).
EVENT_TTL = 3600

_SAFE = re.compile(r"[A-Za-z0-9_-]+")

RecordState = Literal["waiting", "pending", "leased", "done", "dead"]
LIVE = frozenset({"waiting", "pending", "leased"})


def token(name: str) -> str:
    """``name`` as one subject token, reversibly (see the module docstring)."""
    if _SAFE.fullmatch(name):
        return name
    return "~" + base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")


def untoken(tok: str) -> str:
    """The name ``token`` made ``tok`` from."""
    if not tok.startswith("~"):
        return tok
    raw = tok[1:]
    return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()


def ttl_header(seconds: float) -> dict[str, str]:
    """The ``Nats-TTL`` header of a record kept ``seconds`` (whole seconds, rounded up,
    at least 1: the server's granularity; readers also check the exact ``until``)."""
    return {"Nats-TTL": str(max(1, math.ceil(seconds)))}


DELETE_TTL = ttl_header(1)


class JoinCounts(msgspec.Struct, array_like=True):
    """A join message's counters (``shared.start_join``)."""

    mode: str
    total: int
    settled: int
    succeeded: int
    fired: bool


class Record(msgspec.Struct, omit_defaults=True, kw_only=True):
    """One message's record at ``S.m.<id>``. Times are backend (server) epoch seconds."""

    id: str
    queue: str
    task: str
    state: RecordState
    body: bytes = b""
    priority: int = 0
    due: float = 0.0
    attempt: int = 0
    failures: int = 0
    #: Leases that ran out without a settle (poison at ``max_deliveries``).
    lost: int = 0
    lease_until: float = 0.0
    worker: str | None = None
    lease: float = 30.0
    max_deliveries: int = 3
    expires_at: float | None = None
    result_ttl: float = 86400.0
    cancel: bool = False
    sent_at: float = 0.0
    after: str | None = None
    #: Messages waiting ``after`` this one (made due when it settles).
    followers: list[str] = []
    #: Joins this message is a member of, not yet counted.
    joins: list[str] = []
    join: JoinCounts | None = None
    #: A join's live members not yet told of it (past its first batch: ``settling``).
    linking: list[str] = []
    key: str | None = None
    # a tombstone (done, dead) ------------------------------------------------------
    #: The final state it settled in.
    outcome: str | None = None
    #: When the tombstone may go (the later of its outcome's and its dead letter's end).
    until: float = 0.0
    reason: str = ""
    died_at: float = 0.0
    #: When its dead letter expires.
    dead_until: float = 0.0
    #: The error type of its outcome (for listing).
    error: str | None = None
    #: Its outcome (``codec``'s result record; empty: none kept) and when that expires.
    result: msgspec.Raw = msgspec.Raw(b"")
    result_until: float = 0.0


def kept_of(rec: Record) -> Kept | None:
    """The outcome a tombstone keeps, if any."""
    if rec.state in LIVE or not len(rec.result):
        return None
    return Kept(decode_result_record(bytes(rec.result)), rec.result_until)


def result_field(result: Result) -> msgspec.Raw:
    return msgspec.Raw(encode_result_record(result))


class Kept(NamedTuple):
    """A kept outcome, as the view holds it (read from its message's tombstone)."""

    result: Result
    until: float


class KeyHold(msgspec.Struct, array_like=True):
    id: str
    until: float


class WorkerRecord(msgspec.Struct, array_like=True):
    info: WorkerInfo
    until: float


class LockRecord(msgspec.Struct, array_like=True):
    owner: str
    until: float


class Bucket(msgspec.Struct, array_like=True):
    tat: float


class Places(msgspec.Struct, array_like=True):
    holders: dict[str, float]


class Mark(msgspec.Struct, array_like=True):
    mark: float


class PauseRecord(msgspec.Struct, array_like=True):
    pause: Pause


class ProgressRecord(msgspec.Struct, array_like=True):
    progress: Progress
    until: float


class EventRecord(msgspec.Struct, array_like=True):
    event: Event


_encoder = msgspec.json.Encoder()
encode = _encoder.encode

RECORD = msgspec.json.Decoder(Record)
KEY = msgspec.json.Decoder(KeyHold)
WORKER = msgspec.json.Decoder(WorkerRecord)
LOCK = msgspec.json.Decoder(LockRecord)
BUCKET = msgspec.json.Decoder(Bucket)
PLACES = msgspec.json.Decoder(Places)
MARK = msgspec.json.Decoder(Mark)
PAUSE = msgspec.json.Decoder(PauseRecord)
PROGRESS = msgspec.json.Decoder(ProgressRecord)
EVENT = msgspec.json.Decoder(EventRecord)


class Subjects:
    """The subjects of one stream's records."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self.prefix = f"{stream}."

    def message(self, id: str) -> str:
        return f"{self.stream}.m.{token(id)}"

    def key(self, key: str) -> str:
        return f"{self.stream}.k.{token(key)}"

    def named(self, kind: str, name: str) -> str:
        """``S.<kind>.<name>`` for the other kinds (w, l, b, s, c, p, g, e, t)."""
        return f"{self.stream}.{kind}.{token(name)}"

    def split(self, subject: str) -> tuple[str, str] | None:
        """(kind, name) of one of the stream's subjects, or None."""
        if not subject.startswith(self.prefix):
            return None
        kind, _, tok = subject[len(self.prefix) :].partition(".")
        return (kind, untoken(tok)) if tok else None


def failure_type(error: Failure | None) -> str | None:
    return error.type if error is not None else None

"""The ARGV of the Lua scripts (``lua/``), built from messages, outcomes, leases and slots.

Each function gives the arguments after the request token (``ARGV[2..]``), in the layout
the script's header describes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from pigeon import codec
from pigeon.backends.base import dead_reason, plain_options
from pigeon.message import Lease, Message, Outcome, Progress, Result, Slot, Take

json_encode = msgspec.json.Encoder().encode

#: The furthest ahead (seconds) a rate-limit slot is reserved, whatever ``hold`` says.
MAX_HOLD = 1e9


def enqueue_call(messages: Sequence[Message]) -> tuple[str, list[Any]]:
    """The script call that stores one chunk of ``enqueue``: (script name, its ARGV).

    Both scripts get the chunk's lowest and highest id, for the id mark (``mark_ids`` in
    common.lua): a chunk of ids all above it is stored without looking each id up. Python
    orders strings by code point, which is the byte order of their UTF-8, as the script's.
    A chunk that holds one id twice gets '' as its lowest, which is above nothing, so that
    the lookups store it once.
    """
    encode = codec.encode_message
    ids = [m.id for m in messages]
    lo, hi = min(ids), max(ids)
    if len(set(ids)) < len(ids):
        lo = ""
    shared = plain_options(messages)
    if shared is not None:
        # the shared options once, then the ids, then the bodies
        return "enqueue_plain", ["", json_encode(shared), lo, hi, *ids, *map(encode, messages)]
    specs = [
        (
            m.id,
            m.queue,
            m.task,
            m.priority,
            m.delay,
            m.run_at,
            m.max_deliveries,
            m.lease,
            m.key,
            m.expires_at,
            m.result_ttl,
            m.after,
            None if m.join is None else m.join.mode,
            None if m.join is None else m.join.members,
            m.expires,
        )
        for m in messages
    ]
    return "enqueue", ["", json_encode(specs), lo, hi, *map(encode, messages)]


def settle_args(outcomes: Sequence[Outcome]) -> list[Any]:
    """``settle.lua``'s ARGV: the JSON array of ``[id, attempt, state, result_ttl, retry_in,
    dead letter reason or null]``, then each outcome's stored result ('' for a retry)."""
    specs: list[tuple[Any, ...]] = []
    records: list[bytes] = []
    for o in outcomes:
        if o.state == "retry":
            specs.append((o.id, o.attempt, o.state, o.result_ttl, o.retry_in, None))
            records.append(b"")
            continue
        reason = None
        if o.state == "dead":
            reason = dead_reason(o.error)
        specs.append((o.id, o.attempt, o.state, o.result_ttl, o.retry_in, reason))
        result = Result(o.id, o.state, o.value, o.error)
        records.append(codec.encode_result_record(result))
    return [json_encode(specs), *records]


def lease_args(leases: Sequence[Lease]) -> list[Any]:
    """``id, attempt, id, attempt, ...``: the held deliveries of ``extend.lua``,
    ``release.lua`` and ``cancelling.lua``."""
    return [x for lease in leases for x in (lease.id, lease.attempt)]


def take_args(takes: Sequence[Take]) -> list[Any]:
    """``take.lua``'s ``bucket, interval, burst, hold, ...`` (hold at most ``MAX_HOLD``)."""
    return [
        x
        for t in takes
        for x in (t.bucket, repr(float(t.interval)), int(t.burst), repr(min(t.hold, MAX_HOLD)))
    ]


def acquire_args(slots: Sequence[Slot]) -> list[Any]:
    """``acquire.lua``'s ``name, holder, limit, ttl, ...``."""
    return [
        x
        for slot in slots
        for x in (slot.name, slot.holder, int(slot.limit), repr(float(slot.ttl)))
    ]


def holder_args(slots: Sequence[Slot]) -> list[Any]:
    """``release_slots.lua``'s ``name, holder, ...``."""
    return [x for slot in slots for x in (slot.name, slot.holder)]


def report_args(progress: Sequence[Progress]) -> list[Any]:
    """``report.lua``'s ``id, encoded Progress, ...`` (after the ttl)."""
    return [x for p in progress for x in (p.id, json_encode(p))]

"""The replies of the Lua scripts (``lua/``) and of the stream commands, read into records.

A script replies with flat lists, as cheap for Redis to build as for us to read; each
function here names the script and the layout of its reply, as that script's header says.
Times in a reply are integer microseconds of the server's clock.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, NamedTuple

import msgspec

from pigeon import codec
from pigeon.backends.info import StoredDead, StoredMessage
from pigeon.backends.info import message_info as message_info_of
from pigeon.message import (
    DeadLetter,
    Delivery,
    Event,
    Lease,
    Message,
    MessageInfo,
    Pause,
    QueueStats,
    Stats,
    WorkerInfo,
)

log = logging.getLogger("pigeon.backends.redis")

_worker_decoder = msgspec.json.Decoder(WorkerInfo)
_ids_decoder = msgspec.json.Decoder(list[str])
_event_decoder = msgspec.json.Decoder(Event)

APPLIED = 49  # b"1": one byte of a reply of '1'/'0' flags, as ``bytes`` iterates it


def seconds(micros: int) -> float:
    """Server microseconds as seconds."""
    return micros / 1_000_000


def enqueued(chunk: Sequence[Message], reply: Any) -> tuple[list[str], bytes]:
    """The reply of ``enqueue.lua`` or ``enqueue_plain.lua`` for one chunk: the id standing
    for each message, and one flag byte per message, ``1`` stored now, ``0`` stored already.

    ``enqueue_plain.lua`` replies with the flags only (a bulk string): each id stands for
    itself. ``enqueue.lua`` replies ``[[id, ...], flags]``: an id is the message's own or
    that of the message holding its key.
    """
    if isinstance(reply, bytes):
        return [m.id for m in chunk], reply
    return [mid.decode() for mid in reply[0]], reply[1]


class Fetched(NamedTuple):
    """A ``fetch.lua`` reply: the server's now, the next due time (-1: none, or not
    drained), the messages leased."""

    now: int
    next_due: int
    deliveries: list[Delivery]


def fetched(reply: list[Any]) -> Fetched:
    """The reply of ``fetch.lua``: ``[now, next due or -1, id, attempt, failures, body,
    lease seconds, waited microseconds, id, ...]``, six entries per message leased."""
    rows = iter(reply)
    now, next_due = next(rows), next(rows)
    # the same iterator six times: each tuple is one message's six entries, in order
    deliveries = [
        Delivery(mid.decode(), attempt, failures, body, float(lease), waited / 1e6)
        for mid, attempt, failures, body, lease, waited in zip(
            rows, rows, rows, rows, rows, rows, strict=True
        )
    ]
    return Fetched(now, next_due, deliveries)


def fetched_leases(reply: list[Any]) -> list[Lease]:
    """The leases of a ``fetch.lua`` reply (see ``fetched``): each message's id and attempt."""
    flat = reply[2:]
    return [Lease(flat[i].decode(), flat[i + 1]) for i in range(0, len(flat), 6)]


def verdicts(reply: bytes) -> list[bool]:
    """The reply of ``settle.lua``: one flag byte per outcome, ``1`` applied, ``0`` refused."""
    return [v == APPLIED for v in reply]


def cancelled(reply: bytes) -> list[str]:
    """The reply of ``cancel.lua``: a JSON array of the ids cancelled, in the order given."""
    return _ids_decoder.decode(reply)


def id_set(reply: list[bytes]) -> set[str]:
    """A reply that is a list of ids: ``extend.lua`` (the leases no longer held),
    ``cancelling.lua`` (the held ones whose cancellation was requested)."""
    return {mid.decode() for mid in reply}


def waits(reply: bytes) -> list[float]:
    """The reply of ``take.lua``: ``'w1,w2,...'``, per take the microseconds until its slot."""
    return [seconds(int(wait)) for wait in reply.split(b",")]


def acquired(reply: list[int]) -> list[bool]:
    """The reply of ``acquire.lua``: per slot 1 or 0, whether the holder has a place after."""
    return [got == 1 for got in reply]


def swept(reply: list[Any]) -> tuple[int, bool]:
    """The reply of ``sweep.lua``: ``[removed, 1 when any kind hit the limit else 0]``."""
    removed, full = reply
    return int(removed), bool(full)


def dead_letters(flat: list[Any]) -> list[DeadLetter]:
    """The reply of ``dead_letters.lua``: ``[id, queue, task, reason, died, body, id, ...]``,
    six entries per dead letter."""
    return [
        DeadLetter(
            flat[i].decode(),
            flat[i + 1].decode(),
            flat[i + 2].decode(),
            flat[i + 3].decode(),
            seconds(flat[i + 4]),
            flat[i + 5],
        )
        for i in range(0, len(flat), 6)
    ]


def message_info(id: str, reply: list[Any]) -> MessageInfo | None:
    """The reply of ``inspect.lua`` for ``id``: ``[now, message fields, stored outcome, dead
    letter fields]``, the message fields ``[st, q, t, a, f, due, lu, w, b, cx, sa]`` and the
    dead letter's ``[q, t, reason, b]`` (each nil when absent). None when nothing is known."""
    now, m, stored, d = reply
    result = codec.decode_result_record(stored) if stored is not None else None
    state, queue, task, attempt, failures, due, lease_until, worker, body, cx, sent = m
    message = dead = None
    if state is not None:
        message = StoredMessage(
            state.decode(),
            queue.decode(),
            task.decode(),
            int(attempt or 0),
            int(failures or 0),
            seconds(int(due)),
            seconds(int(lease_until)) if lease_until is not None else None,
            worker.decode() if worker is not None else None,
            body,
            cx is not None,
            seconds(int(sent)) if sent is not None else None,
        )
    elif d[0] is not None:
        dead = StoredDead(d[0].decode(), d[1].decode(), d[2].decode(), d[3])
    return message_info_of(id, seconds(now), message, result, dead)


def pause(queue: str, value: bytes) -> Pause:
    """A stored pause (``pauses.lua``): ``b"<until> <since> <reason>"``, times in server
    microseconds (until 0: until resumed), reason ``-`` for none or ``+`` and its text."""
    until, since, reason = value.split(b" ", 2)
    text = reason[1:].decode() if reason.startswith(b"+") else None
    return Pause(queue, text, seconds(int(since)), seconds(int(until)) or None)


def pauses(now: int, fields: list[Any]) -> dict[str, Pause]:
    """The live pauses among ``[queue, value, ...]`` (a hash read) at server time ``now``."""
    found: dict[str, Pause] = {}
    for i in range(0, len(fields), 2):
        until = int(fields[i + 1].split(b" ", 1)[0])
        if until == 0 or until > now:
            queue = fields[i].decode()
            found[queue] = pause(queue, fields[i + 1])
    return dict(sorted(found.items()))


def stats(reply: list[Any]) -> Stats:
    """The reply of ``stats.lua``: ``[now, [queue, waiting, scheduled, pending, leased, dead,
    queue, ...], unexpired results, dead letters, [WorkerInfo JSON or nil, ...], [queue,
    pause, ...]]``. Queues with nothing in them are left out; workers are sorted by id."""
    now, counts, results, dead, infos, paused = reply
    queues: dict[str, QueueStats] = {}
    for i in range(0, len(counts), 6):
        qs = QueueStats(*counts[i + 1 : i + 6])
        if qs != QueueStats():
            queues[counts[i].decode()] = qs
    workers = [_worker_decoder.decode(info) for info in infos if info is not None]
    workers.sort(key=lambda w: w.id)
    return Stats(queues, results, dead, workers, pauses(now, paused))


def stream_entries(reply: Any) -> list[Any]:
    """The entries ``[id, [field, value, ...]]`` of an XREAD reply on one stream (RESP2: a
    list of ``[key, entries]``; RESP3: a map key -> entries; nil: none)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return [entry for entries in reply.values() for entry in entries]
    return [entry for _, entries in reply for entry in entries]


def events(entries: list[Any], url: str) -> list[Event]:
    """The Events of stream entries (field ``e``, see ``publish.lua``); an unreadable one is
    logged (naming the server ``url``) and skipped."""
    found: list[Event] = []
    for entry_id, fields in entries:
        body = dict(zip(fields[::2], fields[1::2], strict=True)).get(b"e")
        try:
            found.append(_event_decoder.decode(body or b""))
        except msgspec.DecodeError as exc:
            log.warning("Redis %s: skipping unreadable event %s: %s", url, entry_id.decode(), exc)
    return found

"""What the PostgreSQL backend makes of the rows its statements return: deliveries,
MessageInfo, Stats, and decoded progress reports and events.

Pure functions of the rows, run once the connection is back in the pool.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from pigeon.backends.info import StoredDead, StoredMessage
from pigeon.backends.info import message_info as message_info_of
from pigeon.backends.postgres.listener import stored_result
from pigeon.backends.shared import Tally
from pigeon.message import Delivery, Event, MessageInfo, Pause, Progress, Stats, WorkerInfo

log = logging.getLogger("pigeon.backends.postgres")

_worker_decoder = msgspec.json.Decoder(WorkerInfo)
_progress_decoder = msgspec.json.Decoder(Progress)
_event_decoder = msgspec.json.Decoder(Event)


def split(rows: list[Any]) -> tuple[list[Any], Any]:
    """The rows of a lease statement: the leased ones, and the one of flags (id NULL)."""
    leased = [r for r in rows if r["id"] is not None]
    flags = next(r for r in rows if r["id"] is None)
    return leased, flags


def deliveries(leased: list[Any]) -> list[Delivery]:
    """The leased rows as deliveries: in the order of the queues asked for, then highest
    priority, earliest due time, id."""
    leased.sort(key=lambda r: (r["ord"], -r["priority"], r["due"], r["id"]))
    return [
        Delivery(r["id"], r["attempt"], r["failures"], r["body"], r["lease"], r["waited"])
        for r in leased
    ]


def message_info(id: str, r: Any) -> MessageInfo | None:
    """What the ``inspect`` row ``r`` says of ``id`` (None: nothing)."""
    result = None
    if r["result"] is not None:
        result = stored_result(r["result"], r["settled_at"])
    message = dead = None
    if r["state"] is not None:
        message = StoredMessage(
            r["state"],
            r["queue"],
            r["task"],
            r["attempt"],
            r["failures"],
            r["due"],
            r["lease_until"],
            r["worker"],
            r["body"],
            r["cancel_requested"],
            r["sent_at"],
        )
    elif r["dead_queue"] is not None:
        dead = StoredDead(r["dead_queue"], r["dead_task"], r["reason"], r["dead_body"])
    return message_info_of(id, r["now"], message, result, dead)


def pause(row: Any) -> Pause:
    """A ``Pause`` from a row (queue, reason, since, until) of the ``pause`` or ``paused``
    statement (epoch seconds)."""
    return Pause(row[0], row[1], row[2], row[3])


def pauses(rows: list[Any]) -> dict[str, Pause]:
    """The rows of the ``paused`` statement, by queue."""
    return {row[0]: pause(row) for row in rows}


def stats(rows: list[Any], paused: list[Any]) -> Stats:
    """The counts of the ``stats`` rows: by queue and state, outcomes, dead letters, and the
    live workers (by id); with the rows of ``paused``."""
    tally = Tally()
    results = 0
    workers: list[WorkerInfo] = []
    for kind, name, state, later, n, info, last_seen in rows:
        if kind == "messages":
            tally.message(name, state, later, n)
        elif kind == "dead":
            tally.dead_letters(name, n)
        elif kind == "results":
            results = n
        else:
            decoded = _worker_decoder.decode(info)
            workers.append(msgspec.structs.replace(decoded, last_seen=last_seen))
    return tally.stats(results, workers, pauses(paused))


def progress(rows: list[Any], url: str) -> dict[str, Progress]:
    """The reports of the ``progress`` rows by id; undecodable ones are logged and skipped."""
    found: dict[str, Progress] = {}
    for (body,) in rows:
        try:
            report = _progress_decoder.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning("PostgreSQL %s: undecodable progress report: %s", url, exc)
            continue
        found[report.id] = report
    return found


def events(rows: list[Any], start: int, url: str) -> tuple[str, list[Event]]:
    """The events of the ``read_events`` rows read after the seq ``start``, and the cursor
    past the last row; undecodable ones are logged and skipped."""
    found: list[Event] = []
    for seq, body in rows:
        start = seq
        try:
            found.append(_event_decoder.decode(body))
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning("PostgreSQL %s: undecodable event %d skipped: %s", url, seq, exc)
    return str(start), found

"""The NATS backend's ``list_messages``, read from the view with the shared paging rules
(``shared.walk_of``, ``sift``, ``merge``). The view holds every record in memory, so each
source is sorted by id within the walk's range and sifted as the other backends do."""

from __future__ import annotations

from collections.abc import Iterator

from pigeon.backends.base import MessagePage, MessageQuery, MessageRow
from pigeon.backends.nats import records as r
from pigeon.backends.nats.view import View
from pigeon.backends.shared import Walk, error_type, inside, page_in_process
from pigeon.message import State


def list_view(query: MessageQuery, now: float, view: View) -> MessagePage:
    """One page of ``query`` over ``view`` at ``now``."""
    key_id = None
    if query.key is not None:
        held = view.keys.get(query.key)
        key_id = held.id if held is not None and held.until > now else None
    return page_in_process(
        query,
        key_id,
        lambda walk: _live(walk, now, view),
        [lambda walk: _outcomes(walk, now, view), lambda walk: _dead(walk, now, view)],
    )


def _live(walk: Walk, now: float, view: View) -> Iterator[MessageRow]:
    records = view.records
    for id in inside(walk, records):
        rec = records[id]
        if rec.state not in r.LIVE:
            continue
        state: State = rec.state  # type: ignore[assignment]
        if state == "pending" and rec.due > now:
            state = "scheduled"
        yield MessageRow(id, state, rec.queue, rec.task)


def _outcomes(walk: Walk, now: float, view: View) -> Iterator[MessageRow | None]:
    for id in inside(walk, view.kept):
        kept = view.kept[id]
        rec = view.records.get(id)
        if kept.until <= now or rec is None or rec.state in r.LIVE:
            yield None
            continue
        result = kept.result
        error = result.error.type if result.error is not None else None
        yield MessageRow(id, result.state, rec.queue, rec.task, error)


def _dead(walk: Walk, now: float, view: View) -> Iterator[MessageRow | None]:
    records = view.records
    for id in inside(walk, records):
        rec = records[id]
        if rec.state != "dead":
            continue
        if rec.dead_until <= now:
            yield None
            continue
        yield MessageRow(id, "dead", rec.queue, rec.task, error_type(rec.reason))

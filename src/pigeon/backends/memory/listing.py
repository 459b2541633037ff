"""The memory backend's ``list_messages``: its dictionaries, filtered and sorted.

The memory backend is for tests and one process, so it walks everything it holds (no index
to keep up to date on the hot path); the paging rules are the shared ones
(``shared.walk_of``, ``sift``, ``merge``), so it pages exactly as the other backends do.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Protocol

from pigeon.backends.base import MessagePage, MessageQuery, MessageRow
from pigeon.backends.shared import Walk, error_type, inside, page_in_process
from pigeon.message import DeadLetter, Message, Result, State


class Live(Protocol):
    """What the listing reads of a stored message (``memory.backend._Record``)."""

    message: Message
    state: str
    due: float


def list_stored(
    query: MessageQuery,
    now: float,
    msgs: Mapping[str, Live],
    results: Mapping[str, tuple[Result, float]],
    where: Mapping[str, tuple[str, str]],
    dead: Mapping[str, tuple[DeadLetter, float]],
    keys: Mapping[str, tuple[str, float]],
) -> MessagePage:
    """One page of ``query`` over the memory backend's stores: ``where`` holds the queue and
    task of each id with a kept outcome."""
    key_id = None
    if query.key is not None:
        held = keys.get(query.key)
        key_id = held[0] if held is not None and held[1] > now else None
    return page_in_process(
        query,
        key_id,
        lambda walk: _live(walk, now, msgs),
        [lambda walk: _outcomes(walk, now, results, where), lambda walk: _dead(walk, now, dead)],
    )


def _live(walk: Walk, now: float, msgs: Mapping[str, Live]) -> Iterator[MessageRow]:
    for mid in inside(walk, msgs):
        rec = msgs[mid]
        state = rec.state
        if state == "pending" and rec.due > now:
            state = "scheduled"
        yield MessageRow(mid, _state(state), rec.message.queue, rec.message.task)


def _outcomes(
    walk: Walk,
    now: float,
    results: Mapping[str, tuple[Result, float]],
    where: Mapping[str, tuple[str, str]],
) -> Iterator[MessageRow | None]:
    for mid in inside(walk, results):
        result, expires = results[mid]
        placed = where.get(mid)
        if expires <= now or placed is None:
            yield None
            continue
        error = result.error.type if result.error is not None else None
        yield MessageRow(mid, result.state, placed[0], placed[1], error)


def _dead(
    walk: Walk, now: float, dead: Mapping[str, tuple[DeadLetter, float]]
) -> Iterator[MessageRow | None]:
    for mid in inside(walk, dead):
        letter, expires = dead[mid]
        if expires <= now:
            yield None
            continue
        yield MessageRow(mid, "dead", letter.queue, letter.task, error_type(letter.reason))


def _state(state: str) -> State:
    if state in ("waiting", "scheduled", "pending", "leased"):
        return state  # type: ignore[return-value]
    raise ValueError(f"not the state of a stored message: {state!r}")

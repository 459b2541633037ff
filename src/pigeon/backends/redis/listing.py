"""The Redis backend's ``list_messages``: one script call (``lua/list.lua``) per page.

Sources: the ``live`` index (every message that can still run, by id; kept by the enqueue
scripts, ``finish`` in ``common.lua``, ``purge`` and ``requeue``) and the history indexes
(``h``, and ``hq:<queue>`` / ``ht:<task>`` when the query names a queue or a task), whose
members carry id, queue, task, state and error type, so a page reads no outcome: one ZADD
per index per kept outcome or dead letter in ``finish``, dropped by ``sweep`` at the
outcome's (or the dead letter's) expiry. Each walk reads at most ``LIST_SCAN`` entries
from the query's cursor down within its id prefix and time range (a ``key`` is looked up
in the script and narrows the walk to one id); state, error type and whatever the index
did not filter are checked on the entries read (``shared.sift``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, cast

import msgspec

from pigeon.backends.base import LIST_SCAN, MessagePage, MessageQuery, MessageRow
from pigeon.backends.shared import merge, sift, sources, walk_of
from pigeon.message import State

Script = Callable[..., Awaitable[Any]]


async def list_page(script: Script, query: MessageQuery) -> MessagePage:
    """One page of ``query``, read by one call of ``list.lua`` through ``script``."""
    walk = walk_of(msgspec.structs.replace(query, key=None))  # the script narrows to a key
    if walk.empty:
        return MessagePage([])
    live, finished = sources(query)
    index = ""
    if finished:
        if query.queue is not None:
            index = f"hq:{query.queue}"
        elif query.task is not None:
            index = f"ht:{query.task}"
        else:
            index = "h"
    reply = await script(
        "list", "", walk.lo, walk.hi, LIST_SCAN, "1" if live else "0", index, query.key or ""
    )
    rows, live_cut, history, history_cut = reply
    found = []
    if live:
        found.append(sift(query, _live(rows), _text(live_cut) or None))
    if finished:
        found.append(sift(query, _history(history), _text(history_cut) or None))
    return merge(query, found)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _live(flat: Sequence[bytes]) -> Iterator[MessageRow | None]:
    for at in range(0, len(flat), 5):
        mid, state, queue, task, later = (_text(v) for v in flat[at : at + 5])
        if not state:
            yield None
            continue
        if state == "pending" and later == "1":
            state = "scheduled"
        yield MessageRow(mid, cast(State, state), queue, task)


def _history(members: Sequence[bytes]) -> Iterator[MessageRow | None]:
    for member in members:
        text = _text(member)
        if not text:
            yield None
            continue
        mid, queue, rest = text.split("\t", 2)
        task, state, kind = rest.rsplit("\t", 2)  # a task name with a tab keeps it
        yield MessageRow(mid, cast(State, state), queue, task, kind or None)

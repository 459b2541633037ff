"""The SQLite backend's ``list_messages``: each source walked down an index, bounded.

Sources (``sql/queries.sql``, "Listing"): the messages that can still run (``messages``,
its primary key), the kept outcomes (``history``, version 6: its primary key, or its
``(queue, id)`` or ``(task, id)`` index when the query names a queue or a task) and the dead
letters (``dead``, its primary key). Each walk reads at most ``LIST_SCAN`` entries from the
query's cursor down (within its id prefix and time range; a ``key`` is looked up first and
narrows the walk to one id); state, error type and whatever the index did not filter are
checked on the rows read (``shared.sift``), and ``shared.merge`` makes the page.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping
from typing import cast

from pigeon.backends.base import LIST_SCAN, MessagePage, MessageQuery, MessageRow
from pigeon.backends.shared import Sifted, error_type, merge, sift, sources, walk_of
from pigeon.message import State


def list_page(
    db: sqlite3.Connection, sql: Mapping[str, str], query: MessageQuery, now: float
) -> MessagePage:
    """One page of ``query``, read in the caller's read transaction (one snapshot)."""
    key_id = None
    if query.key is not None:
        row = db.execute(sql["key_id"], (query.key, now)).fetchone()
        key_id = row[0] if row is not None else None
    walk = walk_of(query, key_id)
    if walk.empty:
        return MessagePage([])
    live, finished = sources(query)
    found: list[Sifted] = []
    if live:
        rows = db.execute(sql["list_live"], (*walk, LIST_SCAN)).fetchall()
        found.append(sift(query, _live(rows, now), _cut(rows)))
    if finished:
        if query.queue is not None:
            walked = db.execute(sql["list_history_queue"], (*walk, LIST_SCAN, query.queue))
        elif query.task is not None:
            walked = db.execute(sql["list_history_task"], (*walk, LIST_SCAN, query.task))
        else:
            walked = db.execute(sql["list_history"], (*walk, LIST_SCAN))
        history = walked.fetchall()
        found.append(sift(query, _outcomes(history, now), _cut(history)))
        if query.state in (None, "dead"):
            letters = db.execute(sql["list_dead"], (*walk, LIST_SCAN)).fetchall()
            found.append(sift(query, _dead(letters, now), _cut(letters)))
    return merge(query, found)


def _cut(rows: list[tuple[str, ...]]) -> str | None:
    """Where a walk stopped at its budget (the last id it read), else None."""
    return rows[-1][0] if len(rows) >= LIST_SCAN else None


def _live(rows: list[tuple[str, str, str, str, float]], now: float) -> Iterator[MessageRow]:
    for mid, state, queue, task, due in rows:
        if state == "pending" and due > now:
            state = "scheduled"
        yield MessageRow(mid, cast(State, state), queue, task)


def _outcomes(
    rows: list[tuple[str, str, str, str, str | None, float]], now: float
) -> Iterator[MessageRow | None]:
    for mid, state, queue, task, error, expires_at in rows:
        yield MessageRow(mid, cast(State, state), queue, task, error) if expires_at > now else None


def _dead(rows: list[tuple[str, str, str, str, float]], now: float) -> Iterator[MessageRow | None]:
    for mid, queue, task, reason, expires_at in rows:
        if expires_at <= now:
            yield None
        else:
            yield MessageRow(mid, "dead", queue, task, error_type(reason))

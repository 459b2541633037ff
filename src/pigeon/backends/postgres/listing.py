"""The PostgreSQL backend's ``list_messages``: each source walked down an index, bounded.

Sources (``sql/queries.sql``, "Listing"): the messages that can still run (``messages``,
its primary key), the kept outcomes (``results``: its primary key, or, from migration 0010,
its ``(queue, id)`` or ``(task, id)`` index when the query names a queue or a task) and the
dead letters (``dead``, its primary key). Each walk reads at most ``LIST_SCAN`` entries from
the query's cursor down, within its id prefix and time range (a ``key`` is looked up first
and narrows the walk to one id); state, error type and whatever the index did not filter
are checked on the rows read (``shared.sift``), and ``shared.merge`` makes the page. The
statements run on one connection in one read-only transaction (one snapshot).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, cast

from pigeon.backends.base import LIST_SCAN, MessagePage, MessageQuery, MessageRow
from pigeon.backends.postgres.session import Connections
from pigeon.backends.shared import Sifted, error_type, merge, sift, sources, walk_of
from pigeon.message import State


class Listing(Connections):
    """``list_messages``, on the backend's pool."""

    async def list_messages(self, query: MessageQuery) -> MessagePage:
        """See ``base.Backend`` and this module's docstring for the indexes walked."""
        async with self._connection() as conn, conn.transaction(readonly=True):
            key_id = None
            if query.key is not None:
                key_id = await conn.fetchval(self._sql["key_id"], query.key)
            walk = walk_of(query, key_id)
            if walk.empty:
                return MessagePage([])
            live, finished = sources(query)
            found: list[Sifted] = []
            if live:
                rows = await conn.fetch(self._sql["list_live"], *walk, LIST_SCAN)
                found.append(sift(query, _live(rows), _cut(rows)))
            if finished:
                if query.queue is not None:
                    statement, extra = "list_outcomes_queue", [query.queue]
                elif query.task is not None:
                    statement, extra = "list_outcomes_task", [query.task]
                else:
                    statement, extra = "list_outcomes", []
                rows = await conn.fetch(self._sql[statement], *walk, LIST_SCAN, *extra)
                found.append(sift(query, _outcomes(rows), _cut(rows)))
                if query.state in (None, "dead"):
                    rows = await conn.fetch(self._sql["list_dead"], *walk, LIST_SCAN)
                    found.append(sift(query, _dead(rows), _cut(rows)))
        return merge(query, found)


def _cut(rows: Sequence[Any]) -> str | None:
    """Where a walk stopped at its budget (the last id it read), else None."""
    return cast(str, rows[-1]["id"]) if len(rows) >= LIST_SCAN else None


def _live(rows: Sequence[Any]) -> Iterator[MessageRow]:
    for r in rows:
        state = "scheduled" if r["state"] == "pending" and r["later"] else r["state"]
        yield MessageRow(r["id"], cast(State, state), r["queue"], r["task"])


def _outcomes(rows: Sequence[Any]) -> Iterator[MessageRow | None]:
    for r in rows:
        if r["kept"]:
            yield MessageRow(r["id"], cast(State, r["state"]), r["queue"], r["task"], r["error"])
        else:
            yield None


def _dead(rows: Sequence[Any]) -> Iterator[MessageRow | None]:
    for r in rows:
        if r["kept"]:
            yield MessageRow(r["id"], "dead", r["queue"], r["task"], error_type(r["reason"]))
        else:
            yield None

"""How the PostgreSQL backend stores messages: the enqueue paths, on a connection given.

A batch that ``plain_options`` finds plain (no keys or links, shared options) is
``insert_new`` or ``insert_plain`` per ``PLAIN_CHUNK``; any other batch claims its keys,
marks the messages it depends on and is then one ``insert_messages``. The statements are
those rendered for the backend's schema (``schema.render``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import asyncpg
import msgspec

from pigeon import codec
from pigeon.backends.base import PlainOptions, plain_options
from pigeon.backends.shared import dependencies, first_state
from pigeon.errors import BackendError
from pigeon.message import Message

log = logging.getLogger("pigeon.backends.postgres")

#: Messages per insert_plain statement when a plain batch is bigger (see insert_plain).
PLAIN_CHUNK = 1000

#: The SQLSTATE of ``settled_since`` (sql/0009_settled_resend.sql): an id this statement
#: stored again had been settled (its message deleted, its outcome stored) meanwhile. The
#: statement is undone; sent again, it sees the outcome and skips the id.
SETTLED_MEANWHILE = "PGSET"
#: Statements tried per enqueue when ids keep settling under it (one retry is enough:
#: an id settles once).
_TRIES = 3

# A row of insert_messages: (message, state, the id it waits on, encoded body).
_Row = tuple[Message, str, str | None, bytes]
# A join's counters: (message id, mode, members, settled, succeeded, fired).
_Join = tuple[str, str, int, int, int, bool]


async def enqueue(conn: Any, sql: dict[str, str], messages: list[Message], url: str) -> list[str]:
    """Store ``messages`` on ``conn`` (in its transaction when they have keys or links);
    the id standing for each (see ``PostgresBackend.enqueue``). ``url`` is for logs."""
    shared = plain_options(messages)
    if shared is not None:
        await insert_plain(conn, sql, messages, shared, url)
        return [m.id for m in messages]
    holders = await _claim_keys(conn, sql, messages)
    ids, store = _choose(messages, holders)
    refs = dependencies(store)
    outcomes: dict[str, str] = {}
    if refs:
        # Marked (and held) before their outcomes are looked up: a settle that has
        # not taken one yet waits for this transaction, then leaves it to the
        # statements that see what it stored (see mark_refs).
        await conn.execute(sql["mark_refs"], refs)
        outcomes = dict(await conn.fetch(sql["ref_outcomes"], refs))
    rows, joins, members = _rows(store, outcomes)
    await insert(conn, sql, rows, joins, members)
    if refs:
        # Depended on within this batch: stored just now, unmarked.
        inside = {m.id for m in store}.intersection(refs)
        if inside:
            await conn.execute(sql["mark_refs"], sorted(inside))
    return ids


async def _claim_keys(conn: Any, sql: dict[str, str], messages: list[Message]) -> dict[str, str]:
    """The id holding each key of ``messages``: claimed for the first message with it when
    free, else the id of the message that holds it already."""
    holders: dict[str, str] = {}
    keyed: dict[str, Message] = {}
    for m in messages:
        if m.key is not None:
            keyed.setdefault(m.key, m)
    if not keyed:
        return holders
    # Claimed in key order, as every enqueue does: two batches never wait on each
    # other's keys in opposite orders (a deadlock).
    claims = sorted(keyed.items())
    rows = await conn.fetch(
        sql["claim_keys"],
        [key for key, _ in claims],
        [m.id for _, m in claims],
        [m.result_ttl for _, m in claims],
    )
    for (key,) in rows:
        holders[key] = keyed[key].id
    held = [key for key in keyed if key not in holders]
    if held:
        holders.update((key, mid) for key, mid in await conn.fetch(sql["key_holders"], held))
    return holders


def _choose(messages: list[Message], holders: dict[str, str]) -> tuple[list[str], list[Message]]:
    """The id standing for each message, and the messages to store (one per id)."""
    ids: list[str] = []
    chosen: dict[str, Message] = {}
    for m in messages:
        holder = holders.get(m.key, m.id) if m.key is not None else m.id
        ids.append(holder)
        if holder == m.id:
            chosen.setdefault(m.id, m)
    return ids, list(chosen.values())


def _rows(
    store: list[Message], outcomes: dict[str, str]
) -> tuple[list[_Row], list[_Join], list[tuple[str, str]]]:
    """The rows of ``store`` (in id order), its joins' counters and their unsettled
    members, given the states of the ``outcomes`` stored for the ids they depend on."""
    rows: list[_Row] = []
    joins: list[_Join] = []
    members: list[tuple[str, str]] = []
    for m in store:
        state, join = first_state(m, outcomes)
        if join is not None:
            joins.append((m.id, join.mode, join.total, join.settled, join.succeeded, join.fired))
            members.extend((m.id, member) for member in join.unsettled)
        after = m.after if m.join is None else None
        rows.append((m, state, after, codec.encode_message(m)))
    rows.sort(key=lambda row: row[0].id)  # rows locked in id order, as settle does
    return rows, joins, members


async def insert_plain(
    conn: Any,
    sql: dict[str, str],
    messages: list[Message],
    shared: PlainOptions,
    url: str,
    own: bool = False,
) -> None:
    """Store a batch that ``plain_options`` found plain: one statement per
    ``PLAIN_CHUNK`` messages, pipelined by ``executemany`` in one transaction (each
    chunk's arrays are encoded while the server inserts the one before).

    On a connection of our own (``own``) it first tries ``insert_new``, which is
    cheaper, and falls back to ``insert_plain`` if an id turns out to be stored twice;
    in the application's transaction an error would abort it, so ``insert_plain``.
    An id that settled while it was being stored again is undone (see ``_stored``).
    """
    encode = codec.encode_message
    raising = not conn.is_in_transaction()

    def chunks() -> Iterator[tuple[Any, ...]]:  # made as executemany sends them
        for at in range(0, len(messages), PLAIN_CHUNK):
            part = messages[at : at + PLAIN_CHUNK]
            yield ([m.id for m in part], [encode(m) for m in part], *shared, raising)

    name = "insert_new" if own else "insert_plain"
    for _ in range(_TRIES):
        try:
            if len(messages) <= PLAIN_CHUNK:
                settled = (await conn.fetchrow(sql[name], *next(chunks())))[1]
            elif raising:  # atomic: settled_since raises rather than returning ids
                await conn.executemany(sql[name], chunks())
                settled = []
            else:
                settled = [
                    mid for args in chunks() for mid in (await conn.fetchrow(sql[name], *args))[1]
                ]
        except asyncpg.UniqueViolationError:
            if name == "insert_plain":
                raise
            log.debug("PostgreSQL %s: an id stored twice; enqueue again with ON CONFLICT", url)
        except asyncpg.PostgresError as exc:
            if exc.sqlstate != SETTLED_MEANWHILE:
                raise
            log.debug("PostgreSQL %s: %s; enqueue again", url, exc)
        else:
            await _undo(conn, sql, settled)
            return
        name = "insert_plain"
    raise BackendError(f"PostgreSQL {url}: ids kept settling while they were stored again")


async def insert(
    conn: Any,
    sql: dict[str, str],
    rows: list[_Row],
    joins: Sequence[_Join] = (),
    members: Sequence[tuple[str, str]] = (),
    due_now: bool = False,
) -> None:
    """One insert_messages statement; ``due_now`` ignores delays (requeue: a relative
    expiry is resolved afresh). An id that settled while it was being stored again is
    undone (see ``_stored``)."""
    raising = not conn.is_in_transaction()
    args = (
        [m.id for m, *_ in rows],
        [m.queue for m, *_ in rows],
        [m.task for m, *_ in rows],
        [m.priority for m, *_ in rows],
        [0.0 if due_now else m.delay for m, *_ in rows],
        [None if due_now else m.run_at for m, *_ in rows],
        [state for _, state, _, _ in rows],
        [m.max_deliveries for m, *_ in rows],
        [m.lease for m, *_ in rows],
        [m.key for m, *_ in rows],
        [m.expires_at for m, *_ in rows],
        [m.result_ttl for m, *_ in rows],
        [after for _, _, after, _ in rows],
        [body for *_, body in rows],
        [j[0] for j in joins],
        [j[1] for j in joins],
        [j[2] for j in joins],
        [j[3] for j in joins],
        [j[4] for j in joins],
        [j[5] for j in joins],
        [jm[0] for jm in members],
        [jm[1] for jm in members],
        [m.expires for m, *_ in rows],
        raising,
    )
    for _ in range(_TRIES):
        try:
            settled = (await conn.fetchrow(sql["insert_messages"], *args))[1]
        except asyncpg.PostgresError as exc:
            if exc.sqlstate != SETTLED_MEANWHILE:
                raise
            log.debug("PostgreSQL: %s; enqueue again", exc)
            continue
        await _undo(conn, sql, settled)
        return
    raise BackendError("PostgreSQL: ids kept settling while they were stored again")


async def _undo(conn: Any, sql: dict[str, str], settled: list[str]) -> None:
    """Delete what an insert in a transaction stored again of ids that ``settled_since``
    found settled meanwhile (their outcome or dead letter stands: they must not run again)."""
    if settled:
        log.debug("settled while being stored again, not stored: %s", settled[:5])
        await conn.execute(sql["unstore"], settled)


async def requeue(conn: Any, sql: dict[str, str], letters: list[Any]) -> None:
    """Store the taken dead letters ``letters`` (id, queue, task, body) again as pending,
    due at once, in the caller's transaction."""
    rows: list[_Row] = []
    for mid, queue, task, body in letters:
        try:
            m = codec.decode_message(body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            # Requeued as it was: the worker that fetches it dead-letters it again,
            # with the reason, rather than this call failing for every id.
            m = Message(mid, task, queue)
        rows.append((m, "pending", None, body))
    await insert(conn, sql, rows, due_now=True)

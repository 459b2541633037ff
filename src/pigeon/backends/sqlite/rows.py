"""The statements of the SQLite backend and the rows they bind.

Shared by the store (on its own connection and thread) and by ``enqueue_in`` (on the
application's connection, inside its transaction), so it holds no connection itself: every
function here is given one and runs inside whatever transaction it is in.
"""

from __future__ import annotations

import functools
import importlib.resources
import sqlite3
from collections.abc import Sequence
from typing import Any, NamedTuple

import msgspec

from pigeon import codec
from pigeon.backends import statements
from pigeon.backends.shared import JoinStart, dependencies, expiry, first_state
from pigeon.message import Message

_json_encode = msgspec.json.Encoder().encode


@functools.cache
def queries() -> dict[str, str]:
    """The statements of sql/queries.sql by name (read once)."""
    return statements.load("pigeon.backends.sqlite", "sql/queries.sql")


@functools.cache
def schema() -> str:
    """The script of sql/schema.sql, which brings a database up to ``SCHEMA_VERSION``."""
    return (
        importlib.resources.files("pigeon.backends.sqlite")
        .joinpath("sql/schema.sql")
        .read_text(encoding="utf-8")
    )


def json_array(values: object) -> str:
    """A JSON array parameter for ``json_each`` (text: SQLite reads a blob as JSONB)."""
    return _json_encode(values).decode()


def message_row(
    m: Message, state: str, due: float, after: str | None, body: bytes, now: float
) -> tuple[Any, ...]:
    """The parameters of insert_message (and requeue_message) for ``m``, stored at ``now``
    (its expiry is resolved then)."""
    return (
        m.id,
        m.queue,
        m.task,
        m.priority,
        due,
        state,
        m.max_deliveries,
        m.lease,
        m.key,
        m.expires_at if m.expires is None else expiry(m, now),
        m.result_ttl,
        after,
        body,
    )


class _Stored(NamedTuple):
    """What the database already holds that an enqueue batch refers to."""

    #: Ids stored as a message, an outcome or a dead letter.
    ids: set[str]
    #: Unexpired key -> the id of the message holding it.
    keys: dict[str, str]
    #: Id -> the state of its stored outcome, for the ids followed or joined.
    outcomes: dict[str, str]


class _Rows:
    """The rows one enqueue batch writes, gathered message by message."""

    def __init__(self) -> None:
        self.messages: list[tuple[Any, ...]] = []
        self.keys: list[tuple[str, str, float]] = []
        self.joins: list[tuple[str, str, int, int, int, int]] = []
        self.members: list[tuple[str, str]] = []

    def write(self, db: sqlite3.Connection) -> None:
        sql = queries()
        db.executemany(sql["insert_message"], self.messages)
        if self.keys:
            db.executemany(sql["insert_key"], self.keys)
        if self.joins:
            db.executemany(sql["insert_join"], self.joins)
        if self.members:
            db.executemany(sql["insert_member"], self.members)

    def add_join(self, mid: str, join: JoinStart) -> None:
        """The counters of the join message ``mid`` and a row per unsettled member."""
        self.joins.append(
            (mid, join.mode, join.total, join.settled, join.succeeded, int(join.fired))
        )
        self.members.extend((member, mid) for member in join.unsettled)


def enqueue_rows(db: sqlite3.Connection, messages: Sequence[Message], now: float) -> list[str]:
    """Store ``messages`` through ``db``, inside whatever transaction it is in; the ids that
    stand for them. Shared by ``enqueue`` (its own transaction) and ``enqueue_in`` (the
    application's transaction)."""
    stored = _read_stored(db, messages, now)
    ids: list[str] = []
    rows = _Rows()
    for m in messages:
        if m.key is not None:
            holder = stored.keys.get(m.key)
            if holder is not None:
                ids.append(holder)
                continue
        ids.append(m.id)
        if m.id in stored.ids:
            continue
        stored.ids.add(m.id)
        if m.key is not None:
            stored.keys[m.key] = m.id
            rows.keys.append((m.key, m.id, now + m.result_ttl))
        state, join = first_state(m, stored.outcomes)
        if join is not None:
            rows.add_join(m.id, join)
        after = m.after if m.join is None else None
        due = max(now + m.delay, m.run_at or 0.0)
        rows.messages.append(message_row(m, state, due, after, codec.encode_message(m), now))
    rows.write(db)
    return ids


def _read_stored(db: sqlite3.Connection, messages: Sequence[Message], now: float) -> _Stored:
    """The ids, keys and outcomes already stored that ``messages`` name, in three reads."""
    sql = queries()
    existing = {
        row[0] for row in db.execute(sql["existing"], (json_array([m.id for m in messages]),))
    }
    keys = [m.key for m in messages if m.key is not None]
    held: dict[str, str] = (
        dict(db.execute(sql["held_keys"], (json_array(keys), now)).fetchall()) if keys else {}
    )
    refs = dependencies(messages)
    outcomes: dict[str, str] = (
        dict(db.execute(sql["result_states"], (json_array(refs),)).fetchall()) if refs else {}
    )
    return _Stored(existing, held, outcomes)


def sent_at(body: bytes) -> float | None:
    """When a message was stored, for ``inspect``: the ``created_at`` of its body. SQLite's
    clock is the host's (``time.time()``, what ``now`` reads too), and a database file is
    shared only by processes of one host, so a sender's clock is the backend's; reading it
    from the body spares the messages table a column (the schema may only add tables)."""
    try:
        created = codec.decode_message(body).created_at
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return created or None

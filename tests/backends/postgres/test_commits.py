"""Which commits wait for the WAL flush: every one that makes a promise, and no other.

A lease is nobody's promise (lost in a server crash, the message is delivered again, as
at-least-once delivery allows), so its commit skips the fsync on the path of every message;
an enqueue (an accepted message) and a settle (a visible outcome) wait for it.
"""

from __future__ import annotations

import asyncpg

from pigeon.backends.postgres import PostgresBackend
from tests.backends.postgres.conftest import server_dsn
from tests.conformance.messages import make_message


async def committed_durably(conn: asyncpg.Connection, sql: str, *args: object) -> bool:
    """Run ``sql`` in a transaction and say whether its commit would wait for the flush."""
    async with conn.transaction():
        await conn.fetch(sql, *args)
        setting = await conn.fetchval("SHOW synchronous_commit")
    return bool(setting != "off")


async def test_a_lease_commits_without_waiting_for_the_flush_and_a_settle_waits(
    backend: PostgresBackend, pg_url: str
) -> None:
    message = make_message()
    await backend.enqueue([message])
    sql = backend._sql  # the statements the backend runs, rendered for this schema
    conn = await asyncpg.connect(server_dsn(pg_url))
    try:
        assert await conn.fetchval("SHOW synchronous_commit") == "on"
        assert not await committed_durably(conn, sql["lease"], ["q"], 10, "w", None, True)
        # SET LOCAL: the next transaction on the same connection is durable again.
        assert await conn.fetchval("SHOW synchronous_commit") == "on"
        attempt = await conn.fetchval(
            f"SELECT attempt FROM {backend.schema}.messages WHERE id = $1", message.id
        )
        assert attempt == 1  # it was leased, by the statement that skipped the flush
        assert await committed_durably(
            conn,
            sql["settle"],
            [message.id],
            [1],
            ["succeeded"],
            [60.0],
            [b'{"state":"succeeded"}'],
            [None],
            [],
            [],
            [],
            60.0,
            60.0,
        )
        assert await committed_durably(
            conn,
            sql["insert_new"],
            ["m2"],
            [b"x"],
            "q",
            "t",
            0,
            0.0,
            None,
            3,
            30.0,
            None,
            60.0,
            None,
            True,
        )
    finally:
        await conn.close()

"""A follow-up or a join enqueued in a transaction that commits while its parent settles.

The enqueue marks the messages it depends on (and so holds them) until it commits; the
settle of such a message waits for it, then must see the new dependant and release or
count it. A settle that missed it would leave the follow-up waiting forever. The
application's own transaction (``enqueue_in``) makes the window as wide as the test wants.
"""

from __future__ import annotations

import asyncio

import asyncpg

from pigeon.backends.postgres import PostgresBackend
from pigeon.message import JoinSpec
from tests.conformance.messages import make_message, succeeded

from .conftest import server_dsn


async def settle_while_dependant_commits(
    backend: PostgresBackend, pg_url: str, dependant_of: object
) -> str:
    """Lease a parent, enqueue ``dependant_of(parent)`` in an open transaction, settle the
    parent meanwhile, commit; returns the dependant's state afterwards."""
    parent = make_message()
    await backend.enqueue([parent])
    [delivery] = await backend.fetch(["q"], 1, "w")
    dependant = dependant_of(parent)  # type: ignore[operator]
    conn = await asyncpg.connect(server_dsn(pg_url))
    try:
        transaction = conn.transaction()
        await transaction.start()
        await backend.enqueue_in(conn, [dependant])
        settling = asyncio.create_task(backend.settle([succeeded(delivery)]))
        await asyncio.sleep(0.3)
        assert not settling.done(), "the settle did not wait for the dependant's transaction"
        await transaction.commit()
        assert await asyncio.wait_for(settling, 10) == [True]
    finally:
        await conn.close()
    info = await backend.inspect(dependant.id)
    assert info is not None
    return info.state


async def test_a_follow_up_committed_while_its_parent_settles_is_released(
    backend: PostgresBackend, pg_url: str
) -> None:
    state = await settle_while_dependant_commits(
        backend, pg_url, lambda parent: make_message("next", after=parent.id, mode="then")
    )
    assert state == "pending"
    assert len(await backend.fetch(["next"], 1, "w")) == 1


async def test_a_join_committed_while_its_member_settles_counts_it(
    backend: PostgresBackend, pg_url: str
) -> None:
    state = await settle_while_dependant_commits(
        backend, pg_url, lambda parent: make_message("next", join=JoinSpec([parent.id], "all"))
    )
    assert state == "pending"
    assert len(await backend.fetch(["next"], 1, "w")) == 1

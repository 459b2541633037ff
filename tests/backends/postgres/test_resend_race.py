"""An id sent again while its message settles is not stored again.

A sender whose send raised (its connection dropped) sends the same message again: the
contract says an id already stored is not stored twice, and one that has an outcome must
not run again. The enqueue's check for an outcome reads the snapshot its statement started
with; a settle that commits after that (the enqueue waits for its lock on the row) used to
leave the id stored again, to run a second time as its first attempt (the chaos test
``test_connection_faults`` caught it). Here the settle is held open in a transaction of its
own, so the enqueue waits on it every time, by every enqueue path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from pigeon.backends.postgres import PostgresBackend, settling
from pigeon.message import Message
from tests.conformance.messages import make_message, make_messages, succeeded

from .conftest import server_dsn

# How each enqueue path sends the message again, first in a batch: (backend, the batch, a
# connection in a transaction of the application's) -> the ids acknowledged.
Resend = Callable[[PostgresBackend, list[Message], asyncpg.Connection], Awaitable[list[str]]]


async def by_enqueue(backend: PostgresBackend, batch: list[Message], _: object) -> list[str]:
    return await backend.enqueue(batch)


async def by_enqueue_in(
    backend: PostgresBackend, batch: list[Message], conn: asyncpg.Connection
) -> list[str]:
    return await backend.enqueue_in(conn, batch)


# path -> (how, the message's fields, the rest of its batch). Plain alone is insert_new;
# next to a message of other options, insert_messages; a keyed one, insert_messages in a
# transaction of the backend's; a big plain batch, executemany; enqueue_in, the
# application's transaction.
PATHS: dict[str, tuple[Resend, dict[str, object], list[Message]]] = {
    "plain alone": (by_enqueue, {}, []),
    "next to other options": (by_enqueue, {}, [make_message(priority=7)]),
    "with its key": (by_enqueue, {"key": "k-resend"}, []),
    "in a big plain batch": (by_enqueue, {}, make_messages(1500)),
    "in the application's transaction": (by_enqueue_in, {}, [make_message()]),
}


@pytest.mark.parametrize("path", list(PATHS))
async def test_an_id_sent_again_while_it_settles_is_not_stored_again(
    backend: PostgresBackend, pg_url: str, path: str
) -> None:
    resend, fields, others = PATHS[path]
    m = make_message(**fields)
    assert await backend.enqueue([m]) == [m.id]
    [delivery] = await backend.fetch(["q"], 1, "w")
    settler = await asyncpg.connect(server_dsn(pg_url))
    app_conn = await asyncpg.connect(server_dsn(pg_url))
    try:
        settle = settler.transaction()
        await settle.start()
        assert await settling.settle(settler, backend._sql, [succeeded(delivery)]) == [True]
        app_transaction = app_conn.transaction()
        await app_transaction.start()
        sending = asyncio.create_task(resend(backend, [m, *others], app_conn))
        await asyncio.sleep(0.3)
        assert not sending.done(), "the send did not wait for the settle's lock on the row"
        await settle.commit()
        assert (await asyncio.wait_for(sending, 10))[0] == m.id
        await app_transaction.commit()
    finally:
        await settler.close()
        await app_conn.close()
    info = await backend.inspect(m.id)
    assert info is not None
    assert info.state == "succeeded", info
    fetched = await backend.fetch(["q"], len(others) + 1, "w")
    assert m.id not in {d.id for d in fetched}, "the settled id was stored again, to run again"
    assert {d.id for d in fetched} == {o.id for o in others}, "the rest of the batch is lost"

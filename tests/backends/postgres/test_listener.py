"""The listening connection, error messages, and the hot table under sustained load."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from pigeon.backends.postgres import VACUUM_EVERY, PostgresBackend
from pigeon.errors import BackendError
from pigeon.message import Message, Outcome, new_id

from .conftest import schema_of, server_dsn


async def listening_pids(url: str) -> list[int]:
    """The server processes LISTENing on this test's schema's channels."""
    conn = await asyncpg.connect(server_dsn(url))
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE query LIKE $1", f'LISTEN "{schema_of(url)}.%'
        )
        return [r[0] for r in rows]
    finally:
        await conn.close()


async def until(check: object, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"still waiting for {what}"
        await asyncio.sleep(0.02)


async def test_waiters_see_outcomes_and_work_while_and_after_the_listener_is_killed(
    backend: PostgresBackend, pg_url: str
) -> None:
    other = PostgresBackend(pg_url)
    await other.open()
    try:
        first, second = Message(new_id(), "t", "q"), Message(new_id(), "t", "q")
        await other.enqueue([first, second])
        a, b = await other.fetch(["q"], 2, "w")
        waiting = asyncio.create_task(backend.wait([first.id], timeout=20))

        async def listening() -> bool:
            return len(await listening_pids(pg_url)) == 1

        await until(listening, "the backend to listen")
        [pid] = await listening_pids(pg_url)
        killer = await asyncpg.connect(server_dsn(pg_url))
        try:
            assert await killer.fetchval("SELECT pg_terminate_backend($1)", pid)
        finally:
            await killer.close()
        # Settled at once: its notification may reach nobody, the waiter must still see it.
        assert await other.settle([Outcome(a.id, a.attempt, "succeeded")]) == [True]
        started = time.monotonic()
        found = await asyncio.wait_for(waiting, 5)
        assert set(found) == {first.id}
        assert time.monotonic() - started < 2

        async def listening_again() -> bool:
            pids = await listening_pids(pg_url)
            return len(pids) == 1 and pids != [pid]

        await until(listening_again, "the backend to listen again")
        fetching = asyncio.create_task(backend.fetch(["fresh"], 1, "w", wait=20))
        await asyncio.sleep(0.1)
        message = Message(new_id(), "t", "fresh")
        started = time.monotonic()
        await other.enqueue([message])
        assert [d.id for d in await asyncio.wait_for(fetching, 5)] == [message.id]
        assert time.monotonic() - started < 2, "the fetch was not woken by the notification"

        waiting = asyncio.create_task(backend.wait([second.id], timeout=20))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        assert await other.settle([Outcome(b.id, b.attempt, "succeeded")]) == [True]
        assert set(await asyncio.wait_for(waiting, 5)) == {second.id}
        assert time.monotonic() - started < 1
    finally:
        await other.close()


async def test_a_password_never_appears_in_errors_or_the_url() -> None:
    url = "postgresql://pigeon:correct-horse-battery@127.0.0.1:1/nowhere?schema=x"
    backend = PostgresBackend(url)

    with pytest.raises(BackendError) as raised:
        await backend.open()

    assert "correct-horse-battery" not in str(raised.value)
    assert "pigeon:***@127.0.0.1:1" in str(raised.value)
    assert "correct-horse-battery" not in backend.url + repr(backend)
    await backend.close()


async def table_size(url: str, table: str) -> int:
    conn = await asyncpg.connect(server_dsn(url))
    try:
        size: int = await conn.fetchval(
            "SELECT pg_total_relation_size($1)", f'"{schema_of(url)}".{table}'
        )
        return size
    finally:
        await conn.close()


async def test_the_messages_table_stays_bounded_under_sustained_load(
    backend: PostgresBackend, pg_url: str
) -> None:
    batch = 500

    async def push(count: int) -> None:
        for _ in range(count // batch):
            await backend.enqueue([Message(new_id(), "t", "q") for _ in range(batch)])
            deliveries = await backend.fetch(["q"], batch, "w")
            outcomes = [Outcome(d.id, d.attempt, "succeeded", result_ttl=60) for d in deliveries]
            assert await backend.settle(outcomes) == [True] * batch
        await backend.close()  # lets a vacuum under way finish

    await push(2 * VACUUM_EVERY)
    warmed = await table_size(pg_url, "messages")
    await push(8 * VACUUM_EVERY)
    after = await table_size(pg_url, "messages")

    # 40,000 more messages passed through; without vacuuming the table would grow by them.
    assert after <= warmed * 1.5, f"{warmed:,} bytes after warming up, {after:,} after"


async def listened(backend: PostgresBackend) -> set[str]:
    """The channels the backend's listening connection LISTENs on."""
    session = backend._session
    assert session is not None
    assert session.listener is not None
    conn = session.listener._conn
    return {row[0] for row in await conn.fetch("SELECT pg_listening_channels()")}


async def test_a_channel_is_listened_on_only_once_something_waits_on_it(
    backend: PostgresBackend, pg_url: str
) -> None:
    # A process that sends and waits for outcomes is not woken by every enqueue's NOTIFY
    # on "work", nor a worker by every settle's on "done": each wake-up costs a server
    # process and the client on the path of the message that caused it.
    worker = PostgresBackend(pg_url)
    await worker.open()
    try:
        message = Message(new_id(), "t", "q")
        await backend.enqueue([message])
        waiting = asyncio.create_task(backend.wait([message.id], timeout=20))
        [delivery] = await worker.fetch(["q"], 1, "w", wait=5)
        assert await worker.settle([Outcome(delivery.id, delivery.attempt, "succeeded")]) == [True]
        assert set(await asyncio.wait_for(waiting, 5)) == {message.id}
        schema = schema_of(pg_url)
        assert await listened(backend) == {f"{schema}.done"}
        assert await listened(worker) == {f"{schema}.work"}
        # and a channel asked for later is added to the same connection
        assert await backend.fetch(["q"], 1, "w", wait=0.05) == []
        assert await listened(backend) == {f"{schema}.done", f"{schema}.work"}
    finally:
        await worker.close()


async def test_waiting_on_a_message_stored_here_reads_nothing_until_in_doubt(
    backend: PostgresBackend, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The listener hears settles from before the enqueue: the read that starts a wait
    # cannot find anything the notification will not bring (pigeon.backends.tracking).
    reads: list[list[str]] = []
    read = backend.results

    async def counted(ids: object) -> object:
        reads.append(sorted(ids))  # type: ignore[call-overload]
        return await read(ids)  # type: ignore[arg-type]

    monkeypatch.setattr(backend, "results", counted)
    worker = PostgresBackend(pg_url)
    await worker.open()
    try:
        await backend.wait(["warm-up"], timeout=0.01)  # listening on "done" from here on
        reads.clear()
        message = Message(new_id(), "t", "q")
        await backend.enqueue([message])
        waiting = asyncio.create_task(backend.wait([message.id], timeout=20))
        [delivery] = await worker.fetch(["q"], 1, "w", wait=5)
        await worker.settle([Outcome(delivery.id, delivery.attempt, "succeeded")])
        assert [r.id for r in (await asyncio.wait_for(waiting, 5)).values()] == [message.id]
        assert reads == [], "the wait read the store for a message it was sure to hear of"

        # Settled before anyone waits: handed over from what the listener heard.
        second = Message(new_id(), "t", "q")
        await backend.enqueue([second])
        [delivery] = await worker.fetch(["q"], 1, "w", wait=5)
        await worker.settle([Outcome(delivery.id, delivery.attempt, "succeeded")])
        await asyncio.sleep(0.2)  # the notification arrives
        assert list(await backend.wait([second.id], timeout=5)) == [second.id]
        assert reads == []

        # In doubt (the listening connection was lost since the enqueue): read.
        third = Message(new_id(), "t", "q")
        await backend.enqueue([third])
        assert backend._session is not None
        assert backend._session.listener is not None
        pid = backend._session.listener._conn.get_server_pid()
        killer = await asyncpg.connect(server_dsn(pg_url))
        try:
            assert await killer.fetchval("SELECT pg_terminate_backend($1)", pid)
        finally:
            await killer.close()
        await asyncio.sleep(0.3)  # the loss is noticed
        assert await backend.wait([third.id], timeout=0.05) == {}
        assert [third.id] in reads
    finally:
        await worker.close()

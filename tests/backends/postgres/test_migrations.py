"""Schema migrations: upgrading from the first version, refusing to run behind, concurrency."""

from __future__ import annotations

import asyncio

import asyncpg
import msgspec
import pytest
from click.testing import CliRunner

from pigeon import codec
from pigeon.backends.postgres import PostgresBackend, latest_version, migrations
from pigeon.cli import cli
from pigeon.errors import ConfigError
from pigeon.message import (
    Event,
    Failure,
    Message,
    Outcome,
    Progress,
    Result,
    Slot,
    Take,
    new_id,
)

from .conftest import schema_of, server_dsn


def without_migrating(url: str) -> str:
    return f"{url}&migrate=false"


async def versions(url: str) -> list[int]:
    conn = await asyncpg.connect(server_dsn(url))
    try:
        rows = await conn.fetch(
            f'SELECT version FROM "{schema_of(url)}".schema_version ORDER BY version'
        )
        return [r[0] for r in rows]
    finally:
        await conn.close()


async def test_the_migrations_are_numbered_from_one_without_gaps() -> None:
    assert [m.version for m in migrations()] == list(range(1, latest_version() + 1))
    assert migrations()[0].name == "0001_initial"
    assert latest_version() >= 2, "an upgrade needs a second version to upgrade to"


async def write_version_1_data(
    pg_url: str,
    pending: Message,
    parent: Message,
    follower: Message,
    settled: Message,
    died: Message,
) -> None:
    """Store, as schema version 1 does, a pending keyed message, a leased parent with its
    waiting follower, an outcome and a dead letter."""
    conn = await asyncpg.connect(server_dsn(pg_url))
    schema = f'"{schema_of(pg_url)}"'
    try:
        await conn.executemany(
            f"INSERT INTO {schema}.messages (id, queue, task, due, state, attempt, max_deliveries,"
            " lease_len, lease_until, worker, key, result_ttl, after, body)"
            " VALUES ($1, 'q', 't', now() - interval '1 s', $2, $3, 3, 30, $4, $5, $6, 86400,"
            " $7, $8)",
            [
                (pending.id, "pending", 0, None, None, "k", None, codec.encode_message(pending)),
                (parent.id, "leased", 1, None, "w", None, None, codec.encode_message(parent)),
                (
                    follower.id,
                    "waiting",
                    0,
                    None,
                    None,
                    None,
                    parent.id,
                    codec.encode_message(follower),
                ),
            ],
        )
        await conn.execute(
            f"UPDATE {schema}.messages SET lease_until = now() + interval '60 s'"
            " WHERE state = 'leased'"
        )
        await conn.execute(
            f"INSERT INTO {schema}.keys VALUES ('k', $1, now() + interval '1 day')", pending.id
        )
        result = Result(settled.id, "succeeded", msgspec.Raw(b'"kept"'))
        await conn.execute(
            f"INSERT INTO {schema}.results VALUES ($1, 'succeeded', now(),"
            " now() + interval '1 day', $2)",
            settled.id,
            codec.encode_result_record(result),
        )
        await conn.execute(
            f"INSERT INTO {schema}.dead VALUES ($1, 'q', 't', 'Boom: it broke', now(),"
            " now() + interval '7 days', $2)",
            died.id,
            codec.encode_message(died),
        )
    finally:
        await conn.close()


async def test_upgrade_from_the_first_schema_version_keeps_the_data_and_every_operation_works(
    pg_url: str,
) -> None:
    old = PostgresBackend(pg_url)
    assert await old.migrate(target=1) == ["0001_initial"]
    assert await versions(pg_url) == [1]

    # Data written at version 1, as that schema stores it.
    pending = Message(new_id(), "t", "q", args=msgspec.Raw(b"[1]"))
    parent = Message(new_id(), "t", "q")
    follower = Message(new_id(), "t", "q", after=parent.id, mode="then")
    settled = Message(new_id(), "t", "q")
    died = Message(new_id(), "t", "q")
    await write_version_1_data(pg_url, pending, parent, follower, settled, died)

    # A pigeon that may not migrate refuses to run on the old schema, saying what to do.
    refusing = PostgresBackend(without_migrating(pg_url))
    with pytest.raises(ConfigError, match="pigeon migrate"):
        await refusing.open()
    await refusing.close()

    assert await old.migrate() == [m.name for m in migrations()[1:]]
    assert await versions(pg_url) == list(range(1, latest_version() + 1))
    assert await old.migrate() == []

    backend = PostgresBackend(without_migrating(pg_url))
    await backend.open()
    try:
        [delivery] = await backend.fetch(["q"], 10, "w")
        assert (delivery.id, codec.decode_message(delivery.body)) == (pending.id, pending)
        assert await backend.settle([Outcome(parent.id, 1, "succeeded")]) == [True]
        [released] = await backend.fetch(["q"], 10, "w")
        assert released.id == follower.id
        assert (await backend.results([settled.id]))[settled.id].value == msgspec.Raw(b'"kept"')
        [letter] = await backend.dead_letters()
        assert (letter.id, letter.reason) == (died.id, "Boom: it broke")
        assert await backend.enqueue([Message(new_id(), "t", "q", key="k")]) == [pending.id]
        assert await backend.requeue([died.id]) == 1
        error = Failure("E", "late")
        assert await backend.settle([Outcome(delivery.id, 1, "failed", error=error)]) == [True]
        assert (await backend.results([pending.id]))[pending.id].error == error

        # What later versions added: limits, progress, events, the scheduler's marks.
        await backend.mark_schedules({"tick": 1000.5})
        await backend.mark_schedules({"tick": 999.0})
        assert await backend.schedules(["tick", "other"]) == {"tick": 1000.5}
        assert await backend.take([Take("bucket", 10.0), Take("bucket", 10.0)]) == [0.0, 10.0]
        assert await backend.acquire([Slot("limit", "a"), Slot("limit", "b")]) == [True, False]
        await backend.report([Progress(pending.id, 0.5, "half")], ttl=60)
        assert await backend.progress([pending.id]) == {
            pending.id: Progress(pending.id, 0.5, "half")
        }
        cursor, _ = await backend.read_events(None)
        await backend.publish([Event("sent", pending.id)])
        assert (await backend.read_events(cursor))[1] == [Event("sent", pending.id)]
        assert await backend.release([], delay=1.0) == 0
    finally:
        await backend.close()


async def test_a_pigeon_that_may_not_migrate_refuses_an_empty_database(pg_url: str) -> None:
    backend = PostgresBackend(without_migrating(pg_url))
    with pytest.raises(ConfigError, match=r"version 0.*pigeon migrate"):
        await backend.open()
    await backend.close()
    assert await backend.schema_version() == 0


async def test_many_processes_starting_at_once_apply_each_migration_exactly_once(
    pg_url: str,
) -> None:
    starters = [PostgresBackend(pg_url) for _ in range(8)]

    applied = await asyncio.gather(*(b.migrate() for b in starters))

    names = [name for batch in applied for name in batch]
    assert sorted(names) == [m.name for m in migrations()]
    assert await versions(pg_url) == list(range(1, latest_version() + 1))
    await asyncio.gather(*(b.open() for b in starters))
    await asyncio.gather(*(b.close() for b in starters))


async def test_a_schema_made_by_a_newer_pigeon_is_refused(pg_url: str) -> None:
    backend = PostgresBackend(pg_url)
    await backend.migrate()
    conn = await asyncpg.connect(server_dsn(pg_url))
    try:
        await conn.execute(
            f'INSERT INTO "{schema_of(pg_url)}".schema_version (version, name)'
            " VALUES (9999, '9999_future')"
        )
    finally:
        await conn.close()

    with pytest.raises(ConfigError, match="newer pigeon"):
        await backend.open()
    await backend.close()


def test_pigeon_migrate_applies_what_is_missing_and_then_says_up_to_date(pg_url: str) -> None:
    runner = CliRunner()

    first = runner.invoke(cli, ["migrate", "--url", pg_url])
    again = runner.invoke(cli, ["migrate", "--url", pg_url])

    assert first.exit_code == 0, first.output
    assert [line for line in first.output.splitlines() if line.startswith("applied")] == [
        f"applied {m.name}" for m in migrations()
    ]
    assert f"schema at version {latest_version()}" in first.output
    assert again.exit_code == 0, again.output
    assert again.output.strip() == f"schema at version {latest_version()}, up to date"
    status = runner.invoke(cli, ["status", "--url", without_migrating(pg_url)])
    assert status.exit_code == 0, status.output

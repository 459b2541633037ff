"""The PostgreSQL backend's schema: its SQL files, the migrations, and the statements of
``queries.sql`` rendered for one schema.

Migrations (``sql/NNNN_*.sql``) are recorded in ``schema_version`` and applied in one
transaction under an advisory lock, so that many processes may start at once.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import logging
import re
from dataclasses import dataclass
from typing import Any, cast

from pigeon.backends import statements
from pigeon.errors import ConfigError

log = logging.getLogger("pigeon.backends.postgres")

#: The oldest server with everything the schema uses (per-table insert autovacuum settings).
MIN_SERVER = 13


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def channel(schema: str, kind: str) -> str:
    """The notification channel of one schema (a name of at most 63 bytes)."""
    name = f"{schema}.{kind}"
    if len(name.encode()) > 63:
        digest = hashlib.blake2b(schema.encode(), digest_size=8).hexdigest()
        name = f"pigeon.{digest}.{kind}"
    return name


def _sql_files() -> list[tuple[str, str]]:
    folder = importlib.resources.files("pigeon.backends.postgres").joinpath("sql")
    return sorted(
        (entry.name, entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    )


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


@functools.cache
def migrations() -> tuple[Migration, ...]:
    """Every schema migration this pigeon knows (``NNNN_name.sql``), in version order."""
    found = []
    for name, text in _sql_files():
        match = re.fullmatch(r"(\d{4})_(\w+)\.sql", name)
        if match:
            found.append(Migration(int(match[1]), name.removesuffix(".sql"), text))
    versions = [m.version for m in found]
    assert versions == list(range(1, len(found) + 1)), f"migrations out of sequence: {versions}"
    return tuple(found)


def latest_version() -> int:
    return migrations()[-1].version


@functools.cache
def _queries() -> dict[str, str]:
    """The statements of queries.sql by name, with their placeholders in."""
    return statements.load("pigeon.backends.postgres", "sql/queries.sql")


def render(schema: str) -> dict[str, str]:
    """The statements of queries.sql by name, for ``schema`` and its notification channels."""
    schema_ident = quote_ident(schema)
    work = _quote_literal(channel(schema, "work"))
    done = _quote_literal(channel(schema, "done"))
    events = _quote_literal(channel(schema, "events"))
    return {
        name: sql.replace("__schema__", schema_ident)
        .replace("'__work__'", work)
        .replace("'__done__'", done)
        .replace("'__events__'", events)
        for name, sql in _queries().items()
    }


def _lock_key(schema: str) -> int:
    """The advisory lock that serializes migrations of one schema."""
    digest = hashlib.blake2b(f"pigeon.migrate:{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def version_of(conn: Any, schema: str) -> int:
    """The version of ``schema`` in the database of ``conn`` (0: no pigeon schema there)."""
    table = f"{quote_ident(schema)}.schema_version"
    if await conn.fetchval("SELECT to_regclass($1)", table) is None:
        return 0
    return cast(int, await conn.fetchval(f"SELECT coalesce(max(version), 0) FROM {table}"))


async def check(conn: Any, schema: str, url: str, auto_migrate: bool) -> None:
    """Bring ``schema`` up to date if ``auto_migrate``; raise ConfigError unless it then is.

    asyncpg's errors are left to the caller (``url`` is the redacted URL, for messages)."""
    version = await version_of(conn, schema)
    if version < latest_version() and auto_migrate:
        await migrate(conn, schema, url, None)
        version = latest_version()
    if version > latest_version():
        raise ConfigError(
            f"PostgreSQL {url}: schema {schema!r} is at version {version}, made "
            f"by a newer pigeon (this one knows up to {latest_version()}); upgrade pigeon"
        )
    if version < latest_version():
        raise ConfigError(
            f"PostgreSQL {url}: schema {schema!r} is at version {version}, this "
            f"pigeon needs {latest_version()} and the URL says migrate=false: run "
            f"`pigeon migrate --url URL`"
        )


async def migrate(conn: Any, schema: str, url: str, target: int | None) -> list[str]:
    """Apply the migrations ``schema`` lacks (up to ``target``) on ``conn``, in order, in one
    transaction under the schema's advisory lock; the names of those applied.

    Raises ConfigError for a server older than ``MIN_SERVER`` or a schema made by a newer
    pigeon; asyncpg's errors are left to the caller.
    """
    version = conn.get_server_version()
    if version.major < MIN_SERVER:
        raise ConfigError(
            f"PostgreSQL {url}: pigeon needs PostgreSQL {MIN_SERVER} or later; this "
            f"server is {version.major}.{version.minor}"
        )
    ident = quote_ident(schema)
    applied: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _lock_key(schema))
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {ident}")
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {ident}.schema_version ("
            "version integer PRIMARY KEY, name text NOT NULL, "
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row[0] for row in await conn.fetch(f"SELECT version FROM {ident}.schema_version")}
        if done and max(done) > latest_version():
            raise ConfigError(
                f"PostgreSQL {url}: schema {schema!r} is at version {max(done)}, "
                f"made by a newer pigeon (this one knows up to {latest_version()})"
            )
        await conn.execute(f"SET LOCAL search_path TO {ident}")
        for migration in migrations():
            if migration.version in done or (target is not None and migration.version > target):
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                f"INSERT INTO {ident}.schema_version (version, name) VALUES ($1, $2)",
                migration.version,
                migration.name,
            )
            applied.append(migration.name)
    if applied:
        log.info("PostgreSQL %s: applied %s", url, ", ".join(applied))
    return applied

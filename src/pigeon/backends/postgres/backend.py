"""``postgresql://``: PostgreSQL through asyncpg, pushed wake-ups and transactional enqueue.

How it keeps the contract of :mod:`pigeon.backends.base`:

- URL: ``postgresql://user[:password]@host[:port]/db?schema=NAME`` (default schema
  ``pigeon``: every table lives there). ``migrate=false`` forbids creating or upgrading the
  schema on first use; other query parameters (``sslmode``, ...) go to asyncpg.
- Schema: versioned migrations (``sql/NNNN_*.sql``) recorded in
  ``schema_version``, applied by :meth:`PostgresBackend.migrate` (``pigeon migrate``) in one
  transaction under an advisory lock, so that many processes may start at once. ``open()``
  applies the missing ones unless the URL says ``migrate=false``.
- Connections: a pool (1 to ``POOL_MAX``) runs the operations; every statement is in
  ``sql/queries.sql``, prepared once per connection (``SESSION_SETTINGS`` says how
  they are planned), with batches passed as arrays. One more connection per backend object
  LISTENs (:mod:`pigeon.backends.postgres.listener`), opened on first need.
- fetch leases a batch in one statement: ``FOR NO KEY UPDATE SKIP LOCKED`` over the fetch
  index, so concurrent fetchers neither wait for nor share a message. Lapsed leases, poison
  and expired messages are handled in a transaction of their own when that statement
  reports some.
- settle is one call of the schema's ``settle()`` function (PL/pgSQL: one round trip per
  batch, and each of its statements sees what committed before it). Enqueueing a follow-up
  or a join marks the messages it depends on (``dependents``), which holds them: a
  concurrent settle of one waits for it, then finds it. Messages without dependants are
  settled by one statement.
- Notifications: enqueue, release, retry and released follow-ups NOTIFY ``<schema>.work``
  with the queue name, so ``fetch(wait=...)`` sleeps until one of its queues has work (or
  until the next due time the last look reported); settle, cancel and poison NOTIFY
  ``<schema>.done`` with the ids (and the outcomes that fit), so ``wait`` wakes at once,
  usually without a query. NOTIFY is transactional: nobody is woken for work that is rolled
  back. When the listening connection is lost, waiters poll until it is back, then all
  re-check (a notification may have been missed).
- Rate limits: ``take`` is one call of the schema's ``take()`` function, which locks the
  batch's buckets (rows of ``buckets``, in name order) and then reads the clock, so callers
  of a bucket are served one after the other. Concurrency limits: ``acquire`` is one call
  of ``acquire()``, which serializes each limit name with a transaction-level advisory lock
  before counting its unexpired ``places``.
- Progress: the latest report of each id, upserted into ``progress`` with its expiry.
- Events: one ``events`` table with a ``bigserial`` seq (a reader's cursor). ``publish()``
  takes a transaction-level advisory lock before drawing seqs, so publishes are serialized
  and seqs become visible in order (a reader never skips one committed late); it NOTIFYs
  ``<schema>.events``, which wakes sleeping readers. Every ``PRUNE_EVENTS_EVERY`` events
  it deletes all but the newest ``EVENTS_KEPT``.
- Clock: the database's (``now()``, or ``clock_timestamp()`` read once the rows or locks an
  operation waits for are held), never this host's.
- Enqueue: a batch of messages without keys or links that share their options (a bulk
  send) is ``insert_new`` per ``PLAIN_CHUNK``, pipelined by ``executemany``: ids and bodies
  are its only arrays, and it skips ``ON CONFLICT`` (falling back to ``insert_plain`` when
  an id turns out to be a message already). Other batches are one ``insert_messages``.
- Transactional enqueue: :meth:`PostgresBackend.enqueue_in` writes messages through the
  application's own asyncpg connection, inside its transaction (``App.transaction``).

Settled messages leave the ``messages`` table at once; outcomes, keys, dead letters, worker
records, locks, buckets, places and progress reports expire and are deleted by ``sweep()``
in bounded batches; the hot table
is vacuumed every ``VACUUM_EVERY`` leases (``_count_leases`` says why). Passwords never
appear in errors: asyncpg's errors are re-raised as BackendError with the URL redacted.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import importlib.resources
import logging
import re
from collections.abc import AsyncIterator, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import asyncpg
import msgspec

from pigeon import codec
from pigeon.aio import shielded
from pigeon.backends import statements
from pigeon.backends.base import (
    DEAD_LETTER_TTL,
    EVENTS_KEPT,
    PlainOptions,
    join_fired,
    plain_options,
    redact,
)
from pigeon.backends.postgres.listener import (
    DB_ERRORS,
    EVENTS,
    Kind,
    Listener,
    Waker,
    stored_result,
)
from pigeon.errors import BackendError, ConfigError
from pigeon.message import (
    DeadLetter,
    Delivery,
    Event,
    Failure,
    Lease,
    Message,
    MessageInfo,
    Outcome,
    Progress,
    QueueStats,
    Result,
    Slot,
    Stats,
    Take,
    WorkerInfo,
)

log = logging.getLogger(__name__)


FinalState = Literal["succeeded", "failed", "cancelled", "dead"]

DEFAULT_SCHEMA = "pigeon"
#: The oldest server with everything the schema uses (per-table insert autovacuum settings).
MIN_SERVER = 13
#: The pool's bounds: operations are batched, so a few connections carry a busy worker.
POOL_MIN = 1
POOL_MAX = 10
CONNECT_TIMEOUT = 10.0
#: A result with followers or joins waiting on it is kept this long even when its ttl is 0.
KEEP_FOR_DEPENDENTS = 86400.0
#: sweep() deletes at most this many rows per statement, so it never holds locks long.
SWEEP_CHUNK = 5000
#: Messages per insert_plain statement when a plain batch is bigger (see _insert_plain).
PLAIN_CHUNK = 1000
#: Leases made through one backend object between two VACUUMs of the hot table.
VACUUM_EVERY = 5000
#: How often waiters look for themselves while the listening connection is down.
POLL_WHILE_DEAF = 0.1
#: Fewest seconds a fetch sleeps when the next due message is "now" but held by others.
MIN_NAP = 0.002
#: publish() prunes the event log each time it passes a multiple of this many events.
PRUNE_EVENTS_EVERY = 1000

#: How the pool's sessions plan. Every statement is prepared once per connection and its
#: plan kept (generic plans: planning these statements costs more than running them). The
#: messages table churns faster than autovacuum refreshes its statistics, so a plan made
#: while it looked empty would scan it sequentially ever after, through every dead row:
#: sequential scans are ruled out where an index serves, as one does for every hot
#: statement here.
SESSION_SETTINGS = {
    "application_name": "pigeon",
    "jit": "off",
    "plan_cache_mode": "force_generic_plan",
    "enable_seqscan": "off",
}

_json_encode = msgspec.json.Encoder().encode
_worker_decoder = msgspec.json.Decoder(WorkerInfo)
_progress_decoder = msgspec.json.Decoder(Progress)
_event_decoder = msgspec.json.Decoder(Event)

# A message leaving the messages table for good:
# (id, queue, task, body, state, value, error, result_ttl)
_Done = tuple[str, str, str, bytes, FinalState, msgspec.Raw | None, Failure | None, float]


# --- URL, SQL files, migrations -------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    """What a postgresql:// URL names: where to connect, the schema, whether to migrate."""

    dsn: str
    schema: str
    migrate: bool
    password: str | None


def _parse_url(url: str) -> _Target:
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("postgresql", "postgres"):
        raise ConfigError(f"not a PostgreSQL URL: {redact(url)!r}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = DEFAULT_SCHEMA
    migrate = True
    rest: list[tuple[str, str]] = []
    for name, value in query:
        if name == "schema":
            schema = value
        elif name == "migrate":
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ConfigError(f"migrate={value!r} in {redact(url)!r}: use true or false")
            migrate = value.lower() in ("true", "1", "yes")
        else:
            rest.append((name, value))
    if not schema or len(schema.encode()) > 63:
        raise ConfigError(f"schema {schema!r} in {redact(url)!r}: give 1 to 63 bytes")
    dsn = urlunsplit(parts._replace(query=urlencode(rest)))
    password = unquote(parts.password) if parts.password else None
    return _Target(dsn, schema, migrate, password)


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _channel(schema: str, kind: str) -> str:
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


def _render(schema: str) -> dict[str, str]:
    schema_ident = _quote_ident(schema)
    work = _quote_literal(_channel(schema, "work"))
    done = _quote_literal(_channel(schema, "done"))
    events = _quote_literal(_channel(schema, "events"))
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


@dataclass
class _Session:
    """Everything bound to the event loop the backend was opened on."""

    loop: asyncio.AbstractEventLoop
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    pool: Any = None
    listener: Listener | None = None
    background: set[asyncio.Task[Any]] = field(default_factory=set)
    leased: int = 0  # messages leased since this session last vacuumed the hot table
    vacuuming: asyncio.Task[None] | None = None


# --- the backend ----------------------------------------------------------------------------


class PostgresBackend:
    """The Backend contract on PostgreSQL (see the module docstring for the how).

    Methods called before ``open()`` open the backend themselves; after ``close()`` the next
    call opens it again. A backend used from a new event loop (its old one closed) reconnects.
    """

    def __init__(self, url: str) -> None:
        self.url = redact(url)
        target = _parse_url(url)
        self._dsn = target.dsn
        self._password = target.password
        self.schema = target.schema
        self.auto_migrate = target.migrate
        self._sql = _render(self.schema)
        self._session: _Session | None = None
        # queues -> (listener.news, loop time of the next due) of the last look that drained them
        self._drained: dict[tuple[str, ...], tuple[tuple[int, ...], float]] = {}

    def __repr__(self) -> str:
        return f"PostgresBackend({self.url!r})"

    # errors and connections ------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        """``text`` without the password, for logs and errors."""
        if self._password:
            text = text.replace(self._password, "***")
        return text

    def _error(self, exc: BaseException) -> BackendError:
        detail = self._scrub(f"{type(exc).__name__}: {exc}".rstrip(": "))
        return BackendError(f"PostgreSQL {self.url}: {detail}")

    async def _connect(self) -> Any:
        """One connection outside the pool (the listener's, migrations')."""
        return await asyncpg.connect(
            self._dsn,
            timeout=CONNECT_TIMEOUT,
            server_settings={"application_name": "pigeon"},
        )

    async def _ready(self) -> _Session:
        """The session of the running loop, opened (and the schema checked) on first use."""
        loop = asyncio.get_running_loop()
        session = self._session
        if session is None or session.loop is not loop:
            if session is not None:
                _abandon(session)  # its loop is gone: start afresh on this one
            session = self._session = _Session(loop)
        if session.pool is not None:
            return session
        async with session.lock:
            if session.pool is None:
                session.pool = await self._open_pool()
        return session

    async def _open_pool(self) -> Any:
        try:
            pool = await asyncpg.create_pool(
                self._dsn,
                min_size=POOL_MIN,
                max_size=POOL_MAX,
                timeout=CONNECT_TIMEOUT,
                max_inactive_connection_lifetime=300.0,
                reset=_keep_session,
                server_settings=SESSION_SETTINGS,
            )
        except DB_ERRORS as exc:
            raise self._error(exc) from None
        try:
            async with pool.acquire() as conn:
                await self._check_schema(conn)
        except BaseException:
            pool.terminate()
            raise
        return pool

    async def _check_schema(self, conn: Any) -> None:
        try:
            version = await self._schema_version(conn)
            if version < latest_version() and self.auto_migrate:
                await self._migrate(conn, None)
                version = latest_version()
        except DB_ERRORS as exc:
            raise self._error(exc) from None
        if version > latest_version():
            raise ConfigError(
                f"PostgreSQL {self.url}: schema {self.schema!r} is at version {version}, made "
                f"by a newer pigeon (this one knows up to {latest_version()}); upgrade pigeon"
            )
        if version < latest_version():
            raise ConfigError(
                f"PostgreSQL {self.url}: schema {self.schema!r} is at version {version}, this "
                f"pigeon needs {latest_version()} and the URL says migrate=false: run "
                f"`pigeon migrate --url URL`"
            )

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        """A pool connection; asyncpg's errors become BackendError (without the password)."""
        session = await self._ready()
        try:
            async with session.pool.acquire() as conn:
                yield conn
        except DB_ERRORS as exc:
            raise self._error(exc) from None

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Any]:
        async with self._connection() as conn, conn.transaction():
            yield conn

    async def _listening(self, kind: Kind) -> Listener:
        """The session's Listener, listening on the ``kind`` channel."""
        session = await self._ready()
        if session.listener is None:
            async with session.lock:
                if session.listener is None:
                    listener = Listener(
                        self._connect,
                        _channel(self.schema, "work"),
                        _channel(self.schema, "done"),
                        self.url,
                        self._scrub,
                        _channel(self.schema, "events"),
                    )
                    try:
                        await listener.start()
                    except DB_ERRORS as exc:
                        raise self._error(exc) from None
                    session.listener = listener
        try:
            await session.listener.listen(kind)
        except DB_ERRORS as exc:
            raise self._error(exc) from None
        return session.listener

    # lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, and bring the schema up to date unless the URL says ``migrate=false``.

        Raises ConfigError when the schema is behind and may not be migrated (run ``pigeon
        migrate``) or was made by a newer pigeon; BackendError when PostgreSQL cannot be
        reached.
        """
        await self._ready()

    async def close(self) -> None:
        """Close the listener and the pool. Calls in flight finish first (up to 10 s)."""
        session, self._session = self._session, None
        if session is None:
            return
        if session.loop is not asyncio.get_running_loop():
            _abandon(session)
            return
        for task in list(session.background):
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await task
        if session.listener is not None:
            await session.listener.close()
        if session.pool is not None:
            try:
                await asyncio.wait_for(session.pool.close(), 10)
            except (TimeoutError, *DB_ERRORS):
                session.pool.terminate()

    async def time(self) -> float:
        """The backend clock: the database server's ``clock_timestamp()``."""
        async with self._connection() as conn:
            return cast(float, await conn.fetchval(self._sql["clock"]))

    async def migrate(self, target: int | None = None) -> list[str]:
        """Apply the schema migrations this database lacks (up to ``target``), in order.

        One transaction under an advisory lock: safe when many processes start at once, and
        all or nothing. Returns the names of the migrations applied (empty when up to date).
        Raises ConfigError when the schema was made by a newer pigeon.
        """
        try:
            conn = await self._connect()
        except DB_ERRORS as exc:
            raise self._error(exc) from None
        try:
            return await self._migrate(conn, target)
        except DB_ERRORS as exc:
            raise self._error(exc) from None
        finally:
            await conn.close()

    async def schema_version(self) -> int:
        """The schema version of the database (0: no pigeon schema there yet)."""
        try:
            conn = await self._connect()
        except DB_ERRORS as exc:
            raise self._error(exc) from None
        try:
            return await self._schema_version(conn)
        except DB_ERRORS as exc:
            raise self._error(exc) from None
        finally:
            await conn.close()

    async def _schema_version(self, conn: Any) -> int:
        table = f"{_quote_ident(self.schema)}.schema_version"
        if await conn.fetchval("SELECT to_regclass($1)", table) is None:
            return 0
        return cast(int, await conn.fetchval(f"SELECT coalesce(max(version), 0) FROM {table}"))

    async def _migrate(self, conn: Any, target: int | None) -> list[str]:
        version = conn.get_server_version()
        if version.major < MIN_SERVER:
            raise ConfigError(
                f"PostgreSQL {self.url}: pigeon needs PostgreSQL {MIN_SERVER} or later; this "
                f"server is {version.major}.{version.minor}"
            )
        schema = _quote_ident(self.schema)
        applied: list[str] = []
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _lock_key(self.schema))
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {schema}.schema_version ("
                "version integer PRIMARY KEY, name text NOT NULL, "
                "applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {
                row[0] for row in await conn.fetch(f"SELECT version FROM {schema}.schema_version")
            }
            if done and max(done) > latest_version():
                raise ConfigError(
                    f"PostgreSQL {self.url}: schema {self.schema!r} is at version {max(done)}, "
                    f"made by a newer pigeon (this one knows up to {latest_version()})"
                )
            await conn.execute(f"SET LOCAL search_path TO {schema}")
            for migration in migrations():
                if migration.version in done or (target is not None and migration.version > target):
                    continue
                await conn.execute(migration.sql)
                await conn.execute(
                    f"INSERT INTO {schema}.schema_version (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
                applied.append(migration.name)
        if applied:
            log.info("PostgreSQL %s: applied %s", self.url, ", ".join(applied))
        return applied

    # queue -------------------------------------------------------------------------------

    async def enqueue(self, messages: Sequence[Message]) -> list[str]:
        """Store ``messages`` durably and return the id standing for each.

        That is its own id, or the id of the message that holds its ``key``. An id that is
        already stored (as a message, an outcome or a dead letter) is not stored again. A
        batch without keys, follow-ups or joins is one statement (or, when it is plain and
        big, one ``executemany``); otherwise one transaction.
        """
        if not messages:
            return []
        batch = list(messages)
        # Messages without a key stand for themselves, and are new: a settle of theirs can
        # only come after this enqueue, and is heard if the listener hears settles now.
        listener = (await self._ready()).listener
        mine = [m.id for m in batch if m.key is None] if listener is not None else []
        tracked = listener is not None and listener.track(mine)
        try:
            shared = plain_options(batch)
            if shared is not None:
                async with self._connection() as conn:
                    await self._insert_plain(conn, batch, shared, own=True)
                return [m.id for m in batch]
            if any(m.key is not None or m.after is not None or m.join is not None for m in batch):
                async with self._transaction() as conn:
                    return await self._enqueue(conn, batch)
            async with self._connection() as conn:
                return await self._enqueue(conn, batch)
        except BaseException:
            if tracked and listener is not None:
                listener.untrack(mine)
            raise

    async def enqueue_in(self, connection: Any, messages: Sequence[Message]) -> list[str]:
        """Store ``messages`` through the application's own asyncpg ``connection``.

        Inside the connection's transaction they become visible (and wake workers) only
        when it commits, and vanish if it rolls back; without a transaction they are
        stored in one of their own. Returns the id standing for each message, as
        ``enqueue``. The schema must exist (``open()`` or ``pigeon migrate``). This does not
        use the backend's pool, so it runs on whatever event loop the connection is on.
        """
        if not messages:
            return []
        batch = list(messages)
        try:
            if connection.is_in_transaction():
                return await self._enqueue(connection, batch)
            async with connection.transaction():
                return await self._enqueue(connection, batch)
        except DB_ERRORS as exc:
            raise self._error(exc) from None

    async def _enqueue(self, conn: Any, messages: list[Message]) -> list[str]:
        shared = plain_options(messages)
        if shared is not None:
            await self._insert_plain(conn, messages, shared)
            return [m.id for m in messages]
        sql = self._sql
        holders: dict[str, str] = {}
        keyed: dict[str, Message] = {}
        for m in messages:
            if m.key is not None:
                keyed.setdefault(m.key, m)
        if keyed:
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
                holders.update(
                    (key, mid) for key, mid in await conn.fetch(sql["key_holders"], held)
                )

        ids: list[str] = []
        chosen: dict[str, Message] = {}
        for m in messages:
            holder = holders.get(m.key, m.id) if m.key is not None else m.id
            ids.append(holder)
            if holder == m.id:
                chosen.setdefault(m.id, m)
        store = list(chosen.values())

        refs = [m.after for m in store if m.after is not None and m.join is None]
        refs.extend(member for m in store if m.join is not None for member in m.join.members)
        outcomes: dict[str, str] = {}
        if refs:
            # Marked (and held) before their outcomes are looked up: a settle that has
            # not taken one yet waits for this transaction, then leaves it to the
            # statements that see what it stored (see mark_refs).
            await conn.execute(sql["mark_refs"], refs)
            outcomes = dict(await conn.fetch(sql["ref_outcomes"], refs))

        rows_in: list[tuple[Message, str, str | None, bytes]] = []
        joins: list[tuple[str, str, int, int, int, bool]] = []
        members: list[tuple[str, str]] = []
        for m in store:
            state = "pending"
            after = None
            if m.join is not None:
                settled = succeeded = 0
                for member in m.join.members:
                    member_state = outcomes.get(member)
                    if member_state is None:
                        members.append((m.id, member))
                    else:
                        settled += 1
                        succeeded += member_state == "succeeded"
                total = len(m.join.members)
                fired = join_fired(m.join.mode, total, settled, succeeded)
                joins.append((m.id, m.join.mode, total, settled, succeeded, fired))
                if not fired:
                    state = "waiting"
            elif m.after is not None:
                after = m.after
                if after not in outcomes:
                    state = "waiting"
            rows_in.append((m, state, after, codec.encode_message(m)))
        rows_in.sort(key=lambda row: row[0].id)  # rows locked in id order, as settle does
        await self._insert(conn, rows_in, joins, members)
        if refs:
            # Depended on within this batch: stored just now, unmarked.
            inside = {m.id for m in store}.intersection(refs)
            if inside:
                await conn.execute(sql["mark_refs"], sorted(inside))
        return ids

    async def _insert_plain(
        self, conn: Any, messages: list[Message], shared: PlainOptions, own: bool = False
    ) -> None:
        """Store a batch that ``plain_options`` found plain: one statement per
        ``PLAIN_CHUNK`` messages, pipelined by ``executemany`` in one transaction (each
        chunk's arrays are encoded while the server inserts the one before).

        On a connection of our own (``own``) it first tries ``insert_new``, which is
        cheaper, and falls back to ``insert_plain`` if an id turns out to be stored twice;
        in the application's transaction an error would abort it, so ``insert_plain``.
        """
        encode = codec.encode_message

        def chunks() -> Iterator[tuple[Any, ...]]:  # made as executemany sends them
            for at in range(0, len(messages), PLAIN_CHUNK):
                part = messages[at : at + PLAIN_CHUNK]
                yield ([m.id for m in part], [encode(m) for m in part], *shared)

        statements = ["insert_new", "insert_plain"] if own else ["insert_plain"]
        for name in statements:
            try:
                if len(messages) <= PLAIN_CHUNK:
                    await conn.fetchval(self._sql[name], *next(chunks()))
                else:
                    await conn.executemany(self._sql[name], chunks())
                return
            except asyncpg.UniqueViolationError:
                if name == statements[-1]:
                    raise
                log.debug(
                    "PostgreSQL %s: an id stored twice; enqueue again with ON CONFLICT", self.url
                )

    async def _insert(
        self,
        conn: Any,
        rows: list[tuple[Message, str, str | None, bytes]],
        joins: Sequence[tuple[str, str, int, int, int, bool]] = (),
        members: Sequence[tuple[str, str]] = (),
        due_now: bool = False,
    ) -> None:
        """One insert_messages statement; ``due_now`` ignores delays (requeue)."""
        await conn.fetchval(
            self._sql["insert_messages"],
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
        )

    async def fetch(
        self,
        queues: Sequence[str],
        limit: int,
        worker: str,
        lease: float | None = None,
        wait: float = 0.0,
    ) -> list[Delivery]:
        """Lease up to ``limit`` due messages from ``queues``, in the order given.

        Within a queue: highest priority, then earliest due time, then id. Lapsed leases
        are reclaimed first (poison ones dead-lettered) and expired messages dead-lettered.
        When nothing is due, sleeps until a NOTIFY says one of ``queues`` has work, or until
        the next due time, for up to ``wait`` seconds. If the caller is cancelled while a
        lease is being taken, the messages taken are released.
        """
        if limit <= 0:
            return []
        queues = list(queues)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        if wait <= 0:
            return (await self._lease(queues, limit, worker, lease))[0]
        listener = await self._listening("work")
        key = tuple(queues)
        while True:
            waker = Waker(listener.work, queues)  # before looking: no wake-up is missed
            try:
                # After a look that drained these queues, nothing can be due before the time
                # that look reported unless a NOTIFY announced work since it began: then
                # skip the statement (a worker fetches again as soon as it starts a task).
                news = listener.news(queues)
                drained = self._drained.get(key)
                if drained is not None and drained[0] == news and loop.time() < drained[1]:
                    deliveries: list[Delivery] = []
                    due_at = drained[1]
                else:
                    deliveries, next_in = await self._lease(queues, limit, worker, lease)
                    due_at = loop.time() + (next_in if next_in is not None else 3600.0)
                    if len(deliveries) < limit and listener.up:
                        self._drained[key] = (news, due_at)
                    else:
                        self._drained.pop(key, None)
                remaining = deadline - loop.time()
                if deliveries or remaining <= 0:
                    return deliveries
                nap = min(remaining, max(due_at - loop.time(), MIN_NAP))
                if not listener.up:
                    nap = min(nap, POLL_WHILE_DEAF)
                await waker.sleep(nap)
            finally:
                waker.close()

    async def _lease(
        self, queues: list[str], limit: int, worker: str, lease: float | None
    ) -> tuple[list[Delivery], float | None]:
        def orphaned(job: asyncio.Task[tuple[list[Delivery], float | None]]) -> None:
            # The statement may commit after our caller has gone: hand the leases back
            # rather than let them run out and count as lost deliveries.
            job.add_done_callback(self._release_orphans)

        return await shielded(self._lease_now(queues, limit, worker, lease), orphaned)

    async def _lease_now(
        self, queues: list[str], limit: int, worker: str, lease: float | None
    ) -> tuple[list[Delivery], float | None]:
        length = None if lease is None else float(lease)
        sql = self._sql["lease"]
        async with self._connection() as conn:
            leased, flags = _split(await conn.fetch(sql, queues, limit, worker, length, True))
            if flags["lapsed"] or flags["expired"]:
                await self._reclaim(conn)
                room = limit - len(leased)
                if room > 0:
                    more, flags = _split(await conn.fetch(sql, queues, room, worker, length, False))
                    leased.extend(more)
        if leased:
            self._count_leases(len(leased))
        leased.sort(key=lambda r: (r["ord"], -r["priority"], r["due"], r["id"]))
        deliveries = [
            Delivery(r["id"], r["attempt"], r["failures"], r["body"], r["lease"]) for r in leased
        ]
        return deliveries, flags["next_in"]

    def _count_leases(self, count: int) -> None:
        """Vacuum the hot table every ``VACUUM_EVERY`` leases made through this object.

        A lease leaves a dead entry in the fetch index, a settle a dead row: both at the
        oldest end of the index, which every fetch walks until VACUUM removes them. Waiting
        for autovacuum (a visit a minute by default) would let a busy queue pile up hundreds
        of thousands and make each fetch walk them all; vacuuming at a pace set by the
        traffic keeps that walk, and the table, bounded.
        """
        session = self._session
        if session is None:
            return
        session.leased += count
        if session.leased < VACUUM_EVERY or session.vacuuming is not None:
            return
        session.leased = 0
        task = asyncio.get_running_loop().create_task(self._vacuum())
        session.vacuuming = task
        session.background.add(task)
        task.add_done_callback(session.background.discard)

    async def _vacuum(self) -> None:
        try:
            async with self._connection() as conn:
                await conn.execute(self._sql["vacuum"])
        except Exception as exc:
            log.warning("PostgreSQL %s: vacuuming the messages table failed: %s", self.url, exc)
        finally:
            if self._session is not None:
                self._session.vacuuming = None

    async def _reclaim(self, conn: Any) -> None:
        """Poison, lapsed and expired messages: one transaction on ``conn``."""
        async with conn.transaction():
            rows = await conn.fetch(self._sql["reclaim"])
            done: list[_Done] = []
            for r in rows:
                if r["kind"] == "poison":
                    reason = (
                        f"poison: lease expired {r['expiries']} times without a settle "
                        "(the worker running it probably crashed)"
                    )
                    error = Failure("Poison", reason, id=r["id"])
                elif r["kind"] == "expired":
                    error = Failure(
                        "Expired", "the message expired before it could run", id=r["id"]
                    )
                else:
                    continue
                done.append(
                    (
                        r["id"],
                        r["queue"],
                        r["task"],
                        r["body"],
                        "dead",
                        None,
                        error,
                        r["result_ttl"],
                    )
                )
            if done:
                await self._finish(conn, done)

    def _release_orphans(self, job: asyncio.Future[tuple[list[Delivery], float | None]]) -> None:
        if job.cancelled() or job.exception() is not None:
            return
        leases = [Lease(d.id, d.attempt) for d in job.result()[0]]
        if not leases or self._session is None:
            return
        task = asyncio.get_running_loop().create_task(self._release_quietly(leases))
        self._session.background.add(task)
        task.add_done_callback(self._session.background.discard)

    async def _release_quietly(self, leases: list[Lease]) -> None:
        try:
            await self.release(leases)
        except Exception as exc:
            log.warning(
                "could not release %d messages leased by a cancelled fetch (%s): %s; they will "
                "be fetched again when their lease runs out",
                len(leases),
                ", ".join(x.id for x in leases),
                exc,
            )

    async def extend(self, leases: Sequence[Lease]) -> set[str]:
        """Push each held lease to now + the message's lease; return the ids no longer held."""
        if not leases:
            return set()
        async with self._connection() as conn:
            rows = await conn.fetch(
                self._sql["extend"], [x.id for x in leases], [x.attempt for x in leases]
            )
        held = {(r[0], r[1]) for r in rows}
        return {x.id for x in leases if (x.id, x.attempt) not in held}

    async def release(self, leases: Sequence[Lease], delay: float = 0.0) -> int:
        """Make held messages due again ``delay`` seconds from now (database clock; at once
        by default), without counting a failure or a lost lease; returns how many."""
        if not leases:
            return 0
        async with self._connection() as conn:
            row = await conn.fetchrow(
                self._sql["release"],
                [x.id for x in leases],
                [x.attempt for x in leases],
                max(float(delay), 0.0),
            )
        return cast(int, row[0])

    async def settle(self, outcomes: Sequence[Outcome]) -> list[bool]:
        """Apply each outcome, all in one transaction; per outcome, whether it was applied.

        One call of the schema's ``settle`` function (one round trip). An outcome applies
        only while its message is leased as ``outcome.attempt``. A final
        outcome stores the result (kept ``KEEP_FOR_DEPENDENTS`` seconds even with a ttl of 0
        when follow-ups or joins wait on it; the first stored outcome of an id wins), stores
        a dead letter for ``dead``, removes the message, makes its followers pending and
        advances its joins. ``retry`` makes it due ``retry_in`` seconds from now with one more
        failure counted.
        """
        if not outcomes:
            return []
        # Outcomes for one delivery after the first are refused, as if applied in order.
        first: dict[tuple[str, int], Outcome] = {}
        for o in outcomes:
            first.setdefault((o.id, o.attempt), o)
        finals = sorted((o for o in first.values() if o.state != "retry"), key=lambda o: o.id)
        retries = sorted((o for o in first.values() if o.state == "retry"), key=lambda o: o.id)
        async with self._connection() as conn:
            rows = await conn.fetch(
                self._sql["settle"],
                [o.id for o in finals],
                [o.attempt for o in finals],
                [o.state for o in finals],
                [float(o.result_ttl) for o in finals],
                [_result_record(o.id, o.state, o.value, o.error) for o in finals],
                [_reason(o.error) if o.state == "dead" else None for o in finals],
                [o.id for o in retries],
                [o.attempt for o in retries],
                [float(o.retry_in) for o in retries],
                KEEP_FOR_DEPENDENTS,
                DEAD_LETTER_TTL,
            )
        applied = {(r[0], r[1]) for r in rows}
        verdicts: list[bool] = []
        for o in outcomes:
            key = (o.id, o.attempt)
            verdicts.append(key in applied and first.get(key) is o)
            if first.get(key) is o:
                del first[key]  # a duplicate of this very object later in the batch is refused
        return verdicts

    async def _finish(self, conn: Any, done: list[_Done]) -> None:
        """Settle messages for good, in the caller's transaction (their rows are deleted).

        The schema's ``finish`` function stores each outcome (and a dead letter for
        ``dead``), makes the messages waiting ``after`` them pending, advances the joins they
        are members of (firing those whose mode is satisfied) and notifies the waiters.
        """
        await conn.fetchval(
            self._sql["finish"],
            [d[0] for d in done],
            [d[1] for d in done],
            [d[2] for d in done],
            [d[3] for d in done],
            [d[4] for d in done],
            [float(d[7]) for d in done],
            [_result_record(d[0], d[4], d[5], d[6]) for d in done],
            [_reason(d[6]) if d[4] == "dead" else None for d in done],
            KEEP_FOR_DEPENDENTS,
            DEAD_LETTER_TTL,
        )

    # results -----------------------------------------------------------------------------

    async def results(self, ids: Collection[str]) -> dict[str, Result]:
        """The stored, unexpired outcomes among ``ids``."""
        if not ids:
            return {}
        async with self._connection() as conn:
            rows = await conn.fetch(self._sql["results"], list(ids))
        found = (stored_result(r[0], r[1]) for r in rows)
        return {result.id: result for result in found}

    async def wait(self, ids: Collection[str], timeout: float) -> dict[str, Result]:
        """Every outcome among ``ids`` as soon as there is at least one; ``{}`` on timeout.

        Woken by the NOTIFY of the settle that stores one; while the listening connection
        is down it polls.
        """
        wanted = list(dict.fromkeys(ids))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        listener = await self._listening("done")
        first = True
        try:
            while True:
                waker = Waker(listener.done, wanted)  # before looking: no wake-up is missed
                try:
                    # The first look skips what this object stored and will hear of
                    # (pigeon.backends.tracking). Shielded: a waiter interrupted while the
                    # query runs (a promise joining the wait) must not cancel it, which
                    # costs a reconnection.
                    unknown: list[str] = wanted
                    found: dict[str, Result] = {}
                    if first:
                        first = False
                        found, unknown = listener.unheard(wanted)
                    if unknown:
                        found.update(await shielded(self.results(unknown)))
                    remaining = deadline - loop.time()
                    if found or remaining <= 0:
                        return found
                    await waker.sleep(remaining if listener.up else min(remaining, POLL_WHILE_DEAF))
                finally:
                    waker.close()
                # Outcomes that came with their notification need no query.
                news = {mid: listener.pushed.pop(mid) for mid in wanted if mid in listener.pushed}
                pushed = {mid: r for mid, r in news.items() if r is not None}
                if pushed and len(pushed) == len(news):
                    return pushed
        finally:
            for mid in wanted:
                listener.pushed.pop(mid, None)

    # control -----------------------------------------------------------------------------

    async def cancel(self, ids: Collection[str]) -> list[str]:
        """Settle each waiting, scheduled or pending message as ``cancelled``.

        Returns the ids cancelled, in the order given. A leased message is marked instead:
        its holder learns of it through ``cancelling``. A settled or unknown id is left alone.
        """
        if not ids:
            return []
        wanted = list(dict.fromkeys(ids))
        async with self._transaction() as conn:
            rows = await conn.fetch(self._sql["take_cancellable"], wanted)
            done: list[_Done] = []
            for r in rows:
                error = Failure("Cancelled", "cancelled before it ran", id=r["id"])
                done.append(
                    (
                        r["id"],
                        r["queue"],
                        r["task"],
                        r["body"],
                        "cancelled",
                        None,
                        error,
                        r["result_ttl"],
                    )
                )
            if done:
                await self._finish(conn, done)
        cancelled = {d[0] for d in done}
        return [mid for mid in wanted if mid in cancelled]

    async def cancelling(self, leases: Sequence[Lease]) -> set[str]:
        """The ids among ``leases``, held as that attempt, whose cancellation was requested.

        One read, whatever the number of leases; it changes nothing.
        """
        if not leases:
            return set()
        async with self._connection() as conn:
            rows = await conn.fetch(
                self._sql["cancelling"], [x.id for x in leases], [x.attempt for x in leases]
            )
        return {r[0] for r in rows}

    async def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """Up to ``limit`` dead letters (of ``queue``, or of every queue), oldest first."""
        async with self._connection() as conn:
            rows = await conn.fetch(self._sql["dead_letters"], queue, limit)
        return [DeadLetter(*r) for r in rows]

    async def requeue(self, ids: Collection[str]) -> int:
        """Move dead letters back to pending with fresh counts and forget their outcomes.

        Returns how many were requeued; ids without a dead letter are ignored.
        """
        if not ids:
            return 0
        async with self._transaction() as conn:
            letters = await conn.fetch(self._sql["take_dead"], list(ids))
            if not letters:
                return 0
            rows: list[tuple[Message, str, str | None, bytes]] = []
            for mid, queue, task, body in letters:
                try:
                    m = codec.decode_message(body)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    # Requeued as it was: the worker that fetches it dead-letters it again,
                    # with the reason, rather than this call failing for every id.
                    m = Message(mid, task, queue)
                rows.append((m, "pending", None, body))
            await self._insert(conn, rows, due_now=True)
        return len(letters)

    async def purge_dead(self, ids: Collection[str] | None = None) -> int:
        """Delete the dead letters ``ids`` (all when None); returns how many."""
        if ids is not None and not ids:
            return 0
        async with self._connection() as conn:
            if ids is None:
                return cast(int, await conn.fetchval(self._sql["purge_all_dead"]))
            return cast(int, await conn.fetchval(self._sql["purge_dead"], list(ids)))

    async def purge(self, queue: str) -> int:
        """Delete the waiting, scheduled and pending messages of ``queue``; returns how many."""
        async with self._connection() as conn:
            return cast(int, await conn.fetchval(self._sql["purge"], queue))

    async def inspect(self, id: str) -> MessageInfo | None:
        """All that is known of one id (message, stored outcome, dead letter), or None."""
        async with self._connection() as conn:
            r = await conn.fetchrow(self._sql["inspect"], id)
        result = None
        if r["result"] is not None:
            result = stored_result(r["result"], r["settled_at"])
        if r["state"] is not None:
            state = r["state"]
            if state == "pending" and r["later"]:
                state = "scheduled"
            return MessageInfo(
                id,
                state,
                queue=r["queue"],
                task=r["task"],
                attempt=r["attempt"],
                failures=r["failures"],
                run_at=r["due"],
                lease_until=r["lease_until"] if state == "leased" else None,
                worker=r["worker"],
                result=result,
                body=r["body"],
                cancel_requested=r["cancel_requested"],
            )
        if r["dead_queue"] is not None:
            return MessageInfo(
                id,
                "dead",
                queue=r["dead_queue"],
                task=r["dead_task"],
                result=result,
                reason=r["reason"],
                body=r["dead_body"],
            )
        if result is not None:
            return MessageInfo(id, result.state, result=result)
        return None

    async def stats(self) -> Stats:
        """Messages by queue and state, unexpired outcomes, dead letters, live workers."""
        async with self._connection() as conn:
            rows = await conn.fetch(self._sql["stats"])
        queues: dict[str, QueueStats] = {}
        results = dead = 0
        workers: list[WorkerInfo] = []
        for kind, name, state, later, n, info, last_seen in rows:
            if kind == "messages":
                qs = queues.setdefault(name, QueueStats())
                if state == "waiting":
                    qs.waiting += n
                elif state == "leased":
                    qs.leased += n
                elif later:
                    qs.scheduled += n
                else:
                    qs.pending += n
            elif kind == "dead":
                queues.setdefault(name, QueueStats()).dead += n
                dead += n
            elif kind == "results":
                results = n
            else:
                decoded = _worker_decoder.decode(info)
                workers.append(msgspec.structs.replace(decoded, last_seen=last_seen))
        workers.sort(key=lambda w: w.id)
        return Stats(queues, results, dead, workers)

    # coordination ----------------------------------------------------------------------

    async def lock(self, name: str, owner: str, ttl: float) -> bool:
        """Take or renew the lock ``name`` for ``owner`` until now + ``ttl`` seconds (database
        clock); whether ``owner`` holds it afterwards. Two concurrent calls never both win."""
        if ttl <= 0:
            raise ValueError(f"a lock's ttl must be > 0 seconds, not {ttl}")
        async with self._connection() as conn:
            holder = await conn.fetchval(self._sql["lock"], name, owner, float(ttl))
        return holder is not None

    async def unlock(self, name: str, owner: str) -> None:
        """Free the lock ``name`` at once if ``owner`` holds it (expired or not)."""
        async with self._connection() as conn:
            await conn.execute(self._sql["unlock"], name, owner)

    async def take(self, takes: Sequence[Take]) -> list[float]:
        """Start slots from token buckets (GCRA), one take at a time in the order given: per
        take, the seconds from now (database clock) until its slot, reserved when that is
        at most its ``hold``. One call of the schema's ``take()`` function."""
        if not takes:
            return []
        async with self._connection() as conn:
            waits = await conn.fetchval(
                self._sql["take"],
                [t.bucket for t in takes],
                [float(t.interval) for t in takes],
                [t.burst for t in takes],
                [float(t.hold) for t in takes],
            )
        return [float(w) for w in waits]

    async def acquire(self, slots: Sequence[Slot]) -> list[bool]:
        """Take or renew a place of each limit ``slot.name`` for ``slot.holder`` until now +
        ``slot.ttl``, one slot at a time in the order given; per slot, whether the holder
        has a place afterwards. Concurrent acquirers never exceed a limit."""
        if not slots:
            return []
        async with self._connection() as conn:
            got = await conn.fetchval(
                self._sql["acquire"],
                [x.name for x in slots],
                [x.holder for x in slots],
                [x.limit for x in slots],
                [float(x.ttl) for x in slots],
            )
        return [bool(g) for g in got]

    async def release_slots(self, slots: Sequence[Slot]) -> None:
        """Give the holders' places back at once (an unknown one is left alone)."""
        if not slots:
            return
        async with self._connection() as conn:
            await conn.execute(
                self._sql["release_slots"], [x.name for x in slots], [x.holder for x in slots]
            )

    async def heartbeat(self, info: WorkerInfo, ttl: float) -> None:
        """Record ``info`` as a live worker for ``ttl`` seconds (``last_seen`` = now)."""
        async with self._connection() as conn:
            await conn.execute(self._sql["heartbeat"], info.id, float(ttl), _json_encode(info))

    async def retire(self, worker: str) -> None:
        """Remove a worker's record."""
        async with self._connection() as conn:
            await conn.execute(self._sql["retire"], worker)

    async def sweep(self) -> int:
        """Delete expired results, keys, dead letters, worker records, locks, rate-limit
        buckets, concurrency-limit places and progress reports; returns how many.

        Deletes at most ``SWEEP_CHUNK`` rows per statement so that no lock is held for long.
        Also drops the counters of joins whose message is gone.
        """
        removed = 0
        async with self._connection() as conn:
            for name in (
                "sweep_results",
                "sweep_keys",
                "sweep_dead",
                "sweep_workers",
                "sweep_locks",
                "sweep_buckets",
                "sweep_places",
                "sweep_progress",
            ):
                while True:
                    count = cast(int, await conn.fetchval(self._sql[name], SWEEP_CHUNK))
                    removed += count
                    if count < SWEEP_CHUNK:
                        break
            while await conn.fetchval(self._sql["sweep_joins"], SWEEP_CHUNK) >= SWEEP_CHUNK:
                pass
        return removed

    # progress and events -----------------------------------------------------------------

    async def report(self, progress: Sequence[Progress], ttl: float) -> None:
        """Store each report as the latest of its message id, kept ``ttl`` seconds."""
        latest = {p.id: p for p in progress}  # the last report of an id in the batch wins
        if not latest:
            return
        async with self._connection() as conn:
            await conn.execute(
                self._sql["report"],
                list(latest),
                [_json_encode(p) for p in latest.values()],
                float(ttl),
            )

    async def progress(self, ids: Collection[str]) -> dict[str, Progress]:
        """The stored, unexpired latest reports among ``ids``."""
        if not ids:
            return {}
        async with self._connection() as conn:
            rows = await conn.fetch(self._sql["progress"], list(ids))
        found: dict[str, Progress] = {}
        for (body,) in rows:
            try:
                report = _progress_decoder.decode(body)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                log.warning("PostgreSQL %s: undecodable progress report: %s", self.url, exc)
                continue
            found[report.id] = report
        return found

    async def publish(self, events: Sequence[Event]) -> None:
        """Append ``events`` to the shared log in the order given and wake its readers.

        One call of the schema's ``publish()`` function (see the module docstring)."""
        if not events:
            return
        async with self._connection() as conn:
            await conn.fetchval(
                self._sql["publish"],
                [_json_encode(e) for e in events],
                EVENTS_KEPT,
                PRUNE_EVENTS_EVERY,
            )

    async def read_events(
        self, after: str | None, limit: int = 1000, wait: float = 0.0
    ) -> tuple[str, list[Event]]:
        """Up to ``limit`` events published after the cursor ``after`` (None: the end of the
        log), oldest first, and the cursor to pass next time.

        When there is none yet, sleeps until a NOTIFY says one was published, for up to
        ``wait`` seconds (polling while the listening connection is down).
        """
        if after is None:
            async with self._connection() as conn:
                start = cast(int, await conn.fetchval(self._sql["events_end"]))
        else:
            try:
                start = int(after)
            except ValueError:
                raise ValueError(f"not an event cursor: {after!r}") from None
        if limit <= 0 or (after is None and wait <= 0):
            return str(start), []
        if wait <= 0:
            return await self._read_events(start, limit)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        listener = await self._listening("events")
        while True:
            waker = Waker(listener.events, (EVENTS,))  # before looking: no wake-up is missed
            try:
                # Shielded, as in wait(): a cancelled reader must not cancel the query.
                cursor, found = await shielded(self._read_events(start, limit))
                remaining = deadline - loop.time()
                if found or remaining <= 0:
                    return cursor, found
                if int(cursor) != start:  # only undecodable events: look past them
                    start = int(cursor)
                    continue
                await waker.sleep(remaining if listener.up else min(remaining, POLL_WHILE_DEAF))
            finally:
                waker.close()

    async def _read_events(self, start: int, limit: int) -> tuple[str, list[Event]]:
        async with self._connection() as conn:
            rows = await conn.fetch(self._sql["read_events"], start, limit)
        events: list[Event] = []
        for seq, body in rows:
            start = seq
            try:
                events.append(_event_decoder.decode(body))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                log.warning("PostgreSQL %s: undecodable event %d skipped: %s", self.url, seq, exc)
        return str(start), events


async def _keep_session(conn: Any) -> None:
    """Reset a connection returned to the pool: nothing to do (asyncpg has already rolled
    back an open transaction). No statement here changes session state, so skipping
    asyncpg's default reset (RESET ALL, UNLISTEN *, ...) saves a round trip per operation."""


def _result_record(mid: str, state: str, value: msgspec.Raw | None, error: Failure | None) -> bytes:
    """The stored form of an outcome, but for settled_at (the database's, stored apart)."""
    return codec.encode_result_record(Result(mid, cast(FinalState, state), value, error))


def _reason(error: Failure | None) -> str:
    """A dead letter's reason."""
    return f"{error.type}: {error.message}" if error is not None else "dead"


def _split(rows: list[Any]) -> tuple[list[Any], Any]:
    """The rows of a lease statement: the leased ones, and the one of flags (id NULL)."""
    leased = [r for r in rows if r["id"] is not None]
    flags = next(r for r in rows if r["id"] is None)
    return leased, flags


def _abandon(session: _Session) -> None:
    """Let go of a session whose event loop is gone, without awaiting anything on it."""
    if session.listener is not None:
        session.listener.abandon()
    if session.pool is not None:
        with contextlib.suppress(Exception):
            session.pool.terminate()

"""Where the PostgreSQL backend connects: its URL, and the pool and listener it opens per
event loop.

:class:`Connections` is the base of :class:`~pigeon.backends.postgres.backend.PostgresBackend`:
it parses the URL, renders the statements for the schema, opens the session of the running
loop on first use (checking or migrating the schema) and hands out its connections, with
asyncpg's errors re-raised as BackendError with the URL redacted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import unquote

import asyncpg

from pigeon.backends.base import read_url, redact
from pigeon.backends.postgres import schema as schemas
from pigeon.backends.postgres.listener import DB_ERRORS, Kind, Listener
from pigeon.errors import BackendError, ConfigError

log = logging.getLogger("pigeon.backends.postgres")

T = TypeVar("T")

DEFAULT_SCHEMA = "pigeon"
#: The pool's bounds: operations are batched, so a few connections carry a busy worker.
POOL_MIN = 1
POOL_MAX = 10
CONNECT_TIMEOUT = 10.0
#: Leases made through one backend object between two VACUUMs of the hot table.
VACUUM_EVERY = 5000

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


@dataclass(frozen=True)
class _Target:
    """What a postgresql:// URL names: where to connect, the schema, whether to migrate."""

    dsn: str
    schema: str
    migrate: bool
    password: str | None


def _parse_url(url: str) -> _Target:
    given = read_url(url, ("postgresql", "postgres"), "PostgreSQL", ("schema", "migrate"))
    schema = given.own.get("schema", DEFAULT_SCHEMA)
    migrate = True
    if "migrate" in given.own:
        value = given.own["migrate"]
        if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ConfigError(f"migrate={value!r} in {redact(url)!r}: use true or false")
        migrate = value.lower() in ("true", "1", "yes")
    if not schema or len(schema.encode()) > 63:
        raise ConfigError(f"schema {schema!r} in {redact(url)!r}: give 1 to 63 bytes")
    password = unquote(given.parts.password) if given.parts.password else None
    return _Target(given.rest, schema, migrate, password)


@dataclass
class Session:
    """Everything bound to the event loop the backend was opened on."""

    loop: asyncio.AbstractEventLoop
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    pool: Any = None
    listener: Listener | None = None
    background: set[asyncio.Task[Any]] = field(default_factory=set)
    leased: int = 0  # messages leased since this session last vacuumed the hot table
    vacuuming: asyncio.Task[None] | None = None

    def spawn(self, job: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run ``job`` in the background on the running loop; ``close_session`` awaits it."""
        task = asyncio.get_running_loop().create_task(job)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task


class Connections:
    """The connections of one postgresql:// URL: a pool and a listener per event loop.

    The session is opened on first need; a backend used from a new event loop (its old one
    closed) reconnects.
    """

    def __init__(self, url: str) -> None:
        self.url = redact(url)
        target = _parse_url(url)
        self._dsn = target.dsn
        self._password = target.password
        self.schema = target.schema
        self.auto_migrate = target.migrate
        self._sql = schemas.render(self.schema)
        self._session: Session | None = None

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

    async def _ready(self) -> Session:
        """The session of the running loop, opened (and the schema checked) on first use."""
        loop = asyncio.get_running_loop()
        session = self._session
        if session is None or session.loop is not loop:
            if session is not None:
                abandon(session)  # its loop is gone: start afresh on this one
            session = self._session = Session(loop)
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
                try:
                    await schemas.check(conn, self.schema, self.url, self.auto_migrate)
                except DB_ERRORS as exc:
                    raise self._error(exc) from None
        except BaseException:
            pool.terminate()
            raise
        return pool

    async def _apart(self, run: Callable[[Any], Awaitable[T]]) -> T:
        """``run`` on a connection of its own (outside the pool), closed afterwards;
        asyncpg's errors become BackendError."""
        try:
            conn = await self._connect()
        except DB_ERRORS as exc:
            raise self._error(exc) from None
        try:
            return await run(conn)
        except DB_ERRORS as exc:
            raise self._error(exc) from None
        finally:
            await conn.close()

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
                        schemas.channel(self.schema, "work"),
                        schemas.channel(self.schema, "done"),
                        self.url,
                        self._scrub,
                        schemas.channel(self.schema, "events"),
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
        session.vacuuming = session.spawn(self._vacuum())

    async def _vacuum(self) -> None:
        try:
            async with self._connection() as conn:
                await conn.execute(self._sql["vacuum"])
        except Exception as exc:
            log.warning("PostgreSQL %s: vacuuming the messages table failed: %s", self.url, exc)
        finally:
            if self._session is not None:
                self._session.vacuuming = None


async def close_session(session: Session) -> None:
    """Close ``session``'s listener and pool once its background tasks are done; calls in
    flight finish first (up to 10 s). A session of another loop is abandoned instead."""
    if session.loop is not asyncio.get_running_loop():
        abandon(session)
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


async def _keep_session(conn: Any) -> None:
    """Reset a connection returned to the pool: nothing to do (asyncpg has already rolled
    back an open transaction). No statement here changes session state, so skipping
    asyncpg's default reset (RESET ALL, UNLISTEN *, ...) saves a round trip per operation."""


def abandon(session: Session) -> None:
    """Let go of a session whose event loop is gone, without awaiting anything on it."""
    if session.listener is not None:
        session.listener.abandon()
    if session.pool is not None:
        with contextlib.suppress(Exception):
            session.pool.terminate()

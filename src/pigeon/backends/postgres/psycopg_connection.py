"""An application's psycopg (3) connection, seen as the asyncpg connection ``enqueue.py`` uses.

``PostgresBackend.enqueue_in`` (``App.transaction``) writes through the application's own
connection. Its statements (``sql/queries.sql``) are written for asyncpg: ``$n``
placeholders, batches passed as arrays. SQLAlchemy and Django connect with psycopg, whose
placeholders are ``%s`` / ``%(name)s``, so each statement is converted once (``$3`` ->
``%(p3)s``, the arguments passed as a dict) and run through a cursor of psycopg's own
``Cursor`` class (server-side binding: the arrays travel as arrays, whatever cursor class
the application set, such as Django's client-side binding one).

``Psycopg`` (an ``AsyncConnection``) and ``SyncPsycopg`` (a ``Connection``) offer the subset
of asyncpg's connection that the enqueue functions call: ``fetch``, ``fetchrow``,
``execute``, ``executemany``, ``is_in_transaction`` and ``transaction``. ``SyncPsycopg``'s
methods are coroutines that never suspend (each calls the blocking driver and returns), so
the same enqueue functions serve a sync connection through ``run_sync``, on the caller's
thread, with no event loop. psycopg's errors become ``BackendError``.

psycopg is imported only when such a connection is given: ``is_psycopg`` tells one by its
class's module, so pigeon imports without psycopg installed.
"""

from __future__ import annotations

import functools
import re
from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

from pigeon.errors import BackendError

T = TypeVar("T")

_PLACEHOLDER = re.compile(r"\$(\d+)")


def is_psycopg(connection: Any) -> bool:
    """Whether ``connection`` is one of psycopg 3's (sync or async)."""
    return type(connection).__module__.split(".")[0] == "psycopg"


def is_async_psycopg(connection: Any) -> bool:
    """Whether ``connection`` is a psycopg 3 ``AsyncConnection`` (or a subclass of it)."""
    return is_psycopg(connection) and any(
        c.__name__ == "AsyncConnection" for c in type(connection).__mro__
    )


@functools.cache
def convert(sql: str) -> str:
    """An asyncpg statement in psycopg's form: ``%`` doubled, ``$n`` -> ``%(pn)s``.

    Whole-line comments are dropped first: psycopg finds placeholders anywhere in the text,
    and the comments of queries.sql name parameters (``$3-$12``)."""
    kept = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return _PLACEHOLDER.sub(r"%(p\1)s", kept.replace("%", "%%"))


def _params(args: Sequence[Any]) -> dict[str, Any]:
    return {f"p{i}": value for i, value in enumerate(args, 1)}


def _in_transaction(connection: Any) -> bool:
    # Without autocommit a statement joins the transaction the application will end (psycopg
    # begins it implicitly), even before its first statement: Django's atomic() is that.
    if not connection.autocommit:
        return True
    return bool(connection.info.transaction_status.name != "IDLE")


def _failed(exc: BaseException) -> BackendError:
    return BackendError(f"PostgreSQL (the application's psycopg connection): {exc}")


class Psycopg:
    """A psycopg ``AsyncConnection`` as far as ``enqueue.py`` goes (see the module)."""

    def __init__(self, connection: Any) -> None:
        import psycopg

        self._connection = connection
        self._psycopg = psycopg

    def is_in_transaction(self) -> bool:
        return _in_transaction(self._connection)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        try:
            async with self._connection.transaction():
                yield
        except self._psycopg.Error as exc:
            raise _failed(exc) from exc

    async def _run(self, sql: str, args: Sequence[Any], rows: bool) -> list[tuple[Any, ...]]:
        psycopg = self._psycopg
        try:
            async with psycopg.AsyncCursor(
                self._connection, row_factory=psycopg.rows.tuple_row
            ) as cursor:
                await cursor.execute(convert(sql), _params(args))
                return await cursor.fetchall() if rows else []
        except psycopg.Error as exc:
            raise _failed(exc) from exc

    async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return await self._run(sql, args, True)

    async def fetchrow(self, sql: str, *args: Any) -> tuple[Any, ...] | None:
        found = await self._run(sql, args, True)
        return found[0] if found else None

    async def execute(self, sql: str, *args: Any) -> None:
        await self._run(sql, args, False)

    async def executemany(self, sql: str, args: Iterable[Sequence[Any]]) -> None:
        for one in args:
            await self._run(sql, one, False)


class SyncPsycopg:
    """A psycopg ``Connection`` as far as ``enqueue.py`` goes: coroutines that never
    suspend, driven by ``run_sync`` (see the module)."""

    def __init__(self, connection: Any) -> None:
        import psycopg

        self._connection = connection
        self._psycopg = psycopg

    def is_in_transaction(self) -> bool:
        return _in_transaction(self._connection)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        try:
            with self._connection.transaction():
                yield
        except self._psycopg.Error as exc:
            raise _failed(exc) from exc

    def _run(self, sql: str, args: Sequence[Any], rows: bool) -> list[tuple[Any, ...]]:
        psycopg = self._psycopg
        try:
            with psycopg.Cursor(self._connection, row_factory=psycopg.rows.tuple_row) as cursor:
                cursor.execute(convert(sql), _params(args))
                return cursor.fetchall() if rows else []
        except psycopg.Error as exc:
            raise _failed(exc) from exc

    async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return self._run(sql, args, True)

    async def fetchrow(self, sql: str, *args: Any) -> tuple[Any, ...] | None:
        found = self._run(sql, args, True)
        return found[0] if found else None

    async def execute(self, sql: str, *args: Any) -> None:
        self._run(sql, args, False)

    async def executemany(self, sql: str, args: Iterable[Sequence[Any]]) -> None:
        for one in args:
            self._run(sql, one, False)


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """The value of a coroutine that never suspends (one over ``SyncPsycopg``), run here.

    Raises RuntimeError if it does suspend: it awaited something other than this module's
    sync connection, which only an event loop could run."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coroutine.close()
    raise RuntimeError("a sync enqueue awaited something that needs an event loop")

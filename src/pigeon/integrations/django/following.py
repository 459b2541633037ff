"""``DjangoApp``: an App whose sends follow Django's transactions.

Inside ``transaction.atomic()`` (on the App's ``database``), a send is durable only if the
transaction commits:

- on PostgreSQL (Django's psycopg 3 connection) and on SQLite (its ``sqlite3`` connection),
  when the App's backend is that database itself, the message is written at once through
  Django's own connection, inside its transaction (``App.transaction``, the sync form): it
  commits with the block, a rollback (of the block or of a savepoint around the send)
  takes it away, and workers see it only once committed;
- on any other backend (Redis, another database) it is sent on commit
  (``transaction.on_commit``): after the commit, from the committing thread, so a rollback
  sends nothing, but a process that dies between the commit and the send loses it, and a
  send that fails then raises from the commit's caller.

Outside ``atomic()`` a send is the App's ordinary send. A send from a coroutine (an event
loop running in this thread) is sent on commit too: Django's connections are sync.

A worker of a ``DjangoApp`` recycles Django's database connections around each task as
Django does around a request (``connections``: ``close_old_connections`` before and after).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from typing import Any, TypeVar

from django.db import connections, transaction

from pigeon.app import App
from pigeon.backends.postgres.psycopg_connection import is_psycopg
from pigeon.integrations.django.connections import around_async_run, around_sync_run
from pigeon.message import Message
from pigeon.promise import MessagePromise, Promise, TaskLike

T = TypeVar("T")

log = logging.getLogger("pigeon.django")


class DjangoApp(App):
    """A ``pigeon.App`` whose sends follow the transactions of Django's ``database``
    (see the module). ``follows_database`` says whether its backend stores in that
    database itself (``config.same_database``), so that sends can be written through
    Django's connection; otherwise they are sent on commit. Its workers close Django's
    old connections before and after each task (``connections``)."""

    def __init__(self, url: str | None = None, *, database: str = "default", **options: Any):
        options.setdefault("around_sync_run", around_sync_run)
        options.setdefault("around_async_run", around_async_run)
        super().__init__(url, **options)
        self.database = database
        self.follows_database = False
        self._warned: set[str] = set()

    def send_message(self, message: Message, task: TaskLike[Any] | None) -> MessagePromise[Any]:
        """Send one message (``App.send_message``), following Django's transaction."""
        connection = self._in_atomic()
        if connection is None:
            return super().send_message(message, task)
        raw = self._writable(connection)
        if raw is None:
            return self._on_commit([message], task)[0]
        with self.transaction(raw):
            return super().send_message(message, task)

    def send_messages(
        self, messages: list[Message], task: TaskLike[T] | None, *, promises: bool = True
    ) -> list[Promise[T]]:
        """Send many messages (``App.send_messages``), following Django's transaction."""
        connection = self._in_atomic()
        if connection is None or not messages:
            return super().send_messages(messages, task, promises=promises)
        raw = self._writable(connection)
        if raw is None:
            made = self._on_commit(messages, task)
            return list(made) if promises else []
        with self.transaction(raw):
            return super().send_messages(messages, task, promises=promises)

    def _in_atomic(self) -> Any:
        """This thread's Django connection when a send must follow its transaction."""
        connection = connections[self.database]
        if not connection.in_atomic_block:
            return None
        return connection

    def _writable(self, connection: Any) -> Any:
        """The DB-API connection under ``connection`` if a send can be written through it,
        in its transaction; None when it must be sent on commit instead."""
        if not self.follows_database or _loop_running():
            return None
        raw = connection.connection
        if connection.vendor == "sqlite" and isinstance(raw, sqlite3.Connection):
            if connection.transaction_mode != "IMMEDIATE":
                self._warn_once(
                    "sqlite",
                    "DATABASES[%r]['OPTIONS']['transaction_mode'] is not 'IMMEDIATE': a"
                    " transaction that reads before it writes may fail with 'database is"
                    " locked' while workers write (see the README, Django)",
                    self.database,
                )
            return raw
        if connection.vendor == "postgresql":
            if is_psycopg(raw):
                return raw
            self._warn_once(
                "psycopg2",
                "Django's database %r is on psycopg2: sends are made on commit; install"
                " psycopg 3 to write them in the transaction",
                self.database,
            )
        return None

    def _on_commit(
        self, messages: list[Message], task: TaskLike[Any] | None
    ) -> list[MessagePromise[Any]]:
        """Send ``messages`` once the transaction commits; their promises now."""
        made = [MessagePromise(self, m.id, task, None, m.result_ttl > 0) for m in messages]
        send_one = super().send_message
        send_many = super().send_messages

        def send() -> None:
            one = len(messages) == 1
            sent = [send_one(messages[0], task)] if one else send_many(messages, task)
            for promise, stored in zip(made, sent, strict=True):
                if isinstance(stored, MessagePromise):
                    # The id standing for it (a keyed duplicate's is the holder's), as a
                    # sync send fixes it once stored.
                    promise._id = stored.id

        transaction.on_commit(send, using=self.database)
        return made

    def _warn_once(self, what: str, text: str, *args: Any) -> None:
        if what not in self._warned:
            self._warned.add(what)
            log.warning(text, *args)


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True

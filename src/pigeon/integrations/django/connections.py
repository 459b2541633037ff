"""Django's database connections recycled around each task a worker runs, as Django recycles
them around each request.

Django keeps one connection per database and thread, and closes one only at the start and
the end of a request (``close_old_connections``, on ``request_started`` and
``request_finished``): one that outlived ``CONN_MAX_AGE``, or one that broke (a database
restart, a connection the server terminated) after an error. A worker serves no requests,
so ``DjangoApp`` has these run around each of its tasks (``App(around_sync_run=...,
around_async_run=...)``):

- a sync task, in the worker's thread that runs it (where its connections are):
  ``close_old_connections()`` before and after the call;
- an async task, whose ORM calls (``aget``, ``acreate``, ``sync_to_async``) run in asgiref's
  thread for thread-sensitive code: ``close_old_connections`` there
  (``sync_to_async(close_old_connections)``), before and after, as Django's ASGI handler
  does around a request.

So a connection past ``CONN_MAX_AGE`` is closed after the task that used it last (with the
default of 0, each task gets a fresh one, as each request does), and a broken one is closed
after the task that met the error, so the next task connects afresh. With
``CONN_HEALTH_CHECKS = True`` a reused connection is checked before its first query in a
task, so even the first task after a database restart gets a working one.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.db import close_old_connections

from pigeon.context import _current

log = logging.getLogger("pigeon.django")

_close_old_connections_async = sync_to_async(close_old_connections, thread_sensitive=True)


def around_sync_run(call: Callable[[], Any]) -> Any:
    """Run a sync task's ``call`` in this thread between two ``close_old_connections()``."""
    close_old_connections()
    try:
        return call()
    finally:
        _after(close_old_connections)


async def around_async_run(call: Callable[[], Awaitable[Any]]) -> Any:
    """Await an async task's ``call`` between two ``close_old_connections()`` in the thread
    that Django's async ORM queries run in."""
    await _close_old_connections_async()
    try:
        return await call()
    finally:
        try:
            await _close_old_connections_async()
        except Exception as exc:
            _log_after(exc)


def _after(close: Callable[[], None]) -> None:
    # The task has its outcome already: a connection that fails to close does not change it
    # (the next task's close_old_connections tries again).
    try:
        close()
    except Exception as exc:
        _log_after(exc)


def _log_after(exc: Exception) -> None:
    running = _current.get()
    log.warning(
        "closing Django's database connections after %s failed: %s",
        f"message {running.id}" if running is not None else "a task",
        exc,
        exc_info=exc,
    )

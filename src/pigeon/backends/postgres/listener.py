"""The listening side of the PostgreSQL backend (:mod:`pigeon.backends.postgres.backend`).

One connection per backend object LISTENs to its schema's channels: ``work`` (payload:
a queue that has work) wakes fetches sleeping on that queue, ``done`` (payload: lines of
``id<TAB>settled_at<TAB>result``, or bare ids) wakes the waiters of those ids and hands them
the outcome when it came along, ``events`` (payload: the newest event's seq) wakes the
readers of the event log. Waiters register (``Waker``) before they look, so that no
notification sent after their look is missed.

Waiting on a message this process stored skips the store read that starts a wait
(``track`` / ``unheard``, :mod:`pigeon.backends.tracking`).

A channel is listened on only from the first time something waits on it (``listen``): a
process that only sends never hears every enqueue's ``work`` NOTIFY, nor a worker that
waits on no outcome every settle's ``done``. Each notification heard costs a wake-up of a
server process and of this one, on the path of the messages that caused it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any, Literal

import asyncpg
import msgspec

from pigeon import codec
from pigeon.backends.tracking import Tracker
from pigeon.message import Result

log = logging.getLogger("pigeon.backends.postgres")

#: The key ``events`` waiters register under (every reader wants every event).
EVENTS = "*"
#: How often fetches, waiters and event readers look for themselves while the listening
#: connection is down (seconds).
POLL_WHILE_DEAF = 0.1

#: What can be listened on.
Kind = Literal["work", "done", "events"]

#: What a lost or broken connection can raise. InternalClientError is asyncpg's word for a
#: pooled connection whose session the server terminated before the client noticed.
DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError)


def stored_result(body: bytes, settled_at: float) -> Result:
    """An outcome as stored (its settled_at, the database clock's, is kept apart)."""
    return msgspec.structs.replace(codec.decode_result_record(body), settled_at=settled_at)


class Waker:
    """One waiter's registration with the listener, under one or more keys."""

    __slots__ = ("event", "keys", "registry")

    def __init__(self, registry: dict[str, set[asyncio.Event]], keys: Collection[str]) -> None:
        self.registry = registry
        self.keys = keys
        self.event = asyncio.Event()
        for key in keys:
            registry.setdefault(key, set()).add(self.event)

    async def sleep(self, seconds: float) -> None:
        """Until woken or ``seconds`` pass."""
        if seconds <= 0 or self.event.is_set():
            return
        try:
            async with asyncio.timeout(seconds):
                await self.event.wait()
        except TimeoutError:
            pass

    def close(self) -> None:
        for key in self.keys:
            events = self.registry.get(key)
            if events is not None:
                events.discard(self.event)
                if not events:
                    del self.registry[key]


class Listener:
    """The one LISTENing connection of a backend object, and the waiters it wakes.

    ``work`` waiters are registered by queue name, ``done`` waiters by message id,
    ``events`` waiters under ``EVENTS`` (when there is an events channel). When the
    connection is lost every waiter is woken (to poll until it is back) and it reconnects
    with backoff; once it is back every waiter is woken again to re-check, since a
    notification may have been missed meanwhile.
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[Any]],
        work_channel: str,
        done_channel: str,
        url: str,
        scrub: Callable[[str], str],
        events_channel: str | None = None,
    ) -> None:
        self._connect = connect
        self._channels: dict[str, tuple[str, Callable[..., None]]] = {
            "work": (work_channel, self._on_work),
            "done": (done_channel, self._on_done),
        }
        if events_channel is not None:
            self._channels["events"] = (events_channel, self._on_events)
        self._wanted: set[str] = set()  # the kinds asked for so far (``listen``)
        self._listening: set[str] = set()  # the kinds LISTENed on by the current connection
        self._lock = asyncio.Lock()  # one LISTEN at a time on the connection
        self._url = url
        self._scrub = scrub
        self.work: dict[str, set[asyncio.Event]] = {}
        self.done: dict[str, set[asyncio.Event]] = {}
        self.events: dict[str, set[asyncio.Event]] = {}
        self._announced: dict[str, int] = {}  # work notifications received, by queue
        # Outcomes announced for ids someone waits on (None: settled, look it up).
        self.pushed: dict[str, Result | None] = {}
        self._tracker: Tracker[Result] = Tracker()  # ids stored through this backend object
        self._epoch = 0
        self._conn: Any = None
        self._reconnecting: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def up(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def start(self) -> None:
        """Connect, and listen on the channels asked for so far."""
        async with self._lock:
            conn = await self._connect()
            try:
                for kind in self._wanted:
                    await conn.add_listener(*self._channels[kind])
            except BaseException:
                conn.terminate()
                raise
            conn.add_termination_listener(self._on_lost)
            self._conn = conn
            self._listening = set(self._wanted)

    async def listen(self, kind: Kind) -> None:
        """Make sure the ``kind`` channel is listened on (while the connection is down,
        from when it is back). Raises what LISTEN raised, and then listens on the next try."""
        if kind in self._listening:
            return
        if kind not in self._channels:
            raise ValueError(f"no {kind!r} channel to listen on")
        async with self._lock:  # a second caller returns once the LISTEN is done
            self._wanted.add(kind)
            conn = self._conn
            if kind in self._listening or conn is None or conn.is_closed():
                return  # listened on, or the connection is down: start() listens on it
            try:
                await conn.add_listener(*self._channels[kind])
            except BaseException:
                self._wanted.discard(kind)
                raise
            if conn is self._conn:
                self._listening.add(kind)

    async def close(self) -> None:
        self._closed = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnecting
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), 5)
            except (TimeoutError, *DB_ERRORS):
                conn.terminate()
        self.wake_all()

    def abandon(self) -> None:
        """Drop the connection without talking to it (its event loop is gone)."""
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.terminate()

    def news(self, queues: Sequence[str]) -> tuple[int, ...]:
        """A stamp that changes whenever work is announced for one of ``queues`` (or the
        connection was lost, when announcements may have been missed)."""
        return (self._epoch, *(self._announced.get(q, 0) for q in queues))

    def track(self, ids: Collection[str]) -> bool:
        """Note ids about to be stored, when their settle is sure to be heard: call it
        before the enqueue is sent. False when nothing was noted."""
        if not self._hears_done():
            return False
        self._tracker.track(ids)
        return True

    def untrack(self, ids: Collection[str]) -> None:
        """Forget ids noted by ``track`` whose enqueue failed."""
        self._tracker.untrack(ids)

    def unheard(self, ids: Collection[str]) -> tuple[dict[str, Result], list[str]]:
        """For a waiter about to read the store: (the outcomes already heard, the ids whose
        outcome must be read); tracked ids still to be heard of are in neither, once: if
        asked again (the wait timed out: a connection that died unnoticed?) they are read."""
        return self._tracker.unheard(ids, self._hears_done(), _same, once=True)

    def _hears_done(self) -> bool:
        return "done" in self._listening and self.up

    def wake_all(self) -> None:
        self._epoch += 1
        self._tracker.lost()
        for registry in (self.work, self.done, self.events):
            for events in registry.values():
                for event in events:
                    event.set()
            registry.clear()

    def _on_work(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        self._announced[payload] = self._announced.get(payload, 0) + 1
        for event in self.work.pop(payload, ()):
            event.set()

    def _on_done(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        # Lines of "id<TAB>settled_at<TAB>result", or a bare id when the result was too long
        # to travel here (or nothing was stored): the waiter then looks it up.
        tracker = self._tracker
        for line in payload.split("\n"):
            mid, _, news = line.partition("\t")
            events = self.done.pop(mid, None)
            if events is None and mid not in tracker:
                continue  # nobody here waits for it: not worth decoding
            result: Result | None = None
            if news:
                settled_at, _, body = news.partition("\t")
                try:
                    result = stored_result(body.encode(), float(settled_at))
                except (ValueError, msgspec.DecodeError, msgspec.ValidationError) as exc:
                    log.warning("undecodable outcome of %s in a notification: %s", mid, exc)
            tracker.hear(mid, result)
            if events is None:
                continue
            self.pushed[mid] = result
            for event in events:
                event.set()

    def _on_events(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        for event in self.events.pop(EVENTS, ()):
            event.set()

    def _on_lost(self, conn: Any) -> None:
        if self._closed or conn is not self._conn:
            return
        self._conn = None
        self.wake_all()  # they poll until the connection is back
        log.warning("PostgreSQL %s: the listening connection was lost; reconnecting", self._url)
        if self._reconnecting is None or self._reconnecting.done():
            self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        backoff = 0.05
        while not self._closed:
            try:
                await self.start()
            except DB_ERRORS as exc:
                log.warning(
                    "PostgreSQL %s: listening again failed, retrying in %.2fs: %s",
                    self._url,
                    backoff,
                    self._scrub(str(exc)),
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            log.info("PostgreSQL %s: listening again", self._url)
            self.wake_all()  # a notification may have been missed: everyone looks again
            return


def _same(result: Result) -> Result:
    return result

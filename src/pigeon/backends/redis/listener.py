"""The pub/sub side of the Redis backend: one subscriber connection per backend object.

Settles publish the ids they settled, with the outcomes they stored when small, on the app's
``done`` channel (see ``lua/common.lua``). ``Listener`` holds one connection subscribed
to it and wakes, in this process, the waiters that registered for an id: ``wait`` never
polls, and a waiter handed the outcome itself needs no further round trip. (Fetches do not
need it: they block on the server, see ``RedisBackend.fetch``.)

No notification may be lost in a way that leaves a waiter asleep:
- a waiter registers (``watch_ids``) before it reads the store, and the channel is
  subscribed (``subscribe`` returns) before that read, so whatever settles after the read
  is published to a connection that already listens;
- after a reconnect, every waiter is woken (``Watch.reread``) as soon as the channel is
  subscribed again, so it reads the store once more: what was published while the
  connection was down is found that way.

One read is skipped, on the same grounds: a message that this object stored (``track``)
while the channel was subscribed cannot settle unheard, unless the connection drops (which
wakes every waiter to read again), so ``wait`` does not read the store for it
(``unheard``; :mod:`pigeon.backends.tracking`). Such outcomes that arrive before anyone
waits are kept for the waiter that comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection, Coroutine, Iterator
from typing import Any

import hiredis
import msgspec
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from pigeon import codec
from pigeon.backends.redis.client import TakenOver
from pigeon.backends.tracking import Tracker
from pigeon.message import Result

log = logging.getLogger("pigeon.backends.redis")

#: Seconds between pings on an idle subscriber connection, and how long a silent connection
#: is trusted: past that it is dropped and made again (a server that vanished without
#: closing the socket).
PING_EVERY = 10.0
SILENCE_LIMIT = 2.5 * PING_EVERY
RECONNECT_BACKOFF_MAX = 2.0

_done_decoder = msgspec.json.Decoder(list[str])


class Watch:
    """One waiter: ``event`` is set when what it waits for may have happened. ``found``
    holds the outcomes handed over by notifications; ``reread`` says the store must be read
    (a notification without the outcome, or a reconnect)."""

    __slots__ = ("event", "found", "reread")

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.found: dict[str, Result] = {}
        self.reread = True

    def wake(self, reread: bool) -> None:
        self.reread = self.reread or reread
        self.event.set()


class _Subscriber(TakenOver):
    """The subscriber connection: each message goes to ``on_reply`` (the listener's
    dispatch) as its bytes arrive; ``lost`` fails once the connection is gone, and
    ``heard_at`` says when the server last sent anything (silence is measured from it)."""

    def __init__(self, conn: AbstractConnection, on_reply: Callable[[Any], None]) -> None:
        super().__init__(conn, hiredis.Reader())
        self._on_reply = on_reply
        loop = asyncio.get_running_loop()
        self.heard_at = loop.time()  # (loop time) when the server last sent anything
        self.lost: asyncio.Future[None] = loop.create_future()

    def send(self, command: tuple[Any, ...]) -> None:
        self.transport.write(hiredis.pack_command(command))

    def on_reply(self, reply: Any) -> None:
        self._on_reply(reply)

    def data_received(self, data: bytes) -> None:
        self.heard_at = asyncio.get_running_loop().time()
        super().data_received(data)

    def on_lost(self, error: BaseException) -> None:
        if not self.lost.done():
            self.lost.set_exception(error)
            self.lost.exception()  # retrieved: after a close nobody awaits it


class Listener:
    """One subscriber connection, reconnected on failure, dispatching to local waiters."""

    def __init__(self, pool: ConnectionPool, done_channel: bytes, url: str) -> None:
        self._pool = pool
        self._url = url
        self._done = done_channel
        self._wanted: set[bytes] = set()  # subscribed on first use: a worker never waits
        self._sent: set[bytes] = set()  # subscribed (asked) on the current connection
        self._confirmed: set[bytes] = set()  # confirmed on the current connection
        self._confirm_event = asyncio.Event()
        self._conn: AbstractConnection | None = None
        self._outbox: asyncio.Queue[tuple[bytes, ...]] = asyncio.Queue()
        self._runner: asyncio.Task[None] | None = None
        self._by_id: dict[str, set[Watch]] = {}
        # ids stored by this object, and their outcomes as published (None when not
        # published: read the store)
        self._tracker: Tracker[str] = Tracker()

    # waiters ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def watch_ids(self, ids: Collection[str]) -> Iterator[Watch]:
        """Woken when one of ``ids`` settles (with its outcome when it was small enough to
        publish), or after a reconnect."""
        watch = Watch()
        for mid in ids:
            self._by_id.setdefault(mid, set()).add(watch)
        try:
            yield watch
        finally:
            for mid in ids:
                waiters = self._by_id.get(mid)
                if waiters is not None:
                    waiters.discard(watch)
                    if not waiters:
                        del self._by_id[mid]

    # messages stored here ----------------------------------------------------------------

    def track(self, ids: Collection[str]) -> bool:
        """Note ids about to be stored, when their settle is sure to be heard: call it
        before the enqueue is sent. False when nothing was noted."""
        if self._done not in self._confirmed:
            return False
        self._tracker.track(ids)
        return True

    def untrack(self, ids: Collection[str]) -> None:
        """Forget ids noted by ``track`` that the enqueue did not store now (they may have
        settled before: their waiters must read the store)."""
        self._tracker.untrack(ids)

    def unheard(self, ids: Collection[str]) -> tuple[dict[str, Result], list[str]]:
        """For a waiter about to read the store: (the outcomes already heard, the ids whose
        outcome must be read). Ids tracked on the current connection whose settle was not
        heard yet are in neither: their notification is still to come."""
        return self._tracker.unheard(ids, self._done in self._confirmed, _decode_record)

    # subscriptions ------------------------------------------------------------------------

    async def subscribe(self, channels: Collection[bytes], timeout: float) -> bool:
        """Make sure ``channels`` are subscribed; False if that took longer than ``timeout``
        (the server is unreachable: callers then read the store once and return)."""
        self._wanted.update(channels)
        if self._runner is None or self._runner.done():
            self._runner = asyncio.get_running_loop().create_task(self._run())
            self._runner.add_done_callback(self._ended)
        if self._conn is not None:
            unsent = tuple(c for c in channels if c not in self._sent)
            if unsent:
                self._sent.update(unsent)
                self._outbox.put_nowait((b"SUBSCRIBE", *unsent))
        if all(c in self._confirmed for c in channels):
            return True
        try:
            async with asyncio.timeout(timeout):
                while not all(c in self._confirmed for c in channels):
                    self._confirm_event.clear()
                    await self._confirm_event.wait()
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner

    def _ended(self, runner: asyncio.Task[None]) -> None:
        if not runner.cancelled() and runner.exception() is not None:
            log.error(
                "Redis %s: the notifications listener failed; it restarts on the next wait",
                self._url,
                exc_info=runner.exception(),
            )

    # the connection -----------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = 0.01
        while True:
            # RESP2: messages are plain replies, which skips redis-py's handler for RESP3
            # pushes (it logs each one, taking a lock: time on every wake-up).
            kwargs = {**self._pool.connection_kwargs, "protocol": 2}
            conn: AbstractConnection = self._pool.connection_class(**kwargs)
            try:
                await conn.connect()  # type: ignore[no-untyped-call]
                subscriber = _Subscriber(conn, self._on_reply)
                self._conn = conn
                self._confirmed = set()
                self._sent = set(self._wanted)
                self._outbox = asyncio.Queue()
                if self._sent:
                    self._outbox.put_nowait((b"SUBSCRIBE", *self._sent))
                await _first_failure(self._write(subscriber), self._watch(subscriber))
            except (RedisError, OSError) as exc:
                if self._confirmed:
                    backoff = 0.01  # it worked for a while: reconnect at once
                log.warning(
                    "Redis %s: the notifications connection failed (%s); reconnecting",
                    self._url,
                    exc,
                )
            finally:
                self._conn = None
                self._confirmed = set()
                self._tracker.lost()  # what was tracked may have settled unheard
                with contextlib.suppress(RedisError, OSError):
                    await conn.disconnect(nowait=True)  # its stream no longer sees the close
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RECONNECT_BACKOFF_MAX)

    async def _write(self, subscriber: _Subscriber) -> None:
        """Sends SUBSCRIBEs as they are asked for, and a PING when the line is quiet."""
        while True:
            try:
                async with asyncio.timeout(PING_EVERY):
                    command = await self._outbox.get()
            except TimeoutError:
                command = (b"PING",)
            subscriber.send(command)

    async def _watch(self, subscriber: _Subscriber) -> None:
        """Returns never; raises when the connection is lost, or silent (not even a reply
        to a ping) for SILENCE_LIMIT seconds."""
        loop = asyncio.get_running_loop()
        while True:
            quiet_until = subscriber.heard_at + SILENCE_LIMIT
            if loop.time() >= quiet_until:
                raise RedisConnectionError(f"no reply for {SILENCE_LIMIT:.0f}s, not even to a ping")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(quiet_until):
                    await asyncio.shield(subscriber.lost)

    def _on_reply(self, reply: Any) -> None:
        if not isinstance(reply, list) or len(reply) < 3:
            return  # a pong
        kind = reply[0]
        if kind == b"message":
            self._dispatch(reply[1], reply[2])
        elif kind == b"subscribe":
            self._subscribed(reply[1])

    def _subscribed(self, channel: bytes) -> None:
        self._confirmed.add(channel)
        self._confirm_event.set()
        # Anything published on this channel while it was not subscribed went unheard:
        # every waiter on it reads the store again.
        for waiters in self._by_id.values():
            for watch in waiters:
                watch.wake(reread=True)

    def _dispatch(self, channel: bytes, data: bytes) -> None:
        if channel != self._done:
            return
        by_id, tracker = self._by_id, self._tracker
        if not by_id and not tracker.pending:
            return
        try:
            flat = _done_decoder.decode(data)
        except msgspec.DecodeError:
            log.error("Redis %s: unreadable notification on the done channel", self._url)
            for waiters in by_id.values():
                for watch in waiters:
                    watch.wake(reread=True)
            return
        for i in range(0, len(flat) - 1, 2):
            mid = flat[i]
            tracker.hear(mid, flat[i + 1] or None)
            watching = by_id.get(mid)
            if not watching:
                continue
            stored = flat[i + 1]
            if not stored:
                for watch in watching:
                    watch.wake(reread=True)
                continue
            result = codec.decode_result_record(stored.encode())
            for watch in watching:
                watch.found[result.id] = result
                watch.wake(reread=False)


def _decode_record(stored: str) -> Result:
    return codec.decode_result_record(stored.encode())


async def _first_failure(*jobs: Coroutine[Any, Any, None]) -> None:
    """Run ``jobs`` until one of them ends; raise what it raised, cancelling the others."""
    tasks = [asyncio.ensure_future(job) for job in jobs]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        task.result()

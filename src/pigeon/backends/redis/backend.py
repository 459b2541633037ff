"""``redis://`` and ``rediss://``: the Backend contract on Redis, with redis-py and hiredis.

URL: ``redis://[[user]:password@]host[:port][/db][?prefix=NAME][&retry_for=SECONDS]``
(``rediss://`` for TLS; other query parameters are redis-py's own, such as
``socket_timeout``). Every key starts with ``{NAME}:`` (``NAME`` defaults to ``pigeon``), so
one server holds many apps. ``retry_for`` (from 0 to 30, the default) is how long a call
keeps retrying while the server is unreachable; it is also the ``retry_for`` attribute
(``pigeon.backends.base.RetryingBackend``), which the ``pigeon`` CLI lowers.

How it keeps the contract of :mod:`pigeon.backends.base`:

- Every operation that changes state is one Lua script (``lua/``), so it is atomic:
  ``enqueue``, ``fetch``, ``extend``, ``settle``, ``release``, ``cancel``, ``requeue``,
  ``take``, ``acquire``, ``release_slots``, ``report``, ``publish``, ``mark_schedules``,
  ``pause`` and ``resume`` (``pauses.lua``, which ``fetch.lua`` reads with one HMGET). A
  script handles a whole batch in one call, except that ``enqueue`` pipelines a big batch as
  one call per ``ENQUEUE_CHUNK`` on one connection (``enqueue_plain.lua`` for a chunk of
  messages without keys or links that share their options). Scripts are loaded once (``SCRIPT
  LOAD`` at open) and called by SHA; after a server restart emptied the script cache they
  are loaded again on the first ``NOSCRIPT``.
- Times come from the server's clock (``TIME`` inside each script); ``time()`` is the
  server's ``TIME``. Workers' clocks never matter.
- Sorted sets order the work: per queue a ready set scored by priority then due time (ties
  by id, which is time-ordered), a scheduled set by due time (promoted by ``fetch``), and
  one set of lease deadlines (lapsed leases are reclaimed by ``fetch``).
- All keys of an app share one Redis Cluster hash tag, ``{NAME}``, so every script touches
  one slot: settling one message must, atomically, store its outcome and release follow-ups
  and joins that may sit in any queue, so the unit of atomicity is the app, not the queue.
  On a cluster, an app therefore lives on one shard; run apps with different prefixes to
  spread the load. The URL may name any node: ``Client`` follows ``MOVED`` to the node that
  serves the slot (and follows it again when the slot is migrated).
- Rate limits are one key per bucket holding its GCRA ``tat``, expiring (``PX``) once the
  tat has passed; concurrency limits one sorted set per name (holder -> expiry), cleared of
  expired places by every ``acquire`` and expiring after its latest place; progress reports
  one key per message with its ``PX`` ttl. None of them needs ``sweep``. The scheduler's
  marks are one hash (schedule name -> mark), read with ``HMGET``; they never expire.
- Events are one stream (``XADD ... MAXLEN ~ EVENTS_KEPT``); a cursor is a stream id, and
  ``read_events`` waits with ``XREAD BLOCK`` on a connection of its own for the wait (the
  client makes another for whatever runs meanwhile).
- Waiting is pushed, never polled: a settle publishes the settled ids on the ``done``
  channel (with the stored outcomes when small, so a waiter needs no further read; see
  :mod:`pigeon.backends.redis.listener`). Workers are woken without pub/sub: every script
  that makes work due in a queue pushes a token onto its ``wake:<queue>`` list (at most
  one), and a waiting ``fetch`` sends ``BLPOP`` on its queues' lists with the fetch script
  queued behind it on the same connection, so it wakes with its deliveries; it blocks at
  most until the earliest scheduled message or lease deadline.
- A dropped connection or a restarting server is retried with exponential backoff for up to
  ``retry_for`` seconds (:mod:`pigeon.backends.redis.client`). Retrying is
  safe: enqueue stores an id once; acquire, release_slots and report set what they set
  again, and a mark_schedules run twice raises no mark further; fetch, settle,
  release, cancel, requeue, take and publish pass a request token, and a retried call whose
  first run did go through gets that run's answer instead of acting twice. ``read_events``
  only reads.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import Awaitable, Collection, Sequence
from typing import Any

import msgspec
from redis.exceptions import NoScriptError

from pigeon import codec
from pigeon.aio import shielded
from pigeon.backends.base import SWEEP_CHUNK, MessagePage, MessageQuery, redact
from pigeon.backends.redis import listing, replies
from pigeon.backends.redis.arguments import (
    enqueue_call,
    json_encode,
    lease_args,
    settle_args,
)
from pigeon.backends.redis.client import MAX_BLOCK, TRANSIENT, Client
from pigeon.backends.redis.connections import Connections, check_retry_for, connect, parse_url
from pigeon.backends.redis.coordination import Coordination
from pigeon.backends.redis.replies import seconds
from pigeon.backends.shared import check_pause, orphaned_leases, release_orphans, until_passed
from pigeon.message import (
    DeadLetter,
    Delivery,
    Lease,
    Message,
    MessageInfo,
    Outcome,
    Pause,
    Result,
    Stats,
    WorkerInfo,
)

log = logging.getLogger("pigeon.backends.redis")

#: Messages stored per enqueue script call: a bigger batch is sent in several calls, pipelined
#: (the server is blocked for one chunk at a time, a few milliseconds).
ENQUEUE_CHUNK = 500
#: Seconds a drained queue is believed to stay drained with no wake-up token (leases taken
#: since by other workers may run out).
IDLE_TRUST = 1.0

JOIN_MODES = frozenset({"all", "any", "race", "all_settled"})


class RedisBackend(Coordination):
    """The Backend contract on one Redis server (see the module docstring for the how).

    Made from ``redis://host:port/db?prefix=NAME`` or ``rediss://...``. Methods called
    before ``open()`` connect on first use; an object used from a new event loop (the App
    moved to another loop) connects again there.
    """

    def __init__(self, url: str) -> None:
        self.url = redact(url)
        self._client_url, self.prefix, self._retry_for = parse_url(url)
        self._base = f"{{{self.prefix}}}:"
        self._done_channel = f"{self._base}done".encode()
        self._events_key = f"{self._base}events".encode()
        self._conn: Connections | None = None
        self._tokens = itertools.count()
        self._token_prefix = os.urandom(6).hex()
        self._background: set[asyncio.Task[Any]] = set()
        self._drained: dict[str, float] = {}  # queue -> loop time it is known idle until

    def __repr__(self) -> str:
        return f"RedisBackend({self.url!r})"

    # lifecycle ---------------------------------------------------------------------------

    def _connection(self) -> Connections:
        conn = self._conn
        if conn is None or conn.loop is not asyncio.get_running_loop():
            # Connections belong to the loop they were made on; ones left on a closed loop
            # (the App moved to a new one) cannot be closed from here and go with it.
            conn = self._conn = connect(
                self._client_url, self.url, self._base, self._done_channel, self._retry_for
            )
        return conn

    @property
    def retry_for(self) -> float:
        """Seconds a call keeps retrying while the server is unreachable, from 0 to
        ``client.RETRY_FOR`` (the default; the URL's ``retry_for`` sets it too)."""
        return self._retry_for

    @retry_for.setter
    def retry_for(self, seconds: float) -> None:
        self._retry_for = check_retry_for(seconds, repr(self))
        if self._conn is not None:
            self._conn.client.retry_for = self._retry_for

    def _client(self) -> Client:
        return self._connection().client

    async def open(self) -> None:
        """Connect and load the scripts. Raises BackendError when the server does not answer
        within ``retry_for`` seconds."""
        await self._client().load_scripts()

    async def close(self) -> None:
        """Close the connections. A later call connects again."""
        while self._background:  # jobs may start more jobs (a release after a fetch)
            await asyncio.gather(*self._background, return_exceptions=True)
        conn, self._conn = self._conn, None
        if conn is None or conn.loop is not asyncio.get_running_loop():
            return
        await conn.close()

    async def time(self) -> float:
        """The backend clock: the server's ``TIME``."""
        sec, usec = await self._client().execute(b"TIME")
        return seconds(int(sec) * 1_000_000 + int(usec))

    def _token(self) -> str:
        """A request token: a retried call whose first run went through gets its reply."""
        return f"{self._token_prefix}{next(self._tokens):x}"

    async def _script(self, name: str, *args: Any) -> Any:
        return await self._client().script(name, *args)

    # queue -------------------------------------------------------------------------------

    async def enqueue(self, messages: Sequence[Message]) -> list[str]:
        """Store ``messages`` durably and return the id standing for each.

        That is its own id, or the id of the message that holds its ``key``. An id that is
        already stored (as a message, a result or a dead letter) is not stored again, which
        also makes a retried call safe. One script call per ``ENQUEUE_CHUNK`` messages, all
        pipelined on one connection (run in order; each chunk is packed while the server
        stores the one before): ``enqueue_plain.lua`` for a chunk that ``plain_options``
        finds plain, else ``enqueue.lua``. A plain chunk whose ids are all above the id mark
        (the highest id stored so far) is stored without looking each id up (see
        ``arguments.enqueue_call``).
        """
        if not messages:
            return []
        for m in messages:
            if m.join is not None and m.join.mode not in JOIN_MODES:
                raise ValueError(f"unknown join mode {m.join.mode!r}")
        chunks = [messages[i : i + ENQUEUE_CHUNK] for i in range(0, len(messages), ENQUEUE_CHUNK)]
        connection = self._connection()
        mine = [m.id for m in messages]
        tracked = connection.listener.track(mine)
        try:
            if len(chunks) == 1:  # one call: no pipeline to set up
                name, args = enqueue_call(messages)
                answers = [await connection.client.script(name, *args)]
            else:
                answers = await connection.client.scripts(enqueue_call(c) for c in chunks)
        except BaseException:
            if tracked:
                connection.listener.untrack(mine)
            raise
        ids: list[str] = []
        stored = b""
        for chunk, reply in zip(chunks, answers, strict=True):
            chunk_ids, chunk_stored = replies.enqueued(chunk, reply)
            ids.extend(chunk_ids)
            stored += chunk_stored
        if tracked and b"0" in stored:
            old = [mid for mid, new in zip(mine, stored, strict=True) if new != replies.APPLIED]
            connection.listener.untrack(old)
        return ids

    async def fetch(
        self,
        queues: Sequence[str],
        limit: int,
        worker: str,
        lease: float | None = None,
        wait: float = 0.0,
    ) -> list[Delivery]:
        """Lease up to ``limit`` due messages from ``queues``, in the order given.

        Within a queue: highest priority, then earliest due time, then id. Each fetch first
        reclaims lapsed leases (poison after ``max_deliveries``) and dead-letters expired
        messages. When nothing is due, waits up to ``wait`` seconds, blocked on the server
        (BLPOP on the queues' wake lists, with the fetch queued behind it) until work comes
        or the earliest due time. If the caller is cancelled while a lease is being taken,
        the messages taken are released.
        """
        if limit <= 0 or not queues:
            return []
        queues = list(queues)
        lease_arg = "" if lease is None else repr(float(lease))
        args = (worker, lease_arg, limit, *queues)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        # Drained by a fetch a moment ago: whatever came since left a wake-up token, so
        # block at once instead of asking first.
        sleep = self._drained_for(queues, loop.time()) if wait > 0 else 0.0
        if sleep <= 0:
            deliveries, sleep = await self._lease(queues, limit, args, 0.0)
            if deliveries or wait <= 0:
                return deliveries
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            block = min(remaining, sleep, MAX_BLOCK)
            deliveries, sleep = await self._lease(queues, limit, args, block)
            if deliveries:
                return deliveries

    def _drained_for(self, queues: list[str], now: float) -> float:
        """Seconds the queues are known to stay without due work (0: not known)."""
        until = min((self._drained.get(q, 0.0) for q in queues), default=0.0)
        return until - now

    async def _lease(
        self, queues: list[str], limit: int, args: tuple[Any, ...], block: float
    ) -> tuple[list[Delivery], float]:
        """One fetch script call, after a BLPOP of up to ``block`` seconds when ``block``:
        the deliveries, and how long until something may be due."""
        token = self._token()
        blocked: list[int] = []

        def orphaned(call: asyncio.Task[Any]) -> None:
            # The script may run after our caller has gone: hand its leases back rather
            # than let them run out and count as lost deliveries. A blocked fetch is woken
            # at once (its script then runs and answers), not left blocking.
            call.add_done_callback(self._release_orphans)
            self._spawn(call)
            if blocked:
                self._spawn(self._client().unblock(blocked[0]))

        reply = await shielded(self._fetch_script(queues, token, args, block, blocked), orphaned)
        now, next_due, deliveries = replies.fetched(reply)
        sleep = 3600.0 if next_due < 0 else max(seconds(next_due - now), 0.001)
        loop_now = asyncio.get_running_loop().time()
        if len(deliveries) < limit:
            # Work that comes now leaves a token; only due times and leases taken by
            # others since (which may run out) are not announced: trust it a while.
            until = loop_now + min(sleep, IDLE_TRUST)
            for q in queues:
                self._drained[q] = until
        else:
            for q in queues:
                self._drained.pop(q, None)
        return deliveries, sleep

    async def _fetch_script(
        self, queues: list[str], token: str, args: tuple[Any, ...], block: float, blocked: list[int]
    ) -> Any:
        client = self._client()
        if block > 0:
            keys = [f"{self._base}wake:{q}".encode() for q in queues]
            try:
                return await client.script_when_woken(keys, block, blocked, "fetch", token, *args)
            except (*TRANSIENT, NoScriptError) as exc:
                # It may have run: the token makes running it again safe (same answer).
                log.debug("Redis %s: blocked fetch failed (%s); fetching again", self.url, exc)
        return await client.script("fetch", token, *args)

    def _release_orphans(self, call: asyncio.Future[Any]) -> None:
        leases = orphaned_leases(call, replies.fetched_leases)
        if leases:
            self._spawn(release_orphans(self.release, leases))

    def _spawn(self, job: Awaitable[Any]) -> None:
        """Run ``job`` in the background; ``close`` waits for it."""
        task = asyncio.ensure_future(job)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def extend(self, leases: Sequence[Lease]) -> set[str]:
        """Push each held lease to now + the message's lease; return the ids no longer held."""
        if not leases:
            return set()
        return replies.id_set(await self._script("extend", "", *lease_args(leases)))

    async def settle(self, outcomes: Sequence[Outcome]) -> list[bool]:
        """Apply each outcome, all in one script call; per outcome, whether it was applied.

        An outcome applies only while its message is leased as ``outcome.attempt``; the
        first of several outcomes for one delivery wins. A final outcome stores the result
        (kept ``KEEP_FOR_DEPENDENTS`` seconds even with a ttl of 0 when follow-ups or joins
        wait on it; the first stored outcome of an id wins), stores a dead letter for
        ``dead``, removes the message, makes its followers pending and advances its joins.
        ``retry`` makes it due ``retry_in`` seconds from now with one more failure counted.
        """
        if not outcomes:
            return []
        verdicts = await self._script("settle", self._token(), *settle_args(outcomes))
        return replies.verdicts(verdicts)

    async def release(self, leases: Sequence[Lease], delay: float = 0.0) -> int:
        """Make held messages due again ``delay`` seconds from now (server clock; at once by
        default), without counting a failure or a lost lease; returns how many."""
        if not leases:
            return 0
        count: int = await self._script(
            "release", self._token(), repr(max(float(delay), 0.0)), *lease_args(leases)
        )
        return count

    # results -----------------------------------------------------------------------------

    async def results(self, ids: Collection[str]) -> dict[str, Result]:
        """The stored, unexpired outcomes among ``ids``."""
        if not ids:
            return {}
        keys = [f"{self._base}r:{mid}" for mid in ids]
        found: dict[str, Result] = {}
        for i in range(0, len(keys), 10_000):
            for body in await self._client().execute(b"MGET", *keys[i : i + 10_000]):
                if body is not None:
                    result = codec.decode_result_record(body)
                    found[result.id] = result
        return found

    async def wait(self, ids: Collection[str], timeout: float) -> dict[str, Result]:
        """Every outcome among ``ids`` as soon as there is at least one; ``{}`` on timeout.

        Woken by the settle's notification (pub/sub), never by polling.
        """
        ids = list(ids)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        listener = self._connection().listener
        with listener.watch_ids(ids) as watch:
            await listener.subscribe([self._done_channel], timeout)
            watch.event.clear()
            watch.reread = False
            found, unknown = listener.unheard(ids)
            if unknown:
                found.update(await self.results(unknown))
            while True:
                found.update(watch.found)  # handed over by notifications: no round trip
                remaining = deadline - loop.time()
                if found or remaining <= 0:
                    return found
                try:
                    async with asyncio.timeout(remaining):
                        await watch.event.wait()
                except TimeoutError:
                    pass
                watch.event.clear()
                if watch.reread:  # an outcome too big to publish, or a reconnect
                    watch.reread = False
                    found.update(await self.results(ids))

    # control -----------------------------------------------------------------------------

    async def cancel(self, ids: Collection[str]) -> list[str]:
        """Settle each waiting, scheduled or pending message as ``cancelled``.

        Returns the ids cancelled, in the order given. A leased one is marked
        cancel-requested instead (its worker learns of it through ``cancelling``); a settled
        or unknown one is left alone.
        """
        if not ids:
            return []
        return replies.cancelled(await self._script("cancel", self._token(), *ids))

    async def cancelling(self, leases: Sequence[Lease]) -> set[str]:
        """The ids among ``leases`` still held as that attempt whose cancellation was
        requested. One read-only script call, whatever the number of leases."""
        if not leases:
            return set()
        return replies.id_set(await self._script("cancelling", "", *lease_args(leases)))

    async def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """Up to ``limit`` dead letters (of ``queue``, or of every queue), oldest first."""
        if limit <= 0:
            return []
        return replies.dead_letters(await self._script("dead_letters", "", queue or "", limit))

    async def requeue(self, ids: Collection[str]) -> int:
        """Move dead letters back to pending with fresh counts and forget their outcomes.

        Returns how many were requeued; ids without a dead letter are ignored.
        """
        if not ids:
            return 0
        count: int = await self._script("requeue", self._token(), *ids)
        return count

    async def purge_dead(self, ids: Collection[str] | None = None) -> int:
        """Delete the dead letters ``ids`` (all when None); returns how many."""
        if ids is not None:
            if not ids:
                return 0
            count: int = await self._script("purge_dead", "", "ids", *ids)
            return count
        total = 0
        while True:
            count = await self._script("purge_dead", "", "all", SWEEP_CHUNK)
            total += count
            if count < SWEEP_CHUNK:
                return total

    async def purge(self, queue: str) -> int:
        """Delete the waiting, scheduled and pending messages of ``queue``; returns how many.

        Deletes ``SWEEP_CHUNK`` messages per script call, so the server is never blocked
        for long.
        """
        total = 0
        while True:
            count: int = await self._script("purge", "", queue, SWEEP_CHUNK)
            total += count
            if count < SWEEP_CHUNK:
                return total

    async def inspect(self, id: str) -> MessageInfo | None:
        """All that is known of one id (message, stored outcome, dead letter), or None."""
        return replies.message_info(id, await self._script("inspect", "", id))

    async def list_messages(self, query: MessageQuery) -> MessagePage:
        """See ``base.Backend``; the indexes walked are in ``redis/listing.py``."""
        return await listing.list_page(self._script, query)

    async def stats(self) -> Stats:
        """Messages by queue and state, unexpired outcomes, dead letters, live workers."""
        return replies.stats(await self._script("stats", ""))

    async def pause(
        self, queue: str, reason: str | None = None, until: float | None = None
    ) -> Pause:
        """Stop fetches from leasing ``queue``'s messages, until ``resume`` or ``until``
        (server clock); renewing a pause keeps its since. One field of the ``pauses`` hash,
        which each fetch reads with one HMGET for all its queues."""
        check_pause(queue, until)
        text = "-" if reason is None else f"+{reason}"
        at = "" if until is None else repr(float(until))
        stored, value = await self._script("pauses", "", "pause", queue, text, at)
        if not stored:
            raise until_passed(queue, float(until or 0.0), seconds(value))
        return replies.pause(queue, value)

    async def resume(self, queue: str) -> bool:
        """End ``queue``'s pause and wake the fetches blocked on it; whether it was paused."""
        check_pause(queue, None)
        return bool(await self._script("pauses", self._token(), "resume", queue))

    async def paused(self) -> dict[str, Pause]:
        """The live pauses, by queue."""
        now, *fields = await self._script("pauses", "", "list")
        return replies.pauses(now, fields)

    async def heartbeat(self, info: WorkerInfo, ttl: float) -> None:
        """Record ``info`` as a live worker for ``ttl`` seconds (``last_seen`` = server now)."""
        body = json_encode(msgspec.structs.replace(info, last_seen=0.0))
        await self._script("heartbeat", "", info.id, body, repr(float(ttl)))

    async def retire(self, worker: str) -> None:
        """Remove a worker's record."""
        await self._script("retire", "", worker)

    async def sweep(self) -> int:
        """Delete expired results, dead letters and worker records; return how many.

        Idempotency keys and results also expire on their own (``PX``); this removes what
        indexes them. Works in chunks of ``SWEEP_CHUNK`` per kind and call. Rate-limit buckets,
        concurrency limits, progress reports and the event log need nothing: they expire
        (or are trimmed) by themselves.
        """
        total = 0
        while True:
            removed, full = replies.swept(await self._script("sweep", "", SWEEP_CHUNK))
            total += removed
            if not full:
                return total

"""The Redis backend's coordination and observation operations: locks, the scheduler's
marks, rate buckets, concurrency places, progress reports and the event log.

A mixin of :class:`pigeon.backends.redis.backend.RedisBackend`, split off so that each file
reads in one sitting; its methods use only what ``_Host`` names of the backend. How each is
stored is told in the backend's module docstring.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Protocol

import msgspec

from pigeon.backends.redis import replies
from pigeon.backends.redis.arguments import (
    acquire_args,
    holder_args,
    json_encode,
    report_args,
    take_args,
)
from pigeon.backends.redis.client import MAX_BLOCK, Client
from pigeon.message import Event, Progress, Slot, Take

_progress_decoder = msgspec.json.Decoder(Progress)


class _Host(Protocol):
    """What the mixin uses of the backend."""

    url: str
    _base: str
    _events_key: bytes

    def _client(self) -> Client: ...

    def _token(self) -> str: ...

    async def _script(self, name: str, *args: Any) -> Any: ...


class Coordination:
    """Locks, schedule marks, rate buckets, concurrency places, progress and events."""

    # coordination ------------------------------------------------------------------------

    async def lock(self: _Host, name: str, owner: str, ttl: float) -> bool:
        """Take the named lock for ``owner`` (free, expired, or already the owner's) until
        now + ``ttl`` seconds on the server's clock; whether ``owner`` holds it after."""
        if ttl <= 0:
            raise ValueError(f"a lock's ttl must be > 0 seconds, not {ttl}")
        return bool(await self._script("lock", "", name, owner, repr(float(ttl))))

    async def unlock(self: _Host, name: str, owner: str) -> None:
        """Free the named lock at once if ``owner`` holds it; otherwise do nothing."""
        await self._script("unlock", "", name, owner)

    async def schedules(self: _Host, names: Collection[str]) -> dict[str, float]:
        """The stored marks (ticks sent up to) among the schedules ``names``: one ``HMGET``."""
        names = list(dict.fromkeys(names))
        if not names:
            return {}
        found = await self._client().execute(b"HMGET", f"{self._base}schedules", *names)
        return {n: float(mark) for n, mark in zip(names, found, strict=True) if mark is not None}

    async def mark_schedules(self: _Host, marks: Mapping[str, float]) -> None:
        """Raise each schedule's mark to the one given (never lower it): one script call."""
        if not marks:
            return
        pairs = itertools.chain.from_iterable((n, repr(float(m))) for n, m in marks.items())
        await self._script("mark_schedules", "", *pairs)

    async def take(self: _Host, takes: Sequence[Take]) -> list[float]:
        """Start slots from token buckets (GCRA), one take at a time in the order given: per
        take, the seconds from now (server clock) until its slot, reserved when that is at
        most ``hold``. One script call for the batch."""
        if not takes:
            return []
        return replies.waits(await self._script("take", self._token(), *take_args(takes)))

    async def acquire(self: _Host, slots: Sequence[Slot]) -> list[bool]:
        """Take (or renew) one place of limit ``slot.name`` for ``slot.holder`` for
        ``slot.ttl`` seconds, one slot at a time in the order given; per slot, whether the
        holder has a place after the call. One script call for the batch."""
        if not slots:
            return []
        return replies.acquired(await self._script("acquire", "", *acquire_args(slots)))

    async def release_slots(self: _Host, slots: Sequence[Slot]) -> None:
        """Give the holders' places back at once (an unknown one is left alone)."""
        if not slots:
            return
        await self._script("release_slots", "", *holder_args(slots))

    # progress and events -----------------------------------------------------------------

    async def report(self: _Host, progress: Sequence[Progress], ttl: float) -> None:
        """Store each report as the latest of its message id, kept ``ttl`` seconds."""
        if not progress:
            return
        await self._script("report", "", repr(float(ttl)), *report_args(progress))

    async def progress(self: _Host, ids: Collection[str]) -> dict[str, Progress]:
        """The stored, unexpired latest reports among ``ids``."""
        ids = list(ids)
        found: dict[str, Progress] = {}
        for i in range(0, len(ids), 10_000):
            chunk = ids[i : i + 10_000]
            keys = [f"{self._base}pg:{mid}" for mid in chunk]
            for mid, body in zip(chunk, await self._client().execute(b"MGET", *keys), strict=True):
                if body is not None:
                    found[mid] = _progress_decoder.decode(body)
        return found

    async def publish(self: _Host, events: Sequence[Event]) -> None:
        """Append ``events`` to the app's event log (a stream), in the order given."""
        if not events:
            return
        await self._script("publish", self._token(), *(json_encode(e) for e in events))

    async def read_events(
        self: _Host, after: str | None, limit: int = 1000, wait: float = 0.0
    ) -> tuple[str, list[Event]]:
        """Up to ``limit`` events published after the cursor ``after`` (a stream id; None:
        the end of the log now), oldest first, and the cursor to pass next.

        Waits up to ``wait`` seconds for one with ``XREAD BLOCK`` (at most ``MAX_BLOCK``
        seconds per call), which holds one connection meanwhile: other calls get another.
        """
        client = self._client()
        key = self._events_key
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        if after is None:
            last = await client.execute(b"XREVRANGE", key, b"+", b"-", b"COUNT", 1)
            cursor = last[0][0].decode() if last else "0-0"
            if wait <= 0 or limit <= 0:
                return cursor, []
            block = wait  # nothing can be newer yet: start waiting at once
        else:
            cursor = after
            if limit <= 0:
                return cursor, []
            block = 0.0
        while True:
            blocking: tuple[Any, ...] = ()
            if block > 0:  # BLOCK 0 would block for ever
                blocking = (b"BLOCK", max(1, math.ceil(min(block, MAX_BLOCK) * 1000)))
            reply = await client.execute(
                b"XREAD", b"COUNT", limit, *blocking, b"STREAMS", key, cursor
            )
            entries = replies.stream_entries(reply)
            if entries:
                return entries[-1][0].decode(), replies.events(entries, self.url)
            block = deadline - loop.time()
            if block <= 0:
                return cursor, []

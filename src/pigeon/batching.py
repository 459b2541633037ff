"""Turn many concurrent single requests into one batched call.

Used for sending (one ``enqueue`` per batch) and settling (one ``settle`` per batch): while
one call is in flight, new items accumulate; when it returns they all go in the next call.
Under load the batch grows by itself, and a lone item still goes out at once. A bulk
request (``submit_many``) joins the same stream with one future for all of its items.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
U = TypeVar("U")

log = logging.getLogger("pigeon")


class _Share(Generic[U]):
    """The answers to the items of one ``submit_many``, gathered across batches."""

    __slots__ = ("answers", "future", "size")

    def __init__(self, future: asyncio.Future[list[U]], size: int) -> None:
        self.future = future
        self.size = size
        self.answers: list[U] = []


class Batcher(Generic[T, U]):
    """Collects items and hands them to ``call`` in batches of at most ``limit``.

    ``call`` receives the items in submission order and returns one answer per item; each
    submitter's future gets its own answer (or the exception the call raised).
    """

    def __init__(self, call: Callable[[list[T]], Awaitable[Sequence[U]]], limit: int = 500):
        self._call = call
        self._limit = limit
        self._items: list[T] = []
        # per item: its own future, or the share of the submit_many it came with
        self._futures: list[asyncio.Future[U] | _Share[U]] = []
        self._runner: asyncio.Task[None] | None = None
        # drain() callers: each waits for everything submitted before it asked (a future of
        # its own, so that a cancelled drain cancels nothing else) and is woken by the batch
        # that took the last of those items, one loop iteration after its call returns.
        self._drains: list[tuple[int, asyncio.Future[None]]] = []
        self._submitted = 0  # items submitted so far
        self._handled = 0  # items whose batch has returned (or raised)

    def submit(self, item: T) -> asyncio.Future[U]:
        """Queue one item; the future resolves when its batch has been handled."""
        future: asyncio.Future[U] = asyncio.get_running_loop().create_future()
        self._items.append(item)
        self._futures.append(future)
        self._submitted += 1
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(self._run())
        return future

    def submit_many(self, items: Sequence[T]) -> asyncio.Future[list[U]]:
        """Queue many items, in order; the future resolves to their answers, in order, when
        the last of their batches has been handled, or to the first exception one raised."""
        future: asyncio.Future[list[U]] = asyncio.get_running_loop().create_future()
        if not items:
            future.set_result([])
            return future
        self._items.extend(items)
        self._futures.extend([_Share(future, len(items))] * len(items))
        self._submitted += len(items)
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(self._run())
        return future

    @property
    def idle(self) -> bool:
        return self._runner is None

    async def drain(self) -> None:
        """Return once everything submitted so far has been handled."""
        if self._handled >= self._submitted:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._drains.append((self._submitted, waiter))
        await waiter

    def _wake_drains(self) -> None:
        if not self._drains:
            return
        waiting = []
        for upto, waiter in self._drains:
            if upto > self._handled:
                waiting.append((upto, waiter))
            elif not waiter.done():
                waiter.set_result(None)
        self._drains = waiting

    async def _run(self) -> None:
        # No yield before the first batch: this task starts in the loop iteration after the
        # first submit, so the items submitted during that one are all here already; those
        # that come while a batch is in flight make the next one.
        try:
            while self._items:
                items, futures = self._items[: self._limit], self._futures[: self._limit]
                del self._items[: self._limit], self._futures[: self._limit]
                try:
                    answers = await self._call(items)
                except BaseException as exc:
                    self._handled += len(items)
                    for f in futures:
                        target = f.future if isinstance(f, _Share) else f
                        if not target.done():
                            target.set_exception(exc)
                    self._wake_drains()
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                self._handled += len(items)
                for f, answer in zip(futures, answers, strict=True):
                    if isinstance(f, _Share):
                        f.answers.append(answer)
                        if len(f.answers) == f.size and not f.future.done():
                            f.future.set_result(f.answers)
                    elif not f.done():
                        f.set_result(answer)
                self._wake_drains()
        finally:
            self._runner = None
            if self._items:
                # Cancelled with items left: they wait for the next submit's runner, and
                # drain() is cancelled, as awaiting this task would have been.
                for _, waiter in self._drains:
                    waiter.cancel()
                self._drains.clear()
            else:
                self._wake_drains()

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

    def submit(self, item: T) -> asyncio.Future[U]:
        """Queue one item; the future resolves when its batch has been handled."""
        future: asyncio.Future[U] = asyncio.get_running_loop().create_future()
        self._items.append(item)
        self._futures.append(future)
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
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(self._run())
        return future

    @property
    def idle(self) -> bool:
        return self._runner is None

    async def drain(self) -> None:
        """Return once everything submitted so far has been handled."""
        while self._runner is not None:
            await asyncio.shield(self._runner)

    async def _run(self) -> None:
        try:
            while self._items:
                # Yield once so that items submitted in the same loop iteration join the batch.
                await asyncio.sleep(0)
                items, futures = self._items[: self._limit], self._futures[: self._limit]
                del self._items[: self._limit], self._futures[: self._limit]
                try:
                    answers = await self._call(items)
                except BaseException as exc:
                    for f in futures:
                        target = f.future if isinstance(f, _Share) else f
                        if not target.done():
                            target.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                for f, answer in zip(futures, answers, strict=True):
                    if isinstance(f, _Share):
                        f.answers.append(answer)
                        if len(f.answers) == f.size and not f.future.done():
                            f.future.set_result(f.answers)
                    elif not f.done():
                        f.set_result(answer)
        finally:
            self._runner = None

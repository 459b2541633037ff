"""``pigeon.aio.shielded`` and the event-loop iterations it, the ResultWatcher and the
worker's fetch loop spend: each iteration on a message's path costs microseconds, so these
count them (deterministic, unlike timings)."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import pytest

import pigeon
from pigeon.aio import cancelling, shielded
from pigeon.message import Result
from pigeon.promise import ResultWatcher
from pigeon.worker import Worker

from .support import eventually


class Ticker:
    """Counts event-loop iterations: one tick per iteration while it runs."""

    def __init__(self) -> None:
        self.ticks = 0
        self._loop = asyncio.get_running_loop()
        self._handle: asyncio.Handle | None = None

    def start(self) -> None:
        self.ticks = 0
        self._handle = self._loop.call_soon(self._tick)

    def _tick(self) -> None:
        self.ticks += 1
        self._handle = self._loop.call_soon(self._tick)

    def stop(self) -> int:
        if self._handle is not None:
            self._handle.cancel()
        return self.ticks


async def iterations_until_resumed(
    wrap: Callable[[Awaitable[int]], Awaitable[int]],
) -> int:
    """Iterations from the moment an inner coroutine may finish to the moment its caller,
    awaiting it through ``wrap``, runs again."""
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def inner() -> int:
        await gate
        return 5

    ticker = Ticker()

    async def caller() -> int:
        value = await wrap(inner())
        return ticker.stop() if value == 5 else -1

    running = asyncio.ensure_future(caller())
    await asyncio.sleep(0.01)  # the caller is waiting
    ticker.start()
    gate.set_result(None)
    return await running


async def test_shielded_returns_the_result_and_raises_the_failure() -> None:
    async def good() -> int:
        await asyncio.sleep(0)
        return 7

    async def bad() -> int:
        await asyncio.sleep(0)
        raise ValueError("boom")

    assert await shielded(good()) == 7
    with pytest.raises(ValueError, match="boom"):
        await shielded(bad())


async def test_shielded_wakes_the_caller_one_iteration_sooner_than_asyncio_shield() -> None:
    ours = await iterations_until_resumed(shielded)
    theirs = await iterations_until_resumed(lambda c: asyncio.shield(asyncio.ensure_future(c)))
    assert ours == theirs - 1, (ours, theirs)


async def test_a_cancelled_caller_leaves_the_work_running_and_hands_it_to_orphaned() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    gate: asyncio.Future[None] = loop.create_future()
    finished: list[str] = []
    orphans: list[asyncio.Task[str]] = []

    async def work(fail: bool) -> str:
        await gate
        finished.append("failed" if fail else "done")
        if fail:
            raise RuntimeError("after the caller left")
        return "done"

    try:
        callers = [
            asyncio.ensure_future(shielded(work(fail), orphans.append)) for fail in (False, True)
        ]
        await asyncio.sleep(0.01)
        for caller in callers:
            caller.cancel()
        for caller in callers:
            with pytest.raises(asyncio.CancelledError):
                await caller
        assert len(orphans) == 2
        assert not any(t.done() for t in orphans)
        gate.set_result(None)
        await asyncio.wait(orphans)
        assert sorted(finished) == ["done", "failed"]
        assert orphans[0].result() == "done"
        del orphans[:], callers
        gc.collect()
        await asyncio.sleep(0)
        assert reported == []  # the failure nobody awaited is not reported as unretrieved
    finally:
        loop.set_exception_handler(None)


class GatedBackend:
    """A stand-in for the backend of a ResultWatcher (not a Backend test): ``wait`` returns
    the outcomes the test released, and records the ids of every call."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.released: dict[str, Result] = {}
        self.changed = asyncio.Event()

    def release(self, mid: str) -> None:
        self.released[mid] = Result(mid, "succeeded")
        self.changed.set()

    async def wait(self, ids: Collection[str], timeout: float) -> dict[str, Result]:
        ids = list(ids)
        self.calls.append(ids)
        while True:
            found = {mid: self.released[mid] for mid in ids if mid in self.released}
            if found:
                return found
            self.changed.clear()
            await self.changed.wait()


async def test_the_watcher_resolves_an_awaiter_one_iteration_after_its_wait_returns() -> None:
    backend = GatedBackend()

    async def get_backend() -> Any:
        return backend

    watcher = ResultWatcher(get_backend)
    ticker = Ticker()
    try:

        async def awaiter() -> int:
            await watcher.get("a")
            return ticker.stop()

        running = asyncio.ensure_future(awaiter())
        await eventually(lambda: backend.calls == [["a"]], every=0)
        await asyncio.sleep(0)  # the wait has reached its event
        ticker.start()
        backend.release("a")
        # the wait wakes (1), returns and resolves the awaiter, which runs next (2)
        assert await running == 2
    finally:
        await watcher.close()


async def test_the_watcher_starts_over_with_an_id_that_comes_while_it_waits() -> None:
    backend = GatedBackend()

    async def get_backend() -> Any:
        return backend

    watcher = ResultWatcher(get_backend)
    try:
        first = asyncio.ensure_future(watcher.get("a"))
        await eventually(lambda: len(backend.calls) == 1, every=0)
        second = asyncio.ensure_future(watcher.get("b"))
        await eventually(lambda: len(backend.calls) == 2, every=0)
        assert backend.calls == [["a"], ["a", "b"]]
        backend.release("b")
        assert (await asyncio.wait_for(second, 5)).id == "b"
        assert not first.done()
        backend.release("a")
        assert (await asyncio.wait_for(first, 5)).id == "a"
        assert backend.calls[-1] == ["a"]  # the next wait was for what was left
    finally:
        await watcher.close()


async def test_a_stopped_worker_does_not_sit_out_its_fetch_wait() -> None:
    app = pigeon.App("memory://")
    try:
        worker = Worker(app, concurrency=2, heartbeat=60)
        running = asyncio.create_task(worker.run())
        await eventually(
            lambda: worker.fetches >= 1, every=0
        )  # idle: in a fetch that waits up to 1 s
        await asyncio.sleep(0.05)  # and blocked in it
        started = time.monotonic()
        worker.stop()
        assert await asyncio.wait_for(running, 5) == 0
        assert time.monotonic() - started < 0.5  # the stop cancelled the fetch
    finally:
        await app.close()


async def test_a_short_task_is_settled_before_the_next_fetch_goes_out() -> None:
    # The next fetch (a write, and on Redis a blocking one) would delay the settle, which is
    # what the sender waits for: the task gets its first step before the fetch is sent.
    app = pigeon.App("memory://")

    @app.task(name="quick")
    async def quick(x: int) -> int:
        return x

    calls: list[str] = []
    backend = await app.open()
    fetch, settle = backend.fetch, backend.settle

    async def recording_fetch(*args: Any, **kwargs: Any) -> Any:
        calls.append("fetch")
        found = await fetch(*args, **kwargs)
        if found:
            calls.append("fetched")
        return found

    async def recording_settle(outcomes: Any) -> Any:
        calls.append("settle")
        return await settle(outcomes)

    backend.fetch = recording_fetch  # type: ignore[method-assign]
    backend.settle = recording_settle  # type: ignore[method-assign]
    try:
        worker = Worker(app, concurrency=4, heartbeat=60)
        running = asyncio.create_task(worker.run())
        await eventually(lambda: "fetch" in calls, every=0)
        assert await asyncio.wait_for(quick.send(3), 5) == 3
        worker.stop()
        assert await asyncio.wait_for(running, 5) == 0
        after = calls[calls.index("fetched") + 1 :]
        assert after[:2] == ["settle", "fetch"], calls
    finally:
        await app.close()


async def test_cancelling_tells_our_own_cancellation_from_that_of_what_we_awaited() -> None:
    seen: list[bool] = []

    async def waits_on(inner: asyncio.Future[None]) -> None:
        try:
            await inner
        except asyncio.CancelledError:
            seen.append(cancelling())
            if cancelling():
                raise

    inner: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    outer = asyncio.ensure_future(waits_on(inner))
    await asyncio.sleep(0)
    inner.cancel()  # what it awaited was cancelled: it carries on
    await outer
    inner = asyncio.get_running_loop().create_future()
    outer = asyncio.ensure_future(waits_on(inner))
    await asyncio.sleep(0)
    outer.cancel()  # it was cancelled itself
    with pytest.raises(asyncio.CancelledError):
        await outer
    assert seen == [False, True]

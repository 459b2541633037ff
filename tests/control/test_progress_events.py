"""Progress reported by running tasks reaches the sender; events tell what happened."""

from __future__ import annotations

import asyncio
import threading

import pytest

import pigeon
from pigeon.message import Event, Progress

from .conftest import StartWorker


async def listening(app: pigeon.App) -> tuple[list[Event], asyncio.Task[None]]:
    """The events published from now on, appended as they come by the task returned."""
    events: list[Event] = []

    async def listen() -> None:
        async for event in app.events(wait=0.5):
            events.append(event)

    listener = asyncio.create_task(listen())
    await asyncio.sleep(0.3)  # the listener starts at the end of the log
    return events, listener


async def test_an_async_task_reports_progress_to_the_promise(
    app: pigeon.App, start_worker: StartWorker
) -> None:
    step = asyncio.Event()
    seen: list[Progress] = []

    @app.task
    async def resize(n: int) -> str:
        for i in range(1, n + 1):
            await step.wait()
            step.clear()
            pigeon.current().progress(i / n, f"resized {i}/{n}")
        return "done"

    await start_worker()
    promise = resize.send(3)
    promise.on_progress(seen.append)
    assert promise.progress is None  # nothing reported yet
    for i in range(1, 4):
        step.set()
        async with asyncio.timeout(5):
            while not seen or seen[-1].text != f"resized {i}/3":
                await asyncio.sleep(0.01)
    assert await asyncio.wait_for(promise, 5) == "done"
    assert [(p.fraction, p.text) for p in seen] == [
        (1 / 3, "resized 1/3"),
        (2 / 3, "resized 2/3"),
        (1.0, "resized 3/3"),
    ]
    assert promise.progress == seen[-1]
    assert seen[-1].id == promise.id


async def test_a_sync_task_reports_progress_from_its_thread(
    app: pigeon.App, start_worker: StartWorker
) -> None:
    release = threading.Event()

    @app.task
    def crunch() -> int:
        pigeon.current().progress(0.5, "half way")
        release.wait(10)
        return 1

    await start_worker()
    promise = crunch.send()
    async with asyncio.timeout(5):
        while promise.progress is None:
            await asyncio.sleep(0.01)
    assert (promise.progress.fraction, promise.progress.text) == (0.5, "half way")
    release.set()
    assert await asyncio.wait_for(promise, 5) == 1


def test_bad_progress_is_refused_with_a_clear_error() -> None:
    current = pigeon.context.Current("id", "t", "q", 1, 0)
    with pytest.raises(ValueError, match=r"between 0.0 and 1.0, not 1.5"):
        current.progress(1.5)
    with pytest.raises(TypeError, match="must be a number"):
        current.progress("half")  # type: ignore[arg-type]
    current.progress(None, "text only is fine")


async def test_events_tell_the_life_of_each_message(
    app: pigeon.App, start_worker: StartWorker
) -> None:
    @app.task(retries=1, retry_backoff=0.01)
    async def flaky(fail: bool) -> None:
        if fail and pigeon.current().failures == 0:
            raise RuntimeError("first try fails")

    @app.task
    async def broken() -> None:
        raise ValueError("always")

    events, listener = await listening(app)
    await start_worker()
    ok, retried, bad = flaky.send(False), flaky.send(True), broken.send()
    await asyncio.wait_for(asyncio.gather(ok, retried), 10)
    with pytest.raises(pigeon.TaskError):
        await asyncio.wait_for(bad, 10)

    def kinds(mid: str) -> list[str]:
        # In publish order a worker's "started" may come before its sender's "sent" (two
        # publishers); by the time each happened (``at``, one host's clock) it is causal.
        return [e.kind for e in sorted(events, key=lambda e: e.at) if e.id == mid]

    async with asyncio.timeout(5):
        while len(kinds(bad.id)) < 3 or len(kinds(retried.id)) < 5 or len(kinds(ok.id)) < 3:
            await asyncio.sleep(0.02)
    listener.cancel()
    assert kinds(ok.id) == ["sent", "started", "succeeded"]
    assert kinds(retried.id) == ["sent", "started", "retried", "started", "succeeded"]
    assert kinds(bad.id) == ["sent", "started", "dead"]
    [died] = [e for e in events if e.id == bad.id and e.kind == "dead"]
    assert died.error == "ValueError: always"
    assert died.task == broken.name
    assert died.worker
    assert died.attempt == 1


async def test_sent_is_stamped_before_a_worker_can_start_the_message(
    app: pigeon.App, start_worker: StartWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The sender's reply from enqueue can come after a worker fetched and started the
    # message: "sent" is the time the send was made, so it still comes first.
    @app.task
    async def quick() -> str:
        return "done"

    backend = await app.open()
    enqueue = backend.enqueue

    async def slow_reply(messages: list[pigeon.Message]) -> list[str]:
        ids = await enqueue(messages)
        await asyncio.sleep(0.5)  # stored: a worker may start it meanwhile
        return ids

    monkeypatch.setattr(backend, "enqueue", slow_reply)
    events, listener = await listening(app)
    await start_worker()
    promise = quick.send()
    assert await asyncio.wait_for(promise, 10) == "done"
    async with asyncio.timeout(5):
        while {e.kind for e in events if e.id == promise.id} != {"sent", "started", "succeeded"}:
            await asyncio.sleep(0.02)
    listener.cancel()
    at = {e.kind: e.at for e in events if e.id == promise.id}
    assert at["sent"] < at["started"] < at["succeeded"]


async def test_progress_of_a_message_whose_outcome_is_not_kept_is_followed_until_it_is_gone(
    app: pigeon.App, start_worker: StartWorker
) -> None:
    release = asyncio.Event()
    seen: list[Progress] = []

    @app.task
    async def step() -> None:
        pigeon.current().progress(0.5, "half way")
        await release.wait()

    await start_worker()
    promise = step.options(result_ttl=0).send()
    promise.on_progress(seen.append)
    async with asyncio.timeout(5):
        while not seen:
            await asyncio.sleep(0.01)
    watcher = app.progress_watcher
    assert watcher._runner is not None  # following while the message runs
    release.set()
    async with asyncio.timeout(5):  # no outcome will come: it stops once the message is gone
        while watcher._runner is not None:
            await asyncio.sleep(0.05)
    assert [p.text for p in seen] == ["half way"]

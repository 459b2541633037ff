"""``pigeon.testing``: your tasks in your tests, run as a worker runs them, in-process.

A pytest plugin (registered through the ``pytest11`` entry point, so installing pigeon is
enough). The ``pigeon_worker`` fixture points an App at a fresh backend (``memory://`` by
default) and runs a real ``pigeon.worker.Worker`` on the test's own event loop: the same
fetch -> run -> settle loop, executor and scheduler as production, with the same encoding
of arguments against type hints, signatures, payload limits, retries, dead letters,
cancellation, limits and follow-ups. Nothing runs inline and nothing is simplified::

    async def test_resize(pigeon_worker):
        p = resize.send("a.png", 200)
        ran = await pigeon_worker.drain()         # runs everything due, follow-ups too
        assert [r.state for r in ran] == ["succeeded"]
        assert await p == "a-200.png"
        pigeon_worker.assert_sent(resize, "a.png", 200)   # as the worker decodes them

Time is a ``ManualClock`` (``pigeon.clock``; the ``pigeon_clock`` fixture) that the memory
backend and the scheduler read: ``await pigeon_worker.advance(60)`` moves it forward,
stopping at every moment something falls due on the way (a retry's backoff, a delay, an
expiry, a periodic tick, a message a limit deferred) and running what does, so a test of
a retry after a minute takes milliseconds. Time moves only when the test moves it; the
worker's own short waits (a rate limit's reserved start slot, at most a second) and
``asyncio.sleep`` in a task stay real.

Which App: ``pigeon_app`` (override it in your conftest to return your own App; the default
is an empty ``App("memory://")``). Which backend: the ``pigeon_url`` fixture, from
``@pytest.mark.pigeon(url=...)``, else the ``pigeon_url`` ini option, else ``memory://``
(only ``memory://`` has a clock the test moves). The marker also takes ``queues``,
``concurrency`` and ``scheduler``. A sync test calls ``pigeon_worker.run_until_idle()``
and ``pigeon_worker.advance_sync(60)``: the worker then runs on the App's own loop thread.
The worker is stopped (as on SIGTERM: running tasks finish) when the test ends, before the
fixtures' teardown, and the App gets its own backend back.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest

from pigeon import codec
from pigeon.app import App
from pigeon.backends import Backend, from_url
from pigeon.backends.memory import MemoryBackend
from pigeon.clock import SYSTEM, ManualClock
from pigeon.context import Cancellation
from pigeon.errors import ConfigError, PigeonError
from pigeon.message import Delivery, Failure, Message, Outcome
from pigeon.scheduler import RENEW
from pigeon.task import BoundTask, Task
from pigeon.worker import Worker
from pigeon.worker.observer import Process, Settle, WorkerView

__all__ = ["InProcessWorker", "ManualClock", "NotIdle", "Ran", "Sent"]

#: Seconds ``drain`` waits for the worker to run out of due work before it fails the test.
DRAIN_TIMEOUT = 10.0


class NotIdle(PigeonError, AssertionError):
    """``drain`` or ``advance`` timed out with work still due or running."""


@dataclass(frozen=True)
class Sent:
    """A message that was stored, with its arguments as the worker decodes them:
    ``arguments`` by parameter name (those passed), ``args`` and ``kwargs`` as the function
    is called with them. A follow-up's come from its parent's outcome when it runs: empty
    here."""

    id: str
    task: str
    arguments: dict[str, Any]
    args: list[Any]
    kwargs: dict[str, Any]
    message: Message


@dataclass(frozen=True)
class Ran:
    """One delivery the worker processed: its outcome (``succeeded``, ``failed``,
    ``retry``, ``dead``, ``cancelled``), the decoded value of a success, or the error."""

    id: str
    task: str
    attempt: int
    state: str
    value: Any
    error: Failure | None
    message: Message | None


class _Recorder:
    """The worker's observer: records every outcome, in the order the runs end."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.ran: list[Ran] = []

    def begin(self, worker: WorkerView) -> None:
        return None

    def end(self, worker: WorkerView) -> None:
        return None

    def started(self, d: Delivery, m: Message) -> None:
        return None

    def settling(self, settle: Settle) -> Settle:
        return settle

    def observe(self, process: Process) -> Process:
        async def recorded(d: Delivery, cancellation: Cancellation | None) -> Outcome:
            outcome = await process(d, cancellation)
            self.ran.append(self._record(d, outcome))
            return outcome

        return recorded

    def _record(self, d: Delivery, outcome: Outcome) -> Ran:
        try:
            m: Message | None = codec.decode_message(d.body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            m = None
        name = m.task if m is not None else "?"
        value = None
        if outcome.state == "succeeded" and outcome.value is not None:
            raw = bytes(outcome.value)
            task = self.app.tasks.get(name)
            try:
                value = task.codec.decode_result(raw) if task else msgspec.json.decode(raw)
            except (PigeonError, msgspec.DecodeError):
                value = msgspec.Raw(raw)
        return Ran(d.id, name, d.attempt, outcome.state, value, outcome.error, m)


class InProcessWorker:
    """A real worker for ``app`` on a fresh backend at ``url``, on the test's event loop.

    The App's backend is replaced for the test (and put back by ``close``); the worker
    starts on the first ``drain``/``advance`` (or ``start``), on the loop that calls it.
    ``queues`` default to the queues of the App's tasks (the App's own first).
    """

    def __init__(
        self,
        app: App,
        url: str = "memory://",
        *,
        queues: Sequence[str] | None = None,
        concurrency: int = 8,
        scheduler: bool = True,
        clock: ManualClock | None = None,
    ) -> None:
        self.app = app
        self.url = url
        self.concurrency = concurrency
        self.scheduler = scheduler
        self.queues = list(queues) if queues else None
        memory = url.split("://", 1)[0].lower() == "memory"
        self.clock = (clock or ManualClock()) if memory else None
        if clock is not None and not memory:
            raise ConfigError(f"a ManualClock works on memory:// only, not {url!r}")
        self.backend: Backend = (
            MemoryBackend(url, clock=self.clock) if self.clock is not None else from_url(url)
        )
        self._saved = (app.url, app.backend)
        app.url, app.backend = url, self.backend
        self._sent: list[Message] = []
        self._record_sends(self.backend)
        self._recorder = _Recorder(app)
        self.worker: Worker | None = None
        self._run: asyncio.Task[int] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<InProcessWorker {self.url} for {self.app!r}>"

    def _record_sends(self, backend: Backend) -> None:
        enqueue = backend.enqueue

        async def recording(messages: Sequence[Message]) -> list[str]:
            ids = await enqueue(messages)
            self._sent.extend(m for m, mid in zip(messages, ids, strict=True) if mid == m.id)
            return ids

        backend.enqueue = recording  # type: ignore[method-assign]

    # what was sent, what ran ---------------------------------------------------------------

    @property
    def ran(self) -> list[Ran]:
        """Every delivery processed so far, in the order the runs ended."""
        return list(self._recorder.ran)

    def sent(self, task: Task[Any, Any] | BoundTask[Any, Any] | str | None = None) -> list[Sent]:
        """The messages stored so far (of ``task``, when given), in the order they were,
        with their arguments decoded against the task's type hints as the worker does."""
        name = task if isinstance(task, str) or task is None else task.name
        found: list[Sent] = []
        for m in self._sent:
            if name is not None and m.task != name:
                continue
            args: list[Any] = []
            kwargs: dict[str, Any] = {}
            arguments: dict[str, Any] = {}
            known = self.app.tasks.get(m.task)
            if known is not None and m.after is None:
                args, kwargs = known.codec.decode_args(bytes(m.args), bytes(m.kwargs))
                bound = inspect.signature(known.fn).bind_partial(*args, **kwargs)
                arguments = dict(bound.arguments)
            found.append(Sent(m.id, m.task, arguments, args, kwargs, m))
        return found

    def assert_sent(
        self, task: Task[Any, Any] | BoundTask[Any, Any], /, *args: Any, **kwargs: Any
    ) -> Sent:
        """The message of ``task`` sent with these arguments (compared by parameter name,
        as the worker decodes them); raises AssertionError listing what was sent instead."""
        fn = task.task.fn if isinstance(task, BoundTask) else task.fn
        expected = dict(inspect.signature(fn).bind_partial(*args, **kwargs).arguments)
        sent = self.sent(task)
        for s in sent:
            if s.arguments == expected:
                return s
        got = "\n".join(f"  {s.arguments!r}" for s in sent) or "  nothing"
        raise AssertionError(
            f"{task.name} was not sent with {expected!r}; it was sent with:\n{got}"
        )

    # running -------------------------------------------------------------------------------

    async def start(self) -> Worker:
        """Start the worker on the running loop (``drain`` and ``advance`` do it at need)."""
        return await self.app.call(self._start())

    async def _start(self) -> Worker:
        if self._run is not None and self.worker is not None:
            self._check_alive()
            return self.worker
        await self.app.open()
        self._loop = asyncio.get_running_loop()
        queues = self.queues or _queues_of(self.app)
        self.worker = Worker(
            self.app,
            queues,
            self.concurrency,
            grace=5.0,
            scheduler=self.scheduler,
            observer=self._recorder,
            clock=self.clock or SYSTEM,
        )
        self._run = self._loop.create_task(self.worker.run())
        await asyncio.sleep(0)
        return self.worker

    def _check_alive(self) -> None:
        if self._run is not None and self._run.done():
            code = self._run.result()  # raises what ended it
            raise PigeonError(f"the in-process worker stopped (exit code {code})")

    async def drain(self, timeout: float = DRAIN_TIMEOUT) -> list[Ran]:
        """Run everything due now, follow-ups and joins included, until nothing due is left
        and nothing runs; returns what ran meanwhile. Raises NotIdle after ``timeout``."""
        return await self.app.call(self._drain(timeout))

    async def _drain(self, timeout: float) -> list[Ran]:
        await self._start()
        first = len(self._recorder.ran)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        polls = 0
        while not await self._idle():
            self._check_alive()
            if loop.time() > deadline:
                stats = await self.backend.stats()
                raise NotIdle(
                    f"still not idle after {timeout}s: {self.worker and self.worker.running}"
                    f" running; queues {stats.queues}"
                )
            polls += 1
            # The first looks cost one loop iteration each; then poll gently (threads run
            # sync tasks, and a 2-core machine has other work to do).
            await asyncio.sleep(0 if polls < 50 else 0.002)
        return self._recorder.ran[first:]

    async def _idle(self) -> bool:
        await self.app.flush()
        worker = self.worker
        assert worker is not None
        if worker.running or (self.clock is not None and self.clock.woken):
            return False
        stats = await self.backend.stats()
        for queue in worker.queues:
            counts = stats.queues.get(queue)
            if counts is None or queue in stats.paused:  # a paused queue's wait is no work
                continue
            if counts.pending or counts.leased:
                return False
        return await self._ticks_sent()

    async def _ticks_sent(self) -> bool:
        """Whether the scheduler has sent every tick due by now (on the manual clock)."""
        schedules = list(self.app.schedules.values())
        if self.clock is None or not self.scheduler or not schedules:
            return True
        marks = await self.backend.schedules([s.name for s in schedules])
        now = self.clock.time()
        for s in schedules:
            mark = marks.get(s.name)
            if mark is None:
                return False
            # The scheduler looks back catch_up + RENEW at most: older ticks are skipped.
            since = max(mark, now - s.timing.catch_up - RENEW)
            if s.timing.next_after(since) <= now:
                return False
        return True

    async def advance(self, seconds: float, timeout: float = DRAIN_TIMEOUT) -> list[Ran]:
        """Let ``seconds`` pass on the clock: it stops at every moment something falls due
        on the way (a delayed message, a retry, a lease, a periodic tick), and everything
        due then runs (``drain``). Returns what ran. Needs ``memory://``."""
        return await self.app.call(self._advance(seconds, timeout))

    async def _advance(self, seconds: float, timeout: float) -> list[Ran]:
        clock = self.clock
        if clock is None or not isinstance(self.backend, MemoryBackend):
            raise ConfigError(f"advance() needs the memory:// backend's clock, not {self.url!r}")
        if seconds < 0:
            raise ValueError(f"time moves forward: advance({seconds})")
        target = clock.time() + seconds
        ran = await self._drain(timeout)
        while clock.time() < target:
            moment = min(self._next_moment(self.backend, clock.time()), target)
            clock.set(moment)
            ran += await self._drain(timeout)
        return ran

    def _next_moment(self, backend: MemoryBackend, now: float) -> float:
        """The next time after ``now`` at which something falls due (inf: nothing does)."""
        moments = [backend.next_due() or 0.0]
        if self.scheduler:
            moments += [s.timing.next_after(now) for s in self.app.schedules.values()]
        return min((t for t in moments if t > now), default=float("inf"))

    # sync tests ------------------------------------------------------------------------------

    def run_until_idle(self, timeout: float = DRAIN_TIMEOUT) -> list[Ran]:
        """``drain`` for a sync test: runs the worker on the App's own loop thread."""
        return self.app.call_sync(self._drain(timeout))

    def advance_sync(self, seconds: float, timeout: float = DRAIN_TIMEOUT) -> list[Ran]:
        """``advance`` for a sync test."""
        return self.app.call_sync(self._advance(seconds, timeout))

    # the end -----------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop the worker (it must exit 0) and close the App, on the worker's loop."""
        try:
            if self.worker is not None and self._run is not None:
                self.worker.stop()
                async with asyncio.timeout(30):
                    code = await self._run
                if code != 0:
                    raise PigeonError(f"the in-process worker exited with code {code}")
        finally:
            await self.app.close()

    def close(self) -> None:
        """Stop the worker, close the App, and give the App its own backend back (once)."""
        if self._closed:
            return
        self._closed = True
        try:
            # The loop the worker ran on, else the App's (if anything used it).
            loop = self._loop or self.app._home.loop
            if loop is None or loop.is_closed():
                pass  # the test's loop is gone, and with it the worker's task
            elif loop.is_running():  # the App's own loop thread (a sync test)
                asyncio.run_coroutine_threadsafe(self.aclose(), loop).result(60)
                self.app.close_sync()
            else:  # the test's loop, between tests
                loop.run_until_complete(self.aclose())
        finally:
            self.app.url, self.app.backend = self._saved


def _queues_of(app: App) -> list[str]:
    queues = [app.queue]
    for task in app.tasks.values():
        if task.defaults.queue not in queues:
            queues.append(task.defaults.queue)
    return queues


# the pytest plugin ---------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "pigeon_url",
        "backend URL of pigeon.testing's in-process worker (default memory://)",
        default="memory://",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "pigeon(url=None, queues=None, concurrency=8, scheduler=True): how the pigeon_worker"
        " fixture (pigeon.testing) runs",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    # Before the fixtures' finalizers: an async test's event loop (pytest-asyncio's) is
    # still open, so the worker stops as on SIGTERM (running tasks finish) instead of being
    # cancelled when the loop closes.
    harness = getattr(item, "funcargs", {}).get("pigeon_worker")
    if isinstance(harness, InProcessWorker):
        harness.close()


def _marker(request: pytest.FixtureRequest) -> dict[str, Any]:
    marker = request.node.get_closest_marker("pigeon")
    return dict(marker.kwargs) if marker is not None else {}


@pytest.fixture
def pigeon_app() -> App:
    """The App whose tasks ``pigeon_worker`` runs: override it to return your own."""
    return App("memory://")


@pytest.fixture
def pigeon_url(request: pytest.FixtureRequest) -> str:
    """The backend URL: ``@pytest.mark.pigeon(url=...)``, the ``pigeon_url`` ini option,
    else ``memory://``."""
    url = _marker(request).get("url") or request.config.getini("pigeon_url")
    return str(url or "memory://")


@pytest.fixture
def pigeon_worker(
    request: pytest.FixtureRequest, pigeon_app: App, pigeon_url: str
) -> Iterator[InProcessWorker]:
    """A real worker for ``pigeon_app`` on a fresh ``pigeon_url`` backend (see the module)."""
    options = _marker(request)
    options.pop("url", None)
    harness = InProcessWorker(pigeon_app, pigeon_url, **options)
    try:
        yield harness
    finally:
        harness.close()


@pytest.fixture
def pigeon_clock(pigeon_worker: InProcessWorker) -> ManualClock:
    """The clock of ``pigeon_worker``'s memory backend and scheduler."""
    if pigeon_worker.clock is None:
        raise ConfigError(f"pigeon_clock needs memory://, not {pigeon_worker.url!r}")
    return pigeon_worker.clock

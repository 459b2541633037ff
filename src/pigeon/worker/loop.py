"""The worker loop: fetch -> run -> settle, with leases kept alive and a clean shutdown.

One ``Worker`` runs on one asyncio event loop in one process. Five coroutines, all owned
by one TaskGroup, do the work: the fetcher (leases only as many messages as there are free
slots plus a small buffer, from the queues in the order ``queues.fetch_order`` gives; a
buffered message starts the moment a slot frees), the runs themselves (one
asyncio task per message), the lease keeper (extends the leases of running messages and
asks which of them were cancelled, one batched call each), the heartbeat (the worker's
record in the backend) and, when the App has periodic tasks, the scheduler (which sends
their ticks while this worker holds the leader lock). Outcomes go to the backend in batches
through one ``Batcher``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pigeon.aio import cancelling
from pigeon.batching import Batcher
from pigeon.clock import SYSTEM, Clock
from pigeon.context import Cancellation
from pigeon.events import Publisher, outcome_event
from pigeon.message import Delivery, Event, Failure, Lease, Message, Outcome, WorkerInfo, new_id
from pigeon.scheduler import Scheduler
from pigeon.worker.executor import Executor
from pigeon.worker.limits import Deferred, Gate
from pigeon.worker.observer import Observer, Process, combine
from pigeon.worker.queues import fetch_order
from pigeon.worker.reporting import Reporter
from pigeon.worker.tracing import WorkerTracing

if TYPE_CHECKING:
    from pigeon.app import App
    from pigeon.backends.base import Backend

log = logging.getLogger("pigeon.worker")

#: Exit codes of ``Worker.run``.
EXIT_OK = 0
EXIT_UNHEALTHY = 3
#: Seconds of failing fetches after which a worker gives up (exits EXIT_UNHEALTHY).
UNHEALTHY_AFTER = 60.0

#: Seconds between two ``cancelling`` calls while tasks run: a cancel reaches its task
#: within this (plus a round trip).
CANCEL_POLL = 0.5

#: Prefetched messages beyond the free slots, as a fraction of the concurrency (rounded
#: down: none below a concurrency of 5). They start the moment a slot frees, without a
#: round trip; ones that cannot start within ``BUFFER_PATIENCE`` seconds (every slot busy
#: with long tasks) go back to the backend for another worker.
BUFFER_SHARE = 0.2
BUFFER_PATIENCE = 0.25


class _Buffered:
    __slots__ = ("delivery", "extended_at", "since")

    def __init__(self, delivery: Delivery, now: float) -> None:
        self.delivery = delivery
        self.since = now
        self.extended_at = now


class _Running:
    __slots__ = ("cancellation", "extended_at", "lease", "length", "queue", "task", "task_name")

    def __init__(
        self, lease: Lease, length: float, task: asyncio.Task[None], cancellation: Cancellation
    ) -> None:
        self.lease = lease
        self.length = length
        self.task = task
        self.cancellation = cancellation
        self.extended_at = time.monotonic()
        self.task_name = ""  # known once the message is decoded (for events)
        self.queue = ""


class _Session:
    """What one ``Worker.run`` works with, made from the opened backend once it starts (the
    Gate and the Reporter belong to the running loop): the settle batch, the events
    publisher (None when the App publishes none), the limits gate, the progress reporter and
    the executor, and ``process`` (the executor's, or the observer's wrapper of it)."""

    __slots__ = ("backend", "events", "executor", "gate", "process", "reporter", "settler")

    def __init__(
        self,
        backend: Backend,
        settler: Batcher[Outcome, bool],
        events: Publisher | None,
        gate: Gate,
        reporter: Reporter,
        executor: Executor,
    ) -> None:
        self.backend = backend
        self.settler = settler
        self.events = events
        self.gate = gate
        self.reporter = reporter
        self.executor = executor
        self.process: Process = executor.process


class Worker:
    """Runs the tasks of ``app`` from ``queues`` with up to ``concurrency`` at once.

    ``grace``: seconds running tasks get to finish after a stop is requested (SIGTERM);
    what is still running then is released, un-attempted, for another worker.
    ``unhealthy_after``: seconds of failing fetches (the broker is unreachable) after which
    the worker gives up with exit code 3 so that its supervisor restarts it.
    ``max_tasks``: stop (exit 0) after this many tasks, so a supervisor can recycle it.
    ``scheduler``: run the App's periodic tasks (one worker at a time sends each tick, the
    one holding the leader lock); False leaves that to other workers.
    ``observer``: sees starts and outcomes (``pigeon.metrics``); None costs nothing. When
    the App traces (``App(tracing=True)``), ``pigeon.worker.tracing`` observes too.
    ``clock``: what the scheduler waits on between rounds (``pigeon.testing``'s in tests).
    """

    def __init__(
        self,
        app: App,
        queues: Sequence[str] | None = None,
        concurrency: int = 100,
        *,
        grace: float = 30.0,
        heartbeat: float = 5.0,
        unhealthy_after: float = UNHEALTHY_AFTER,
        max_tasks: int | None = None,
        threads: int | None = None,
        scheduler: bool = True,
        observer: Observer | None = None,
        clock: Clock = SYSTEM,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, not {concurrency}")
        self.app = app
        self.queues = list(queues or [app.queue])
        self.concurrency = concurrency
        self.grace = grace
        self.heartbeat_every = heartbeat
        self.unhealthy_after = unhealthy_after
        self.max_tasks = max_tasks
        self.id = f"{socket.gethostname()}-{os.getpid()}-{new_id()[-6:]}"
        self.threads = threads or min(concurrency, 32)
        self.scheduler = scheduler
        tracing = WorkerTracing(app.tracing) if app.tracing is not None else None
        self.observer = combine(observer, tracing)
        self.clock = clock
        self.done = 0
        self.fetches = 0
        self._running: dict[str, _Running] = {}
        self.buffer = int(concurrency * BUFFER_SHARE)
        self._buffered: dict[str, _Buffered] = {}
        self._stalled = False  # buffered messages were given back: refill once a slot frees
        self._stopping = asyncio.Event()
        self._fetching: asyncio.Future[list[Delivery]] | None = None  # the fetch in flight
        self._slot_freed = asyncio.Event()
        self._started_at = time.time()
        # For the health probes (worker/health.py), monotonic, 0.0 for never: when the fetch
        # loop last began a fetch, and when the backend last answered (a fetch, a heartbeat).
        # One assignment per fetch batch: read from the probes' threads, never per message.
        self.fetch_started_at = 0.0
        self.answered_at = 0.0
        self._fetched_at = self._worked_at = 0.0  # a fetch answered; one brought messages
        self._exit_code = EXIT_OK
        self._session: _Session | None = None  # what run() works with, made once it starts

    def stop(self) -> None:
        """Ask the worker to stop: no more fetching; running tasks get ``grace`` seconds."""
        self._stopping.set()

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def stopping(self) -> bool:
        """A stop was asked for (or the worker stops by itself): it fetches no more."""
        return self._stopping.is_set()

    @property
    def _live(self) -> _Session:
        """The session of the run in progress (the coroutines below run only inside it)."""
        session = self._session
        if session is None:
            raise RuntimeError(f"worker {self.id} is not running: call run() first")
        return session

    def _start_session(self, backend: Backend) -> _Session:
        """What this run works with, on the opened backend and the running loop."""
        gate = Gate(backend)
        reporter = Reporter(backend)
        observer = self.observer
        on_start = self._on_start if observer is None else self._on_start_observed
        executor = Executor(
            self.app.tasks,
            backend.results,
            self.threads,
            self.app.flush,
            signer=self.app.signer,
            max_payload=self.app.max_payload,
            gate=gate,
            on_start=on_start,
            reporter=reporter,
            around_sync=self.app.around_sync_run,
            around_async=self.app.around_async_run,
        )
        events = Publisher(backend) if self.app.publish_events else None
        settle = backend.settle if observer is None else observer.settling(backend.settle)
        session = _Session(backend, Batcher(settle), events, gate, reporter, executor)
        if observer is not None:
            session.process = observer.observe(executor.process)
        self._session = session
        return session

    async def run(self) -> int:
        """Work until stopped; returns the exit code (0, or 3 when unhealthy)."""
        backend = await self.app.open()
        session = self._start_session(backend)
        if self.observer is not None:
            self.observer.begin(self)
        log.info(
            "worker %s: queues %s, concurrency %d, backend %s",
            self.id,
            ",".join(self.queues),
            self.concurrency,
            backend.url,
        )
        try:
            async with asyncio.TaskGroup() as group:
                keeper = group.create_task(self._keep_leases())
                beat = group.create_task(self._heartbeat())
                if self.scheduler and self.app.schedules:
                    # Stops by itself (and hands the leader lock over) once we stop fetching.
                    scheduler = Scheduler(
                        list(self.app.schedules.values()),
                        self.app.enqueue,
                        backend,
                        self.id,
                        clock=self.clock,
                    )
                    group.create_task(scheduler.run(self._stopping))
                await self._fetch_loop()
                await self._drain()
                keeper.cancel()
                beat.cancel()
        finally:
            if self.observer is not None:
                self.observer.end(self)
            session.executor.shutdown()
            session.gate.close()
            try:
                await backend.retire(self.id)
            except Exception as exc:
                log.warning("could not remove worker record %s: %s", self.id, exc)
        log.info("worker %s stopped after %d tasks", self.id, self.done)
        return self._exit_code

    # fetching -----------------------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        failing_since: float | None = None
        backoff = 0.05
        stop_wait = asyncio.ensure_future(self._stopping.wait())
        stop_wait.add_done_callback(self._cancel_fetch)
        try:
            while not self._stopping.is_set():
                free = self.concurrency - len(self._running)
                buffered = len(self._buffered)
                room = free + (0 if self._stalled else self.buffer) - buffered
                if room <= 0 or (free <= 0 and buffered > self.buffer // 2):
                    self._slot_freed.clear()
                    await _first_of(self._slot_freed.wait(), stop_wait)
                    continue
                self.fetches += 1
                self.fetch_started_at = time.monotonic()
                queues = fetch_order(self.queues, self.fetches)
                # A task of its own, which a stop cancels (fetch is safe to cancel: what it
                # leased meanwhile is released), awaited directly: asyncio.wait on it and
                # the stop would cost an event-loop iteration and a set per fetch.
                fetch = self._fetching = asyncio.ensure_future(
                    self._live.backend.fetch(queues, room, self.id, wait=1.0)
                )
                try:
                    deliveries = await fetch
                except asyncio.CancelledError:
                    if fetch.cancelled() and self._stopping.is_set() and not cancelling():
                        break  # the stop cancelled the fetch (not the task this loop runs in)
                    raise
                except Exception as exc:
                    now = time.monotonic()
                    failing_since = failing_since or now
                    if now - failing_since > self.unhealthy_after:
                        log.error(
                            "worker %s: fetching has failed for %.0fs, giving up: %s",
                            self.id,
                            now - failing_since,
                            exc,
                        )
                        self._exit_code = EXIT_UNHEALTHY
                        self._stopping.set()
                        break
                    log.warning("fetch failed, retrying in %.2fs: %s", backoff, exc)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                failing_since = None
                backoff = 0.05
                now = self.answered_at = self._fetched_at = time.monotonic()
                if deliveries:
                    self._worked_at = now
                for d in deliveries:
                    self._buffered[d.id] = _Buffered(d, now)
                self._start_buffered()
                if deliveries:
                    # One iteration for the tasks just started to take their first step (a
                    # short task runs to its end and hands its outcome to the settle batch)
                    # before the next fetch is written: its settle goes out first.
                    await asyncio.sleep(0)
        finally:
            self._fetching = None
            stop_wait.cancel()
            await self._release_buffered()

    async def _release_buffered(self) -> None:
        """Prefetched messages never started: back for another worker at once."""
        if self._buffered:
            leases = [Lease(b.delivery.id, b.delivery.attempt) for b in self._buffered.values()]
            self._buffered.clear()
            await self._release(leases)

    def _cancel_fetch(self, _: object) -> None:
        if self._fetching is not None:
            self._fetching.cancel()

    def _start_buffered(self) -> None:
        """Start prefetched messages, oldest first, while there are free slots."""
        while self._buffered and len(self._running) < self.concurrency:
            if self._stopping.is_set():
                return
            mid = next(iter(self._buffered))
            self._start(self._buffered.pop(mid).delivery)

    def _start(self, d: Delivery) -> None:
        cancellation = Cancellation()
        task = asyncio.ensure_future(self._run_one(d, cancellation))
        self._running[d.id] = _Running(Lease(d.id, d.attempt), d.lease, task, cancellation)

    def _on_start(self, d: Delivery, m: Message) -> None:
        held = self._running.get(d.id)
        if held is not None:
            held.task_name, held.queue = m.task, m.queue
        events = self._live.events
        if events is not None:
            events.emit(Event("started", d.id, m.task, m.queue, time.time(), d.attempt, self.id))

    def _on_start_observed(self, d: Delivery, m: Message) -> None:
        self._on_start(d, m)
        assert self.observer is not None
        self.observer.started(d, m)

    async def _run_one(self, d: Delivery, cancellation: Cancellation) -> None:
        try:
            outcome = await self._live.process(d, cancellation)
        except Deferred as deferred:
            # Over a rate or concurrency limit: back to the backend, due again later.
            log.debug("%s deferred %.3fs: %s", d.id, deferred.delay, deferred)
            self._forget(d.id)
            lease = Lease(d.id, d.attempt)
            await self._release([lease], deferred.delay, deferred.task, deferred.queue)
            return
        except Exception as exc:
            # A bug in pigeon itself, not in the task: dead-letter rather than loop forever.
            log.exception("internal error processing %s", d.id)
            error = Failure(
                "InternalError", f"pigeon failed to process this message: {exc!r}", id=d.id
            )
            outcome = Outcome(d.id, d.attempt, "dead", error=error)
        except asyncio.CancelledError:
            # Stopped past the grace period, or the lease was lost: give the message back
            # un-attempted (a no-op if another worker holds it now).
            held = self._running.get(d.id)
            self._forget(d.id)
            names = (held.task_name, held.queue) if held is not None else ("", "")
            await self._release([Lease(d.id, d.attempt)], 0.0, *names)
            return
        held = self._running.get(d.id)
        self._forget(d.id)
        self.done += 1
        if self.max_tasks is not None and self.done >= self.max_tasks:
            self._stopping.set()
        events = self._live.events
        if events is not None:
            name, queue = (held.task_name, held.queue) if held is not None else ("", "")
            events.emit(outcome_event(outcome, name, queue, self.id))
        await self._settle(outcome)

    def _forget(self, mid: str) -> None:
        self._running.pop(mid, None)
        self._stalled = False
        if self._buffered:
            self._start_buffered()
        self._slot_freed.set()

    async def _settle(self, outcome: Outcome) -> None:
        """Report an outcome, retrying transient errors until it is applied or refused."""
        backoff = 0.05
        deadline = time.monotonic() + max(self.grace, 30.0)
        while True:
            try:
                applied = await self._live.settler.submit(outcome)
            except Exception as exc:
                if time.monotonic() > deadline:
                    log.error("giving up settling %s after repeated errors: %s", outcome.id, exc)
                    return
                log.warning("settle of %s failed, retrying in %.2fs: %s", outcome.id, backoff, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            if not applied:
                log.warning(
                    "outcome of %s (attempt %d) refused: its lease was taken over by another"
                    " worker, whose outcome counts",
                    outcome.id,
                    outcome.attempt,
                )
            return

    async def _release(
        self, leases: list[Lease], delay: float = 0.0, task: str = "", queue: str = ""
    ) -> None:
        """Give leases back (due again after ``delay``); ``task`` and ``queue``, when known
        (the message was decoded), go into the "released" events."""
        events = self._live.events
        if events is not None:
            now = time.time()
            for lease in leases:
                events.emit(Event("released", lease.id, task, queue, now, lease.attempt, self.id))
        try:
            await self._live.backend.release(leases, delay)
        except Exception as exc:
            log.warning(
                "could not release %d messages (they return when their lease ends): %s",
                len(leases),
                exc,
            )

    # leases and heartbeat -------------------------------------------------------------------

    async def _keep_leases(self) -> None:
        """Extend the leases of running messages (a third of the way through each lease),
        and pass on the cancellations asked for them (every ``CANCEL_POLL`` seconds)."""
        asked = 0.0
        while True:
            now = time.monotonic()
            due: list[Lease] = []
            tick = CANCEL_POLL
            for r in self._running.values():
                third = r.length / 3
                tick = min(tick, max(third, 0.02))
                if now - r.extended_at >= third:
                    due.append(r.lease)
            if self._buffered:
                tick = min(tick, BUFFER_PATIENCE / 2)
                await self._keep_buffered(now, due)
            if due:
                try:
                    lost = await self._live.backend.extend(due)
                except Exception as exc:
                    log.warning("extending %d leases failed, retrying: %s", len(due), exc)
                else:
                    stamp = time.monotonic()
                    for lease in due:
                        waiting = self._buffered.get(lease.id)
                        if waiting is not None:
                            if lease.id in lost:
                                del self._buffered[lease.id]
                            else:
                                waiting.extended_at = stamp
                            continue
                        held = self._running.get(lease.id)
                        if held is None:
                            continue
                        if lease.id in lost:
                            log.warning("lease of %s lost; cancelling its run here", lease.id)
                            held.task.cancel()
                        else:
                            held.extended_at = stamp
            if time.monotonic() - asked >= CANCEL_POLL:
                asked = time.monotonic()
                await self._pass_on_cancellations()
            await asyncio.sleep(tick)

    async def _keep_buffered(self, now: float, due: list[Lease]) -> None:
        """Prefetched messages: give back those that waited too long for a slot (for an
        idle worker to take), and list the leases of the others that need extending."""
        stuck = [
            b
            for b in self._buffered.values()
            if now - b.since > BUFFER_PATIENCE and len(self._running) >= self.concurrency
        ]
        if stuck:
            for b in stuck:
                del self._buffered[b.delivery.id]
            self._stalled = True
            await self._release([Lease(b.delivery.id, b.delivery.attempt) for b in stuck])
        for b in self._buffered.values():
            if now - b.extended_at >= b.delivery.lease / 3:
                due.append(Lease(b.delivery.id, b.delivery.attempt))

    async def _pass_on_cancellations(self) -> None:
        """Ask the backend which running messages were cancelled; tell their runs."""
        leases = [r.lease for r in self._running.values() if not r.cancellation.requested]
        if not leases:
            return
        try:
            cancelled = await self._live.backend.cancelling(leases)
        except Exception as exc:
            log.warning(
                "asking which of %d running messages were cancelled failed: %s", len(leases), exc
            )
            return
        for mid in cancelled:
            held = self._running.get(mid)
            if held is not None and not held.cancellation.requested:
                log.info("%s was cancelled: stopping its run", mid)
                held.cancellation.request()

    async def _heartbeat(self) -> None:
        host = socket.gethostname()
        swept = 0.0
        while True:
            now = time.monotonic()
            info = WorkerInfo(
                self.id,
                host,
                os.getpid(),
                self.queues,
                self.concurrency,
                running=len(self._running),
                done=self.done,
                started_at=self._started_at,
                fetch_age=now - self._fetched_at if self._fetched_at else None,
                work_age=now - self._worked_at if self._worked_at else None,
            )
            try:
                await self._live.backend.heartbeat(info, ttl=self.heartbeat_every * 3)
            except Exception as exc:
                log.warning("heartbeat failed: %s", exc)
            else:
                self.answered_at = time.monotonic()
            if time.monotonic() - swept > 60:
                swept = time.monotonic()
                try:
                    await self._live.backend.sweep()
                except Exception as exc:
                    log.warning("sweeping expired outcomes failed: %s", exc)
            await asyncio.sleep(self.heartbeat_every)

    # shutdown -------------------------------------------------------------------------------

    async def _drain(self) -> None:
        """Let running tasks finish within the grace period; release the rest."""
        if self._running:
            log.info(
                "stopping: waiting up to %gs for %d running tasks", self.grace, len(self._running)
            )
            tasks = [r.task for r in self._running.values()]
            _, pending = await asyncio.wait(tasks, timeout=self.grace)
            for task in pending:
                task.cancel()
            if pending:
                log.info("released %d unfinished tasks for another worker", len(pending))
                await asyncio.gather(*pending, return_exceptions=True)
        session = self._live
        await session.settler.drain()
        await session.reporter.drain()
        if session.events is not None:
            await session.events.drain()
        await self.app.flush()


async def _first_of(*aws: Any) -> None:
    futures = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for f in futures[:-1]:
            if not f.done():
                f.cancel()

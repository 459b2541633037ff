"""The workloads, run on one system in sequence, and the figures they give.

(a) enqueue ``n`` no-op tasks one by one (no worker running), and later ``n`` more with the
    bulk API where the system has one (into the queue no worker consumes any more); right
    before the one by one, ``raw_n`` awaited round trips of the broker's own client
    (``limits.raw_round_trip``), so that a single send is compared with the round trip it
    cannot beat in the same minute;
(b) start one worker process and let it drain the ``n`` queued no-op tasks: processed/s is
    ``n / (last completion - first completion)``, both seen by the harness in the counter
    file; the time from starting the worker process to its first completion is reported
    apart, as start-up (the JSON also has ``n / (last completion - worker start)``);
(c) with that worker still running, ``rtt`` sequential round trips (send, then wait for the
    result through the system's own result API) after 3 that are not counted: p50 and p99;
(d) queue ``nap_n`` tasks that sleep 10 ms (the fastest way the system offers, untimed),
    start a worker at concurrency ``concurrency``, and measure processed/s as in (b), with
    the first task's 10 ms added back to the interval;
(e) the peak RSS of the worker process tree of (b)+(c) (and of (d), in the JSON).
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from peers import counter
from peers.base import NAP_SECONDS, Kind, Place, System

from harness import limits
from harness.processes import RssSampler, WorkerProcess

#: Where worker processes start (the ``peers`` package is importable from there).
BENCHMARKS = Path(__file__).resolve().parent.parent
POLL = 0.002  # how often the harness reads the counter file while a worker drains
WARM_UP_ROUND_TRIPS = 3


@dataclass
class Settings:
    n: int = 20_000
    rtt: int = 300
    nap_n: int = 5_000
    concurrency: int = 100
    raw_n: int = 3_000


@dataclass
class Figures:
    """What one system did. ``None``: not measured (no bulk API, or an error before it)."""

    system: str
    broker: str
    enqueue_one: float | None = None  # tasks/s
    raw_one: float | None = None  # the broker client's awaited round trips/s, just before
    enqueue_bulk: float | None = None  # tasks/s
    processed: float | None = None  # no-op tasks/s, one worker process
    processed_from_start: float | None = None  # the same, counted from the worker's start
    startup: float | None = None  # s, worker process start -> first completion
    rtt_p50: float | None = None  # ms
    rtt_p99: float | None = None  # ms
    nap_processed: float | None = None  # 10 ms tasks/s at the given concurrency
    rss_mb: float | None = None  # peak RSS of the (b)+(c) worker tree, MiB
    nap_rss_mb: float | None = None  # peak RSS of the (d) worker tree, MiB
    notes: list[str] = field(default_factory=list)

    @property
    def one_vs_raw(self) -> float | None:
        """How many raw round trips of the broker's client one send takes (time ratio)."""
        if self.enqueue_one is None or not self.raw_one:
            return None
        return self.raw_one / self.enqueue_one


class DrainTimeout(Exception):
    """The worker did not finish its tasks within the deadline."""


@dataclass
class Running:
    """A worker while it runs: when it started, how to check it is alive, and (once it has
    stopped) the peak RSS of its process tree in bytes."""

    started: float
    check: Callable[[], None]
    peak_rss: int = 0


async def measure(
    system: System, place: Place, settings: Settings, counter_path: Path, figures: Figures
) -> None:
    """Run (a)-(e) on ``system``, filling ``figures`` as they come (so that what was measured
    before an error is kept by the caller)."""
    await system.open(place)
    try:
        await _workloads(system, place, settings, counter_path, figures)
    finally:
        await system.close()


async def _workloads(
    system: System, place: Place, s: Settings, counter_path: Path, figures: Figures
) -> None:
    n = s.n
    # (a) one by one, nothing consuming; the raw round trip it is compared with, just before
    figures.raw_one = await limits.raw_round_trip(
        place.redis_url, place.postgres_dsn, s.raw_n, place.nats_url
    )
    t0 = time.perf_counter()
    for i in range(n):
        await system.enqueue_one(Kind.NOOP, i)
    figures.enqueue_one = n / (time.perf_counter() - t0)

    # (b), (c) and (e)
    async with running_worker(system, Kind.NOOP, s.concurrency, place, counter_path) as run:
        first, last = await _drain(counter_path, 0, n, run)
        figures.startup = first - run.started
        figures.processed = n / max(last - first, 1e-9)
        figures.processed_from_start = n / (last - run.started)
        figures.rtt_p50, figures.rtt_p99 = await _round_trips(system, s.rtt)
    figures.rss_mb = run.peak_rss / 2**20

    # (d)
    await system.enqueue_many(Kind.NAP, range(s.nap_n))
    async with running_worker(system, Kind.NAP, s.concurrency, place, counter_path) as run:
        first, last = await _drain(counter_path, n, s.nap_n, run)
        figures.nap_processed = s.nap_n / (last - first + NAP_SECONDS)
    figures.nap_rss_mb = run.peak_rss / 2**20

    done = counter.count(counter_path)
    if done != n + s.nap_n:
        figures.notes.append(f"counted {done} completions for {n + s.nap_n} tasks")

    # (a) bulk, into the queue that no worker consumes any more
    if system.has_bulk:
        t0 = time.perf_counter()
        await system.enqueue_bulk(Kind.NOOP, range(n))
        figures.enqueue_bulk = n / (time.perf_counter() - t0)


@asynccontextmanager
async def running_worker(
    system: System, kind: Kind, concurrency: int, place: Place, counter_path: Path
) -> AsyncIterator[Running]:
    """A worker for ``kind`` tasks while the block runs: a separate process (its output in
    ``<workdir>/worker-<kind>.log``), or, for ``in_process`` systems, this event loop."""
    env = {counter.COUNTER_ENV: str(counter_path)}
    if system.in_process:
        # memory:// lives in this process, so does its worker, and its RSS is the harness's.
        os.environ.update(env)
        sampler = RssSampler(os.getpid(), include_children=False)
        sampler.start()
        running = Running(time.perf_counter(), check=lambda: None)
        try:
            async with system.serve(kind, concurrency):
                yield running
        finally:
            running.peak_rss = sampler.stop()
            counter.forget()
        return
    path = os.pathsep.join(p for p in (str(BENCHMARKS), os.environ.get("PYTHONPATH")) if p)
    env["PYTHONPATH"] = path
    log = place.workdir / f"worker-{kind.value}.log"
    process = WorkerProcess(system.worker(kind, concurrency), env, cwd=BENCHMARKS, log=log)
    process.start()
    running = Running(process.started, process.check)
    try:
        yield running
    finally:
        process.stop()
        running.peak_rss = process.peak_rss


async def _drain(counter_path: Path, base: int, target: int, run: Running) -> tuple[float, float]:
    """Wait until ``target`` more tasks than ``base`` have completed; returns the times
    (perf_counter) at which the first and the last of them were seen."""
    deadline = time.perf_counter() + 60 + target * 0.02  # allows >= 50 tasks/s
    first: float | None = None
    while True:
        done = counter.count(counter_path) - base
        now = time.perf_counter()
        if first is None and done > 0:
            first = now
        if done >= target:
            assert first is not None
            return first, now
        run.check()
        if now > deadline:
            raise DrainTimeout(f"{done} of {target} tasks done after {now - run.started:.0f} s")
        await asyncio.sleep(POLL)


async def _round_trips(system: System, count: int) -> tuple[float, float]:
    for i in range(min(WARM_UP_ROUND_TRIPS, count)):
        await system.round_trip(-1 - i)
    samples: list[float] = []
    for i in range(count):
        t0 = time.perf_counter()
        await system.round_trip(i)
        samples.append((time.perf_counter() - t0) * 1000)
    return percentile(samples, 50), percentile(samples, 99)


def percentile(samples: list[float], p: float) -> float:
    """Nearest-rank percentile: the smallest sample with at least p% of samples <= it."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]

"""The one interface every system under test implements, and what the harness hands it.

A ``System`` is one task queue on one broker (``pigeon`` on SQLite, Celery on Redis, ...). The
harness (``benchmarks/harness/workloads.py``) drives every system through the same steps:

1. ``open(place)``: connect the client side to the namespace the harness made for this system
   (its own Redis database number, its own PostgreSQL database, its own SQLite file);
2. ``enqueue_one`` / ``enqueue_bulk``: put tasks on the queue from this process;
3. ``worker(kind, concurrency)``: the command line of a real, separate worker process (or, for
   ``memory://`` only, ``serve`` in this process, since that store is one process's memory);
4. ``round_trip(i)``: send one task and wait for its result through the system's own result
   API;
5. ``close()``.

Task bodies are identical everywhere: ``noop`` calls ``counter.mark_done()``, ``nap`` sleeps
``NAP_SECONDS`` and then marks, ``echo`` returns its argument (round trips). The harness counts
completions from the counter file, never from the system.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

#: How long each task of workload (d) sleeps.
NAP_SECONDS = 0.010

#: Polling interval given to result APIs and workers that poll instead of being notified
#: (their defaults, 0.1-0.5 s, would measure the default rather than the system).
POLL_SECONDS = 0.005

#: How long one round trip may take before the harness calls it an error.
ROUND_TRIP_TIMEOUT = 10.0

#: The queue every benchmark task goes to (systems that name queues).
QUEUE = "bench"

#: Environment of worker processes whose command line cannot carry everything: the Redis
#: database URL, the PostgreSQL DSN and the concurrency (the counter file: ``counter.py``).
REDIS_ENV = "BENCH_REDIS_URL"
POSTGRES_ENV = "BENCH_POSTGRES_DSN"
NATS_ENV = "BENCH_NATS_URL"
CONCURRENCY_ENV = "BENCH_CONCURRENCY"


class Kind(enum.Enum):
    """Which task a workload runs."""

    NOOP = "noop"  # (a), (b): returns at once
    NAP = "nap"  # (d): sleeps NAP_SECONDS


class Broker(enum.Enum):
    MEMORY = "memory"
    SQLITE = "sqlite"
    REDIS = "redis"
    POSTGRES = "postgres"
    NATS = "nats"


@dataclass(frozen=True)
class Place:
    """Where one system keeps its data for one run; made and removed by the harness.

    Only the field of the system's broker is set: ``redis_url`` names a Redis database that
    was empty when the harness claimed it; ``postgres_dsn`` a database created for this
    system; ``nats_url`` a nats-server (JetStream on) started for this system alone;
    ``workdir`` is always a private directory (SQLite files, worker logs).
    """

    run_id: str
    workdir: Path
    redis_url: str | None = None
    postgres_dsn: str | None = None
    nats_url: str | None = None


@dataclass(frozen=True)
class WorkerCommand:
    """A worker process: ``argv`` run with ``env`` added, from the ``benchmarks`` directory."""

    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)


class System(ABC):
    """One task queue on one broker, as the harness sees it."""

    #: Name in the results table, e.g. ``"celery"`` or ``"pigeon-sqlite"``.
    name: ClassVar[str]
    broker: ClassVar[Broker]
    #: Whether the system has an API that enqueues many tasks at once.
    has_bulk: ClassVar[bool] = False
    #: Whether the worker runs in the harness process (``memory://`` only).
    in_process: ClassVar[bool] = False
    #: Modules that must import for the system to run (besides the adapter's own imports):
    #: a missing one skips the system with a one-line note.
    requires: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    async def open(self, place: Place) -> None:
        """Connect the client side, and create the schema where the system needs one."""

    @abstractmethod
    async def close(self) -> None:
        """Close every connection ``open`` made."""

    @abstractmethod
    async def enqueue_one(self, kind: Kind, i: int) -> None:
        """Enqueue one task, stored durably by the time this returns."""

    async def enqueue_bulk(self, kind: Kind, ids: range) -> None:
        """Enqueue ``len(ids)`` tasks with the system's bulk API (only when ``has_bulk``)."""
        raise NotImplementedError(f"{self.name} has no bulk enqueue API")

    async def enqueue_many(self, kind: Kind, ids: range) -> None:
        """Enqueue tasks the fastest way the system offers (untimed set-up of a workload)."""
        if self.has_bulk:
            await self.enqueue_bulk(kind, ids)
        else:
            for i in ids:
                await self.enqueue_one(kind, i)

    def worker(self, kind: Kind, concurrency: int) -> WorkerCommand:
        """The command line of one worker process for ``kind`` tasks.

        ``concurrency`` is the harness's ``-c`` (100): asyncio workers take it as is for both
        kinds; process and thread workers take it for ``NAP`` and use the configuration their
        documentation recommends for short tasks for ``NOOP`` (each adapter says which).
        """
        raise NotImplementedError(f"{self.name} runs its worker in-process")

    def serve(self, kind: Kind, concurrency: int) -> AbstractAsyncContextManager[None]:
        """Run a worker in this process while the block runs (``in_process`` systems only)."""
        raise NotImplementedError(f"{self.name} runs its worker in a separate process")

    @abstractmethod
    async def round_trip(self, i: int) -> None:
        """Send ``echo(i)`` and wait for its result through the system's result API.

        Raises AssertionError when the result is not ``i``; bounded by ROUND_TRIP_TIMEOUT.
        """

"""Events: what happened to messages, published to the backend's log for monitoring.

An App with ``events=True`` (or ``PIGEON_EVENTS=1``) publishes a ``sent`` event for each
message it sends, and a worker of such an App publishes ``started`` and, per outcome,
``succeeded``, ``failed``, ``retried``, ``cancelled``, ``dead`` or ``released`` (given back
unstarted: a shutdown, or a rate or concurrency limit; with its task and queue when the
worker had decoded it, as it has for a limit). Events go out in batches (one
``publish`` per batch, off the path of the message itself) and a failed publish is logged,
never retried: events are for watching, not for correctness. ``app.events()`` and
``pigeon events`` read the log, in the order events were published: events of one message
published by different processes may come out of the order they happened in (a worker's
``started`` can be published before its sender's ``sent``); ``at`` orders them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

from pigeon.backends.base import Backend
from pigeon.batching import Batcher
from pigeon.message import Event, EventKind, Message, Outcome

log = logging.getLogger("pigeon")

_OUTCOME_KINDS: dict[str, EventKind] = {
    "succeeded": "succeeded",
    "failed": "failed",
    "retry": "retried",
    "cancelled": "cancelled",
    "dead": "dead",
}


class Publisher:
    """Publishes events in batches; ``emit`` never waits and never raises."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._batcher: Batcher[Event, None] = Batcher(self._publish, limit=1000)
        self._failing = False

    async def _publish(self, events: list[Event]) -> list[None]:
        await self._backend.publish(events)
        return [None] * len(events)

    def emit(self, event: Event) -> None:
        self._batcher.submit(event).add_done_callback(self._check)

    def _check(self, future: asyncio.Future[None]) -> None:
        exc = future.exception() if not future.cancelled() else None
        if exc is not None and not self._failing:
            self._failing = True  # once per failing spell, not once per event
            log.warning("publishing events failed (they are dropped): %s", exc)
        elif exc is None:
            self._failing = False

    async def drain(self) -> None:
        await self._batcher.drain()


def sent(message: Message, at: float) -> Event:
    """The "sent" event of ``message``, stored at ``at``: a time taken before the enqueue
    call, so that it comes before the "started" of a worker that fetched the message while
    the sender was still waiting for the enqueue's reply."""
    return Event("sent", message.id, message.task, message.queue, at)


def outcome_event(outcome: Outcome, task: str, queue: str, worker: str) -> Event:
    error = ""
    if outcome.error is not None:
        error = f"{outcome.error.type}: {outcome.error.message}"
    kind = _OUTCOME_KINDS[outcome.state]
    return Event(kind, outcome.id, task, queue, time.time(), outcome.attempt, worker, error)


async def follow(
    backend: Backend, after: str | None = None, wait: float = 5.0
) -> AsyncIterator[Event]:
    """Every event published after the cursor ``after`` (None: from now on), as they come."""
    cursor = after
    while True:
        cursor, events = await backend.read_events(cursor, 1000, wait)
        for event in events:
            yield event


def describe(event: Event) -> str:
    """One line for a terminal: local time, kind, task, id, attempt, worker, error."""
    stamp = time.strftime("%H:%M:%S", time.localtime(event.at)) + f".{int(event.at % 1 * 1000):03d}"
    parts = [stamp, f"{event.kind:<9}", event.task or "-", event.id]
    if event.attempt:
        parts.append(f"attempt={event.attempt}")
    if event.worker:
        parts.append(f"worker={event.worker}")
    if event.error:
        parts.append(event.error)
    return "  ".join(parts)

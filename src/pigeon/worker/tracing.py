"""The worker's side of ``pigeon.tracing``: process and settle spans through the worker's
``Observer`` seam. A ``Worker`` whose App has tracing on adds a ``WorkerTracing`` to its
observers (``pigeon.worker.observer.combine``); without tracing nothing here runs."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from pigeon.context import Cancellation
from pigeon.message import Delivery, Message, Outcome
from pigeon.tracing import Tracing
from pigeon.worker.limits import Deferred
from pigeon.worker.observer import Process, Settle, WorkerView

#: Process spans whose outcome waits for a settle, most kept (an outcome never settled, a
#: settle given up, must not grow this for ever).
PENDING_MOST = 10_000


class WorkerTracing:
    """A ``process {task}`` span around each attempt, made current while it runs (the
    task's own spans and sends are its children), and a ``settle`` span per settle batch
    linking the process spans whose outcomes it carries."""

    def __init__(self, tracing: Tracing) -> None:
        self.tracing = tracing
        # (message id, attempt) -> the span context of its process span, until settled
        self._pending: dict[tuple[str, int], Any] = {}

    def begin(self, worker: WorkerView) -> None:
        pass

    def end(self, worker: WorkerView) -> None:
        self._pending.clear()

    def started(self, d: Delivery, m: Message) -> None:
        pass

    def observe(self, process: Process) -> Process:
        tracing = self.tracing
        pending = self._pending

        async def traced(d: Delivery, cancellation: Cancellation | None) -> Outcome:
            span = tracing.start_process(d)
            token = tracing.attach(span)
            try:
                outcome = await process(d, cancellation)
            except asyncio.CancelledError:
                tracing.end_unsettled(span, "interrupted")
                raise
            except Deferred:
                tracing.end_unsettled(span, "deferred")
                raise
            except Exception as exc:  # pigeon's own error: the loop dead-letters the message
                tracing.end_unsettled(span, "dead", exc)
                raise
            finally:
                tracing.detach(token)
            tracing.end_process(span, outcome)
            if len(pending) >= PENDING_MOST:
                pending.clear()
            pending[d.id, d.attempt] = span.get_span_context()
            return outcome

        return traced

    def settling(self, settle: Settle) -> Settle:
        tracing = self.tracing
        pending = self._pending

        async def traced(outcomes: Sequence[Outcome]) -> list[bool]:
            processed = [
                c for o in outcomes if (c := pending.pop((o.id, o.attempt), None)) is not None
            ]
            span = tracing.start_settle(outcomes, processed)
            try:
                applied = await settle(outcomes)
            except BaseException as exc:
                tracing.settled(span, exc if isinstance(exc, Exception) else None)
                raise
            tracing.settled(span, None)
            return applied

        return traced

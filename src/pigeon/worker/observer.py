"""What a worker tells an observer (``pigeon.metrics``): the seam that keeps the worker
free of any metrics library.

A ``Worker`` given no observer (the default) runs exactly the code it runs without one: the
observer's hooks are chosen once per run (``Worker._start_session``), never tested per
message.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from pigeon.context import Cancellation
from pigeon.message import Delivery, Message, Outcome

#: ``Executor.process``: one delivery -> one outcome.
Process = Callable[[Delivery, Cancellation | None], Awaitable[Outcome]]
#: ``Backend.settle``: one batch of outcomes -> whether each was applied.
Settle = Callable[[Sequence[Outcome]], Awaitable[list[bool]]]


class WorkerView(Protocol):
    """What an observer may read of the worker it watches."""

    @property
    def queues(self) -> Sequence[str]: ...
    @property
    def concurrency(self) -> int: ...


class Observer(Protocol):
    """Sees each start and each outcome of one worker.

    ``started`` runs when a task's function is about to be called (not for a message
    settled without a call: undecodable, unknown task, a follow-up passed through).
    ``observe`` wraps the executor's ``process`` once per run: the wrapper sees every
    outcome, and the CancelledError of a run that is interrupted (released un-attempted).
    ``settling`` wraps the backend's ``settle`` once per run likewise (each batch of
    outcomes; ``pigeon.worker.tracing``'s settle spans). ``begin`` and ``end`` bracket the
    run, once the backend is open.
    """

    def begin(self, worker: WorkerView) -> None: ...
    def end(self, worker: WorkerView) -> None: ...
    def started(self, d: Delivery, m: Message) -> None: ...
    def observe(self, process: Process) -> Process: ...
    def settling(self, settle: Settle) -> Settle: ...


def combine(*observers: Observer | None) -> Observer | None:
    """One observer for those given (metrics and tracing): None when none is, the one
    itself when only one is, so that a worker pays per message only for what is on."""
    present = [o for o in observers if o is not None]
    if not present:
        return None
    if len(present) == 1:
        return present[0]
    return Observers(present)


class Observers:
    """Several observers as one: each hook calls them in order, wrappers nest (the first
    outermost)."""

    def __init__(self, observers: Sequence[Observer]) -> None:
        self.observers = list(observers)

    def begin(self, worker: WorkerView) -> None:
        for o in self.observers:
            o.begin(worker)

    def end(self, worker: WorkerView) -> None:
        for o in self.observers:
            o.end(worker)

    def started(self, d: Delivery, m: Message) -> None:
        for o in self.observers:
            o.started(d, m)

    def observe(self, process: Process) -> Process:
        for o in reversed(self.observers):
            process = o.observe(process)
        return process

    def settling(self, settle: Settle) -> Settle:
        for o in reversed(self.observers):
            settle = o.settling(settle)
        return settle

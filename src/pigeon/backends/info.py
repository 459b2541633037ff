"""``inspect``: what one id's stored rows say of it, decided once for every backend.

Each backend reads its message row, stored outcome and dead letter of an id (one round
trip, as before) and hands them here; the rule of what ``pigeon inspect`` shows is this
module's alone:

- a message that can still run shows its stored state, except that a pending one whose due
  time is after ``now`` (backend clock) is ``scheduled``;
- ``worker`` and ``lease_until`` are shown only while the message is leased (a lease that
  lapsed but was not taken over yet still counts as held, as the contract says);
- a dead letter shows its queue, task, reason and stored body; a kept outcome alone shows
  its final state; either shows the kept outcome, if any;
- ``sent_at`` is the backend's clock when it stored the message.

Imports no backend: backends import it.
"""

from __future__ import annotations

from typing import NamedTuple

from pigeon.message import FINAL_STATES, MessageInfo, Result


class StoredMessage(NamedTuple):
    """The message row of an id, as a backend stores it (times: epoch seconds, backend
    clock)."""

    state: str  # waiting | pending | leased
    queue: str
    task: str
    attempt: int
    failures: int
    due: float
    lease_until: float | None
    worker: str | None
    body: bytes
    cancel_requested: bool
    sent_at: float | None


class StoredDead(NamedTuple):
    """The dead letter of an id."""

    queue: str
    task: str
    reason: str
    body: bytes


def message_info(
    id: str,
    now: float,
    message: StoredMessage | None,
    result: Result | None,
    dead: StoredDead | None,
) -> MessageInfo | None:
    """What ``inspect(id)`` returns, given what the backend holds of ``id`` at ``now``
    (``result``: the kept, unexpired outcome). None when it holds nothing."""
    if message is not None:
        state = message.state
        leased = state == "leased"
        if state == "pending" and message.due > now:
            state = "scheduled"
        return MessageInfo(
            id,
            state,  # type: ignore[arg-type]
            queue=message.queue,
            task=message.task,
            attempt=message.attempt,
            failures=message.failures,
            run_at=message.due,
            lease_until=message.lease_until if leased else None,
            worker=message.worker if leased else None,
            result=result,
            body=message.body,
            cancel_requested=message.cancel_requested,
            sent_at=message.sent_at,
        )
    if dead is not None:
        return MessageInfo(
            id,
            "dead",
            queue=dead.queue,
            task=dead.task,
            result=result,
            reason=dead.reason,
            body=dead.body,
        )
    if result is not None:
        assert result.state in FINAL_STATES
        return MessageInfo(id, result.state, result=result)
    return None

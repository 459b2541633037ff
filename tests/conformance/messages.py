"""Building the messages and outcomes the conformance tests send."""

from __future__ import annotations

from typing import Any

import msgspec

from pigeon.message import Delivery, Failure, Lease, Message, Outcome, new_id

QUEUE = "q"


def make_message(queue: str = QUEUE, **fields: Any) -> Message:
    """A message of task "t" on ``queue``, with a new id unless ``id`` is given."""
    return Message(**{"id": new_id(), "task": "t", "queue": queue, **fields})


def make_messages(count: int, queue: str = QUEUE, **fields: Any) -> list[Message]:
    return [make_message(queue, **fields) for _ in range(count)]


def lease_of(delivery: Delivery) -> Lease:
    return Lease(delivery.id, delivery.attempt)


def value(data: Any) -> msgspec.Raw:
    return msgspec.Raw(msgspec.json.encode(data))


def succeeded(delivery: Delivery, data: Any = "ok", **fields: Any) -> Outcome:
    return Outcome(delivery.id, delivery.attempt, "succeeded", value=value(data), **fields)


def failed(delivery: Delivery, message: str = "boom", **fields: Any) -> Outcome:
    error = Failure("ValueError", message, id=delivery.id)
    return Outcome(delivery.id, delivery.attempt, "failed", error=error, **fields)


def dead(delivery: Delivery, message: str = "cannot run", **fields: Any) -> Outcome:
    error = Failure("Poison", message, id=delivery.id)
    return Outcome(delivery.id, delivery.attempt, "dead", error=error, **fields)


def retry(delivery: Delivery, retry_in: float = 0.0) -> Outcome:
    return Outcome(delivery.id, delivery.attempt, "retry", retry_in=retry_in)


def settle_as(delivery: Delivery, state: str) -> Outcome:
    """An outcome of the given final state for a delivery."""
    if state == "succeeded":
        return succeeded(delivery)
    if state == "failed":
        return failed(delivery)
    if state == "dead":
        return dead(delivery)
    if state == "cancelled":
        return Outcome(delivery.id, delivery.attempt, "cancelled")
    raise ValueError(f"not a final state: {state!r}")

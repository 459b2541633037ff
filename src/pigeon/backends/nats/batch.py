"""Atomic batch publish (JetStream ADR-50, nats-server 2.12+): many records changed in one
all-or-nothing step, each guarded by the sequence it was read at.

On a stream that keeps one message per subject, a subject is a record and its last
message's stream sequence is the record's version. ``publish_atomic`` writes several
records at once; a write may name the sequence its subject must still be at
(``Nats-Expected-Last-Subject-Sequence``; 0: the subject must hold no message), which makes
the batch a compare-and-set across keys: enqueue with its idempotency key, settle with its
followers and joins, fenced on the leased record's sequence.

The protocol, as nats-server implements it (``server/stream.go``,
``processJetStreamAtomicBatchMsg``; ``server/jetstream_batching.go``):

- Every message of a batch carries ``Nats-Batch-Id`` (the same id, at most 64 characters)
  and ``Nats-Batch-Sequence`` (1, 2, ... without gaps); the last one also carries
  ``Nats-Batch-Commit: 1``. The stream must have ``allow_atomic``.
- The server stages the messages as they arrive (a staged message sent with a reply
  subject is answered with an empty message; here they are sent without one, so the whole
  batch is one round trip) and nothing is visible until the commit message arrives. Then
  the stream leader checks every message's headers against the stream as it is, and
  either stores all of them, at consecutive stream sequences, replicated as one proposal,
  or none. The commit's reply is a PubAck naming the batch and its size:
  ``{"stream": S, "seq": LAST, "batch": ID, "count": N}``, or ``{"error": {...}}``.
- An expected sequence that does not hold rejects the whole batch with JetStream error
  10071 (``wrong last sequence: N``, N the subject's current sequence). A subject written
  twice in one batch may not carry an expected sequence (10164, ``wrong last
  sequence``), nor may one that another publish has in flight at that moment (10164 too:
  retry). ``Nats-Expected-Last-Msg-Id`` is refused in a batch (10177).
- A gap in the sequence, an unknown batch id at sequence > 1 (its first message was
  refused, say for too many batches in flight) and a batch left without a commit for 10
  seconds (it is discarded) are "incomplete" (10176): nothing is stored.
- Limits: 1,000 messages per batch; 50 batches in flight per stream (10210) and 1,000 per
  server.
- ``Nats-TTL`` (whole seconds, at least 1, or ``never``; the stream needs
  ``allow_msg_ttl``) makes the server delete a message that long after it was stored.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import nats.errors
from nats.aio.client import Client as NATS

from pigeon.errors import BackendError

#: The most messages one atomic batch may hold (the server's default limit).
MAX_BATCH = 1000
#: Seconds to wait for the commit's reply.
COMMIT_TIMEOUT = 5.0

BATCH_ID = "Nats-Batch-Id"
BATCH_SEQUENCE = "Nats-Batch-Sequence"
BATCH_COMMIT = "Nats-Batch-Commit"
EXPECTED_SUBJECT_SEQUENCE = "Nats-Expected-Last-Subject-Sequence"
TTL = "Nats-TTL"

#: JetStream error codes of a batch refused because an expected sequence did not hold.
WRONG_LAST_SEQUENCE = 10071
WRONG_LAST_SEQUENCE_CONSTANT = 10164
_CURRENT = re.compile(r"wrong last sequence: (\d+)")


class Write(NamedTuple):
    """One message of an atomic batch."""

    subject: str
    data: bytes
    expected: int | None = None
    """The sequence ``subject`` must be at for the batch to commit (0: no message on it);
    None: no check."""
    headers: Mapping[str, str] | None = None
    """More headers (``Nats-TTL``, ...); the batch's own are added."""


class BatchError(BackendError):
    """The server refused an atomic batch: none of its messages was stored."""

    def __init__(self, message: str, err_code: int | None = None) -> None:
        super().__init__(message)
        self.err_code = err_code


class BatchConflict(BatchError):
    """An expected sequence did not hold (a record changed since it was read, or a
    subject expected empty has a message): none of the batch was stored."""

    def __init__(self, message: str, err_code: int | None, current: int | None) -> None:
        super().__init__(message, err_code)
        self.current = current
        """The conflicting subject's sequence, when the server said (10071)."""


class BatchUnknown(BackendError):
    """The commit's reply did not arrive in time: the batch may or may not be stored. Read
    the records to know; sending it again is safe when every write names its expected
    sequence (a batch that did commit makes the second one conflict)."""


#: A ``Write``, or the plain tuple (subject, data, expected, headers).
WriteLike = Write | tuple[str, bytes, int | None, Mapping[str, str] | None]


async def publish_atomic(
    nc: NATS, writes: Sequence[WriteLike], timeout: float = COMMIT_TIMEOUT
) -> list[int]:
    """Publish ``writes`` as one atomic batch on the connection ``nc`` and return the stream
    sequence each was stored at, in order (consecutive: the batch is stored as one step).

    The messages before the last are published without a reply subject and the last with
    ``Nats-Batch-Commit: 1`` as a request, so the batch costs one round trip; nats-py sends
    them in order on one connection. A connection lost midway leaves the server with an
    incomplete batch, which it discards.

    Raises:
        ValueError: no writes, or more than ``MAX_BATCH``.
        BatchConflict: an expected sequence did not hold; nothing was stored.
        BatchError: the server refused the batch otherwise (the stream lacks
            ``allow_atomic``, too many batches in flight, an invalid TTL, ...); nothing
            was stored.
        BatchUnknown: no reply within ``timeout`` seconds; the outcome is unknown.
    """
    if not writes or len(writes) > MAX_BATCH:
        raise ValueError(f"an atomic batch holds 1 to {MAX_BATCH} messages, not {len(writes)}")
    batch = uuid.uuid4().hex
    last = len(writes)
    for number, write in enumerate(writes, 1):
        subject, data, expected, extra = write
        headers = dict(extra or {})
        headers[BATCH_ID] = batch
        headers[BATCH_SEQUENCE] = str(number)
        if expected is not None:
            headers[EXPECTED_SUBJECT_SEQUENCE] = str(expected)
        if number < last:
            await nc.publish(subject, data, headers=headers)
            continue
        headers[BATCH_COMMIT] = "1"
        try:
            reply = await nc.request(subject, data, timeout=timeout, headers=headers)
        except nats.errors.NoRespondersError:
            raise BatchError(f"no JetStream stream takes subject {subject!r}") from None
        except nats.errors.TimeoutError:
            raise BatchUnknown(
                f"no reply to the commit of atomic batch {batch} within {timeout:g} s: "
                "it may or may not have been stored"
            ) from None
    return _sequences(json.loads(reply.data), batch, last)


def _sequences(ack: dict[str, object], batch: str, count: int) -> list[int]:
    """The stream sequences of a committed batch, from the commit's PubAck; raises the
    error the reply names instead."""
    error = ack.get("error")
    if isinstance(error, dict):
        code = error.get("err_code")
        description = str(error.get("description", "refused"))
        message = f"atomic batch {batch} refused: {description} (JetStream error {code})"
        if code in (WRONG_LAST_SEQUENCE, WRONG_LAST_SEQUENCE_CONSTANT):
            found = _CURRENT.search(description)
            current = int(found.group(1)) if found else None
            raise BatchConflict(message, int(code), current)
        raise BatchError(message, code if isinstance(code, int) else None)
    last = ack.get("seq")
    stored = ack.get("count")
    if not isinstance(last, int) or stored != count or ack.get("batch") != batch:
        raise BatchError(f"atomic batch {batch}: unexpected reply to its commit: {ack}")
    return list(range(last - count + 1, last + 1))

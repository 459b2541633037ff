"""Changing records: one compare-and-set publish, or an atomic batch of them, and the bounded
retry that follows a refusal.

A write names the sequence its subject was at in the view (``Nats-Expected-Last-Subject-
Sequence``); the server refuses it if the subject moved on. Then the view was behind (or
a read on a replicated stream was not monotonic): ``attempt`` refreshes the subjects from
the server and runs the step again from the fresh view, at most ``CAS_ATTEMPTS`` times.
Each step decides anew from what it reads, so a retry never applies an outcome the fresh
record no longer allows (the fencing check is part of the step).
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeVar

import nats.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from pigeon.backends.nats.batch import (
    EXPECTED_SUBJECT_SEQUENCE,
    WRONG_LAST_SEQUENCE,
    WRONG_LAST_SEQUENCE_CONSTANT,
    BatchConflict,
    BatchError,
    Write,
    publish_atomic,
)
from pigeon.backends.nats.view import View, refresh
from pigeon.errors import BackendError

#: How many times one step is tried before it gives up (a conflict each time).
CAS_ATTEMPTS = 16
#: Seconds of the first back-off after a conflict (doubled each time, jittered).
BACKOFF = 0.001
#: Seconds to wait for a publish's acknowledgement.
PUBLISH_TIMEOUT = 5.0
#: Batches (or single publishes) of one call in flight at once (the server allows 50
#: atomic batches in flight per stream).
IN_FLIGHT = 32

T = TypeVar("T")


async def publish_one(
    nc: NATS,
    subject: str,
    data: bytes,
    expected: int | None = None,
    headers: Mapping[str, str] | None = None,
) -> int:
    """Publish one message to the stream and return its sequence.

    Raises BatchConflict when ``expected`` did not hold, BatchError for another refusal,
    BackendError when no acknowledgement came."""
    sent = dict(headers or {})
    if expected is not None:
        sent[EXPECTED_SUBJECT_SEQUENCE] = str(expected)
    try:
        reply = await nc.request(subject, data, timeout=PUBLISH_TIMEOUT, headers=sent or None)
    except nats.errors.NoRespondersError:
        raise BatchError(f"no JetStream stream takes subject {subject!r}") from None
    except nats.errors.TimeoutError:
        raise BackendError(f"no acknowledgement of a publish to {subject} in time") from None
    except nats.errors.Error as exc:  # connection closed, draining, reconnecting ...
        raise BackendError(f"publish to {subject} failed: {exc or type(exc).__name__}") from None
    ack = json.loads(reply.data)
    error = ack.get("error")
    if isinstance(error, dict):
        code = error.get("err_code")
        message = f"publish to {subject} refused: {error.get('description')} (error {code})"
        if code in (WRONG_LAST_SEQUENCE, WRONG_LAST_SEQUENCE_CONSTANT):
            raise BatchConflict(message, int(code), None)
        raise BatchError(message, code if isinstance(code, int) else None)
    seq = ack.get("seq")
    if not isinstance(seq, int):
        raise BatchError(f"unexpected acknowledgement of a publish to {subject}: {ack}")
    return seq


async def commit(nc: NATS, writes: Sequence[Write]) -> int:
    """Store ``writes`` (one publish, or one atomic batch for several) and return the last
    sequence stored. Raises BatchConflict as ``publish_atomic`` does."""
    if len(writes) == 1:
        w = writes[0]
        return await publish_one(nc, w.subject, w.data, w.expected, w.headers)
    return (await publish_atomic(nc, writes))[-1]


class Conflicted(Exception):
    """A step's writes were refused on every attempt."""


async def attempt(
    nc: NATS,
    view: View,
    js: JetStreamContext,
    step: Callable[[], Sequence[Write] | None],
) -> int | None:
    """Run ``step`` (which reads the view and returns the writes it decides on, or None for
    nothing to write) and commit its writes; on a conflict refresh their subjects and run
    it again. Returns the last sequence stored, None when the step wrote nothing.

    Raises BackendError after ``CAS_ATTEMPTS`` conflicts."""
    subject = "?"
    for tries in range(CAS_ATTEMPTS):
        writes = step()
        if not writes:
            return None
        subject = writes[0].subject
        try:
            return await commit(nc, writes)
        except BatchConflict:
            await refresh(js, view, (w.subject for w in writes))
        if tries:
            # contended (or a lagging replica): spread the writers out before they try again
            await asyncio.sleep(random.uniform(0, BACKOFF * 2 ** min(tries, 6)))
    raise BackendError(f"a change of {subject} conflicted {CAS_ATTEMPTS} times with other writers")


async def each(jobs: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
    """Run the jobs concurrently, at most ``IN_FLIGHT`` at a time, results in order."""
    if len(jobs) == 1:
        return [await jobs[0]()]
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def run(job: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await job()

    return list(await asyncio.gather(*(run(j) for j in jobs)))

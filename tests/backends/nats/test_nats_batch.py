"""Atomic batch publish (ADR-50) from nats-py, on the stream the backend opens: the step every
change of the NATS backend's records will be made of. Against the private nats-server 2.15."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from pigeon.backends.nats.batch import (
    BATCH_COMMIT,
    BATCH_ID,
    BATCH_SEQUENCE,
    TTL,
    WRONG_LAST_SEQUENCE,
    WRONG_LAST_SEQUENCE_CONSTANT,
    BatchConflict,
    BatchError,
    Write,
    publish_atomic,
)
from pigeon.backends.nats.connections import Opened, open_stream, parse_url


@pytest.fixture
async def opened(nats_url: str) -> AsyncIterator[Opened]:
    """The test's stream, created as the backend creates it."""
    opened = await open_stream(parse_url(nats_url), nats_url)
    try:
        yield opened
    finally:
        await opened.nc.close()


async def record(js: JetStreamContext, stream: str, subject: str) -> tuple[int, bytes] | None:
    """The subject's message as (sequence, data), or None when it has none."""
    try:
        msg = await js.get_last_msg(stream, subject)
    except NotFoundError:
        return None
    assert msg.seq is not None
    assert msg.data is not None
    return msg.seq, msg.data


async def records(opened: Opened, subjects: list[str]) -> list[tuple[int, bytes] | None]:
    name = opened.stream.config.name
    assert name is not None
    return [await record(opened.js, name, s) for s in subjects]


async def last_sequence(opened: Opened) -> int:
    name = opened.stream.config.name
    assert name is not None
    info = await opened.js.stream_info(name)
    return info.state.last_seq


def subjects(opened: Opened, *names: str) -> list[str]:
    return [f"{opened.stream.config.name}.{n}" for n in names]


async def test_a_batch_of_three_records_commits_together_at_consecutive_sequences(
    opened: Opened,
) -> None:
    a, b, c = subjects(opened, "m.a", "m.b", "key.c")
    seqs = await publish_atomic(
        opened.nc, [(a, b"A", 0, None), (b, b"B", 0, None), (c, b"C", 0, None)]
    )
    assert seqs == [seqs[0], seqs[0] + 1, seqs[0] + 2]
    assert await records(opened, [a, b, c]) == [(seqs[0], b"A"), (seqs[1], b"B"), (seqs[2], b"C")]
    # the batch headers are stored with each message (the commit's too)
    stored = await opened.js.get_last_msg(opened.stream.config.name or "", c)
    assert stored.headers is not None
    assert stored.headers[BATCH_SEQUENCE] == "3"
    assert stored.headers[BATCH_COMMIT] == "1"
    assert len(stored.headers[BATCH_ID]) == 32


async def test_nothing_of_a_batch_is_visible_before_its_commit(opened: Opened) -> None:
    a, b, c = subjects(opened, "a", "b", "c")
    nc = opened.nc
    for number, subject in enumerate([a, b], 1):
        headers = {BATCH_ID: "staged-1", BATCH_SEQUENCE: str(number)}
        await nc.publish(subject, subject.encode(), headers=headers)
    await nc.flush()
    assert await last_sequence(opened) == 0
    assert await records(opened, [a, b]) == [None, None]
    headers = {BATCH_ID: "staged-1", BATCH_SEQUENCE: "3", BATCH_COMMIT: "1"}
    ack = await nc.request(c, b"c", timeout=5, headers=headers)
    assert b'"batch":"staged-1"' in ack.data
    assert b'"count":3' in ack.data
    assert [r and r[0] for r in await records(opened, [a, b, c])] == [1, 2, 3]


async def test_one_stale_expected_sequence_rejects_the_whole_batch(opened: Opened) -> None:
    a, b, c = subjects(opened, "a", "b", "c")
    first = await publish_atomic(opened.nc, [Write(s, b"v1", 0) for s in (a, b, c)])
    # b moves on: a writer that read it at first[1] is now stale
    (moved,) = await publish_atomic(opened.nc, [Write(b, b"v2", first[1])])
    stale = [Write(a, b"v3", first[0]), Write(b, b"v3", first[1]), Write(c, b"v3", first[2])]
    with pytest.raises(BatchConflict) as raised:
        await publish_atomic(opened.nc, stale)
    assert raised.value.err_code == WRONG_LAST_SEQUENCE
    assert raised.value.current == moved
    assert await records(opened, [a, b, c]) == [
        (first[0], b"v1"),
        (moved, b"v2"),
        (first[2], b"v1"),
    ]
    assert await last_sequence(opened) == moved


async def test_expecting_zero_claims_a_subject_once(opened: Opened) -> None:
    message, key, other = subjects(opened, "m.1", "key.k", "m.2")
    await publish_atomic(opened.nc, [Write(message, b"1", 0), Write(key, b"m.1", 0)])
    with pytest.raises(BatchConflict):
        await publish_atomic(opened.nc, [Write(other, b"2", 0), Write(key, b"m.2", 0)])
    assert await records(opened, [other]) == [None]


async def test_a_subject_written_twice_in_a_batch_cannot_be_checked_the_second_time(
    opened: Opened,
) -> None:
    (a,) = subjects(opened, "a")
    with pytest.raises(BatchConflict) as raised:
        await publish_atomic(opened.nc, [Write(a, b"1"), Write(a, b"2", 0)])
    assert raised.value.err_code == WRONG_LAST_SEQUENCE_CONSTANT
    assert await records(opened, [a]) == [None]


async def test_a_record_with_a_ttl_expires_on_the_server(opened: Opened) -> None:
    kept, expiring = subjects(opened, "kept", "result")
    await publish_atomic(opened.nc, [Write(kept, b"k", 0), Write(expiring, b"r", 0, {TTL: "1"})])
    assert await records(opened, [expiring]) != [None]
    deadline = time.monotonic() + 10
    while await records(opened, [expiring]) != [None]:
        assert time.monotonic() < deadline, "the record outlived its TTL by 9 s"
        await asyncio.sleep(0.1)
    assert await records(opened, [kept]) != [None]


async def test_an_invalid_ttl_refuses_the_batch(opened: Opened) -> None:
    a, b = subjects(opened, "a", "b")
    with pytest.raises(BatchError) as raised:
        await publish_atomic(opened.nc, [Write(a, b"1", 0), Write(b, b"2", 0, {TTL: "500ms"})])
    assert not isinstance(raised.value, BatchConflict)
    assert await records(opened, [a, b]) == [None, None]


async def test_a_stream_without_allow_atomic_refuses_batches(nc: NATS, stream_name: str) -> None:
    await nc.jetstream().add_stream(name=stream_name, subjects=[f"{stream_name}.>"])
    with pytest.raises(BatchError) as raised:
        await publish_atomic(nc, [Write(f"{stream_name}.a", b"1")])
    assert raised.value.err_code == 10174  # atomic publish is disabled


async def test_a_subject_no_stream_takes_is_a_batch_error(nc: NATS) -> None:
    with pytest.raises(BatchError, match="no JetStream stream takes subject"):
        await publish_atomic(nc, [Write("nowhere.at.all", b"1")])


async def test_a_batch_holds_one_to_a_thousand_messages(nc: NATS) -> None:
    with pytest.raises(ValueError, match="1 to 1000 messages, not 0"):
        await publish_atomic(nc, [])
    with pytest.raises(ValueError, match="not 1001"):
        await publish_atomic(nc, [Write(f"s.{i}", b"") for i in range(1001)])

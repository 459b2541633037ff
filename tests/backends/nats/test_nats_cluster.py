"""The three-node cluster the NATS chaos tests will run on: an R3 stream opened as the backend
opens it keeps its records, and takes atomic batches, while one node (its leader) is
SIGKILLed, and again after that node restarts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from pigeon.backends.nats.batch import BatchConflict, Write, publish_atomic
from pigeon.backends.nats.connections import open_stream, parse_url
from tests.backends.nats.retrying import eventually as retrying
from tests.nats_servers import NatsCluster

T = TypeVar("T")

pytestmark = pytest.mark.slow


async def eventually(attempt: Callable[[], Awaitable[T]]) -> T:
    """``attempt()``'s result once it stops raising: a leader election takes a few seconds."""
    return await retrying(attempt, within=20.0)


async def leader_of(js: JetStreamContext, stream: str) -> str:
    info = await js.stream_info(stream)
    assert info.cluster is not None
    assert info.cluster.leader is not None
    return info.cluster.leader


async def all_current(js: JetStreamContext, stream: str) -> None:
    info = await js.stream_info(stream)
    assert info.cluster is not None
    peers = info.cluster.replicas or []
    assert len(peers) == 2
    assert all(p.current and not p.offline for p in peers), peers


async def test_an_r3_stream_survives_the_sigkill_of_its_leader(cluster: NatsCluster) -> None:
    url = f"{cluster.urls[0]}?stream=chaos&replicas=3"
    opened = await eventually(lambda: open_stream(parse_url(url), url))
    await opened.nc.close()
    assert opened.stream.config.num_replicas == 3

    nc = NATS()
    await nc.connect(servers=cluster.urls, reconnect_time_wait=0.2, max_reconnect_attempts=-1)
    try:
        js = nc.jetstream(timeout=2.0)

        async def publish_one() -> int:
            # a new R3 stream may not answer at once on a loaded machine (no responders)
            try:
                (seq,) = await publish_atomic(nc, [Write("chaos.m.1", b"one", 0)], timeout=2.0)
            except BatchConflict:  # an earlier try timed out but had committed
                msg = await js.get_last_msg("chaos", "chaos.m.1")
                assert msg.seq is not None
                seq = msg.seq
            return seq

        before = await eventually(publish_one)
        await eventually(lambda: all_current(js, "chaos"))
        leader = await leader_of(js, "chaos")

        cluster.kill(leader)
        moved = await eventually(lambda: leader_of(js, "chaos"))
        assert moved != leader
        msg = await eventually(lambda: js.get_last_msg("chaos", "chaos.m.1"))
        assert (msg.seq, msg.data) == (before, b"one")

        async def publish_two() -> int:
            try:
                (seq,) = await publish_atomic(nc, [Write("chaos.m.2", b"two", 0)], timeout=2.0)
            except BatchConflict:  # an earlier try timed out but had committed
                msg = await js.get_last_msg("chaos", "chaos.m.2")
                assert msg.data == b"two"
                assert msg.seq is not None
                seq = msg.seq
            return seq

        after = await eventually(publish_two)

        cluster.restart(leader)
        await eventually(lambda: all_current(js, "chaos"))
        msg = await js.get_last_msg("chaos", "chaos.m.2")
        assert (msg.seq, msg.data) == (after, b"two")
    finally:
        await nc.close()

"""The backend on an R3 stream of the three-node cluster: the stream leader is SIGKILLed in
the middle of the work and restarted, and nothing accepted is lost, no outcome is stale.
(The full chaos test of issue 18, 2,000 tasks with worker kills, is still to come.)"""

from __future__ import annotations

from functools import partial

import msgspec
import pytest

from pigeon.backends.nats import NatsBackend
from pigeon.message import Message, Outcome, QueueStats, new_id
from tests.backends.nats.retrying import eventually
from tests.nats_servers import NatsCluster

pytestmark = pytest.mark.slow


async def test_work_survives_a_sigkill_of_the_stream_leader(cluster: NatsCluster) -> None:
    stream = f"pigeon-test-{new_id()[-12:]}"
    probe = NatsBackend(f"{cluster.urls[0]}?stream={stream}&replicas=3")
    await eventually(probe.open)
    info = await probe.js.stream_info(stream)
    assert info.cluster is not None
    assert info.cluster.leader is not None
    leader = info.cluster.leader
    await probe.close()
    survivor = next(n for n in cluster.nodes if n.name != leader)
    backend = NatsBackend(f"{survivor.url}?stream={stream}&replicas=3")
    await eventually(backend.open)
    try:
        sent = [Message(new_id(), "t", queue="q") for _ in range(100)]
        await backend.enqueue(sent[:50])
        cluster.kill(leader)
        await eventually(lambda: backend.enqueue(sent[50:]))
        cluster.restart(leader)
        done: set[str] = set()
        while len(done) < len(sent):
            batch = await eventually(lambda: backend.fetch(["q"], 20, "w", wait=1.0))
            outcomes = [
                Outcome(d.id, d.attempt, "succeeded", value=msgspec.Raw(b"1")) for d in batch
            ]
            applied = await eventually(partial(backend.settle, outcomes))
            done |= {o.id for o, ok in zip(outcomes, applied, strict=True) if ok}
        results = await backend.results([m.id for m in sent])
        assert set(results) == {m.id for m in sent}
        assert (await backend.stats()).queues.get("q", QueueStats()) == QueueStats()
    finally:
        await backend.close()

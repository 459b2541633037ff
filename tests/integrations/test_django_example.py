"""The Django example (``examples/django/``), run as its README runs it: ``manage.py migrate``,
real worker processes (``manage.py pigeon worker -p 2``), and orders placed by
``manage.py place_orders``, 30% of whose transactions roll back.

Every committed order's task runs exactly once and finds its order; no rolled-back order's
task runs. On PostgreSQL and SQLite the sends are written through Django's own connection in
the order's transaction; with pigeon on another backend (Redis) they are sent on commit.
Each case is a process tree of its own (Django's settings are per process), on a database
of its own: a file, or a schema of the shared PostgreSQL server, or (for pigeon's default
on PostgreSQL, no ``PIGEON_URL``: schema ``pigeon`` of Django's database) a database of
the shared server, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

import pigeon
from pigeon.message import QueueStats
from tests.processes import ROOT, eventually
from tests.servers import BACKEND_URLS, RUN_ID, cleanup, make_url, require_server, scheme_of

EXAMPLE = ROOT / "examples" / "django"
ORDERS = 60
REJECTED = 0.3
PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"


@dataclass
class Project:
    """One installation of the example: its environment and pigeon's URL."""

    env: dict[str, str]
    pigeon_url: str
    follows: str  # "transaction" or "on_commit": how sends follow Django's transactions
    count_runs: Callable[[], list[tuple[str, bool]]]  # (order_ref, found) per run
    messages: str = "messages"  # pigeon's table of messages, as Django's connection names it

    def manage(self, *args: str, timeout: float = 60) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=EXAMPLE,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, f"manage.py {' '.join(args)}:\n{done.stderr}"
        return done.stdout


def _env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHOP_", "PIGEON_"))}
    return {**env, **values}


def _sqlite_runs(path: Path) -> list[tuple[str, bool]]:
    with sqlite3.connect(path, timeout=20) as db:
        rows = db.execute("SELECT order_ref, found FROM orders_fulfilment").fetchall()
    return [(str(uuid.UUID(ref)), bool(found)) for ref, found in rows]


def _pg_runs(schema: str, dsn: str = PG_DSN) -> list[tuple[str, bool]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(f'SELECT order_ref, found FROM "{schema}".orders_fulfilment')
        return [(str(ref), bool(found)) for ref, found in rows]


def _require_pg() -> None:
    templates = [u for u in BACKEND_URLS if scheme_of(u) in ("postgresql", "postgres")]
    if not templates:
        pytest.skip("postgresql is not among the backends under test")
    require_server(templates[0])


def _sqlite_project(tmp_path: Path) -> Iterator[Project]:
    path = tmp_path / "shop.sqlite3"
    # No PIGEON_URL: pigeon stores in the project's database, as settings.PIGEON says.
    env = _env(SHOP_DATABASE="sqlite", SHOP_SQLITE=str(path))
    yield Project(env, f"sqlite:///{path}", "transaction", lambda: _sqlite_runs(path))


def _pg_project(tmp_path: Path) -> Iterator[Project]:
    _require_pg()
    schema = f"pigeon_test_{RUN_ID}_django_{uuid.uuid4().hex[:8]}"
    url = f"{PG_DSN}?schema={schema}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')  # Django's tables and pigeon's, together
    env = _env(SHOP_DATABASE="postgresql", SHOP_PG_NAME="test", SHOP_PG_SCHEMA=schema)
    env["PIGEON_URL"] = url  # the same database, in the project's schema
    try:
        yield Project(env, url, "transaction", lambda: _pg_runs(schema), f'"{schema}".messages')
    finally:
        asyncio.run(cleanup(url))


def _pg_default_project(tmp_path: Path) -> Iterator[Project]:
    """No PIGEON_URL: pigeon's URL is derived from DATABASES["default"], and its tables go
    in the schema ``pigeon`` of Django's database (one of the test's own)."""
    _require_pg()
    name = f"pigeon_test_{RUN_ID}_django_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    env = _env(SHOP_DATABASE="postgresql", SHOP_PG_NAME=name)
    try:
        yield Project(env, url, "transaction", lambda: _pg_runs("public", url), "pigeon.messages")
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _redis_project(tmp_path: Path) -> Iterator[Project]:
    templates = [u for u in BACKEND_URLS if scheme_of(u) == "redis"]
    if not templates:
        pytest.skip("redis is not among the backends under test")
    url = make_url(templates[0], tmp_path)
    require_server(url)
    path = tmp_path / "shop.sqlite3"
    env = _env(SHOP_DATABASE="sqlite", SHOP_SQLITE=str(path), PIGEON_URL=url)
    try:
        yield Project(env, url, "on_commit", lambda: _sqlite_runs(path))
    finally:
        asyncio.run(cleanup(url))


PROJECTS = {
    "sqlite": _sqlite_project,
    "postgresql": _pg_project,
    "postgresql-default-url": _pg_default_project,
    "redis-on-commit": _redis_project,
}


@pytest.fixture(params=list(PROJECTS))
def project(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Project]:
    made = PROJECTS[request.param](tmp_path)
    project = next(made)
    project.manage("migrate", "--noinput")  # Django's tables, and pigeon's beside them
    yield project
    made.close()


@pytest.fixture
def workers(project: Project, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``manage.py pigeon worker -p 2``: a supervisor and two worker processes."""
    log = (tmp_path / "worker.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "pigeon", "worker", "-p", "2", "-c", "4", "--grace", "5"],
        cwd=EXAMPLE,
        env=project.env,
        stderr=log,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            log.close()


def queue_stats(url: str) -> QueueStats:
    async def read() -> QueueStats:
        app = pigeon.App(url)
        try:
            stats = await (await app.open()).stats()
        finally:
            await app.close()
        return stats.queues.get("default", QueueStats())

    return asyncio.run(read())


@pytest.mark.slow
def test_every_committed_order_is_fulfilled_once_and_no_rolled_back_one_is(
    project: Project, workers: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    placed = json.loads(project.manage("place_orders", str(ORDERS), "--reject", str(REJECTED)))
    committed, rolled_back = placed["committed"], placed["rolled_back"]
    assert len(rolled_back) == round(ORDERS * REJECTED)
    assert len(committed) == ORDERS - len(rolled_back)

    eventually(
        lambda: len(project.count_runs()) >= len(committed),
        "every committed order's task to run",
        timeout=60,
    )
    # Nothing is left that could still run: no message waits, is due or is leased.
    idle = QueueStats()
    eventually(lambda: queue_stats(project.pigeon_url) == idle, "the queue to be empty")
    runs = project.count_runs()

    times = Counter(ref for ref, _ in runs)
    assert times == Counter(committed), "a committed order ran other than exactly once"
    assert not set(times) & set(rolled_back), "a rolled-back order's task ran"
    assert all(found for _, found in runs), "a task ran before its order was committed"
    assert workers.poll() is None, (tmp_path / "worker.log").read_text()


# Inside atomic(), after the send: what Django's own connection sees of it, then after a
# rollback. Through the transaction, the message is already in pigeon's table as seen by
# Django's connection; on commit, it is only queued on the connection's commit hooks.
_PROBE = """
import json
from django.db import connection, transaction
from orders.models import Order
from orders.tasks import fulfil

def pigeon_messages():
    with connection.cursor() as cursor:
        cursor.execute('SELECT count(*) FROM {table}')
        return cursor.fetchone()[0]

class Rollback(Exception):
    pass

seen = {{}}
try:
    with transaction.atomic():
        Order.objects.create(item="probe")
        fulfil.send("00000000-0000-0000-0000-000000000000")
        seen["in_transaction"] = pigeon_messages()
        seen["on_commit"] = len(connection.run_on_commit)
        raise Rollback
except Rollback:
    pass
seen["after_rollback"] = pigeon_messages()
print(json.dumps(seen))
"""


def _probe(project: Project, table: str) -> dict[str, int]:
    out = project.manage("shell", "-c", _PROBE.format(table=table))
    return dict(json.loads(out.strip().splitlines()[-1]))  # after the shell's own lines


def test_a_send_inside_atomic_follows_the_transaction_as_documented(project: Project) -> None:
    if project.follows == "transaction":
        seen = _probe(project, project.messages)
        assert seen == {"in_transaction": 1, "on_commit": 0, "after_rollback": 0}
    else:
        # pigeon's store is elsewhere: count Django's own table instead, to keep the probe.
        seen = _probe(project, "orders_order")
        assert seen == {"in_transaction": 1, "on_commit": 1, "after_rollback": 0}
    assert queue_stats(project.pigeon_url) == QueueStats()  # the rolled-back send is gone


def test_manage_py_pigeon_runs_pigeon_verbs_on_the_project_app(project: Project) -> None:
    out = project.manage("pigeon", "status")
    assert "no queued messages" in out


_CONFIG_PROBE = """
import json
from pigeon.integrations.django import get_app
from pigeon.integrations.django.config import database_url, same_database

app = get_app()
print(json.dumps({
    "url": app.url,
    "follows": app.follows_database,
    "derived": database_url("default"),
    "elsewhere": same_database("postgresql://127.0.0.1:5433/test?schema=x", "default"),
    "tasks": sorted(app.tasks),
}))
"""


def test_the_app_is_made_from_settings_with_every_apps_tasks(project: Project) -> None:
    out = project.manage("shell", "-c", _CONFIG_PROBE)
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen["url"] == project.pigeon_url
    assert seen["follows"] == (project.follows == "transaction")
    assert seen["elsewhere"] is False
    assert seen["tasks"] == ["orders.tasks.fulfil"]  # autodiscovered: nothing imported it
    if project.env["SHOP_DATABASE"] == "postgresql":
        name = project.env["SHOP_PG_NAME"]
        assert seen["derived"] == f"postgresql://postgres@127.0.0.1:5432/{name}"
    else:
        assert seen["derived"] == f"sqlite:///{Path(project.env['SHOP_SQLITE']).resolve()}"

"""Django's databases under pigeon: a worker recycles Django's connections around each task
as Django does around a request, and a send inside ``atomic()`` that cannot be written in
the transaction (Django on psycopg2) is sent on commit, with a warning, as is one on SQLite
outside IMMEDIATE transactions.

Each case runs the probe project (``tests/integrations/django_probe/``) in processes of its
own (Django's settings are per process): a script that sends and reports what it saw as
JSON, and for the connections a real ``pigeon worker pigeon.integrations.django:app``. A
case that needs a database of its own gets one on the shared PostgreSQL server, dropped
afterwards; pigeon's own store is a file in the test's directory unless the case is about
pigeon storing in Django's database.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.processes import ROOT, Workers
from tests.servers import RUN_ID, require_server

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
SETTINGS = "tests.integrations.django_probe.settings"


def _postgresql(name: str = "test", **more: Any) -> dict[str, Any]:
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": name,
        "HOST": "127.0.0.1",
        "PORT": "5432",
        "USER": "postgres",
        **more,
    }


def _env(databases: dict[str, Any], pigeon: dict[str, Any] | None) -> dict[str, str]:
    """The probe project's environment: ``DATABASES``, and ``PIGEON`` unless None (then the
    project has no ``PIGEON`` setting)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PIGEON_", "PROBE_", "DJANGO_SETTINGS_MODULE"))
    }
    env.update(
        PYTHONPATH=str(ROOT),
        DJANGO_SETTINGS_MODULE=SETTINGS,
        PROBE_DATABASES=json.dumps(databases),
    )
    if pigeon is not None:
        env["PROBE_PIGEON"] = json.dumps(pigeon)
    return env


# Django set up, with what pigeon's Django integration logs kept in `kept.lines`; {before}
# runs first (before Django imports its database driver).
_PRELUDE = """
import json
import logging
{before}
import django

class Kept(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())

django.setup()
kept = Kept()
logging.getLogger("pigeon.django").addHandler(kept)
"""


def _script(env: dict[str, str], code: str, before: str = "") -> dict[str, Any]:
    """Run ``code`` in the probe project; what it printed last, as JSON."""
    done = subprocess.run(
        [sys.executable, "-c", _PRELUDE.format(before=before) + code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.fixture
def pg_server() -> None:
    require_server(PG_DSN)


@pytest.fixture
def pg_database(pg_server: None) -> Iterator[str]:
    """A database of the test's own on the shared PostgreSQL server, dropped after it."""
    name = f"pigeon_test_{RUN_ID}_django_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# Connections ----------------------------------------------------------------------------

# Sends `task` a few times, one after the other, to a worker with one thread: each result is
# [the backend pid of the connection the task used, the attempts that failed before].
# After the first `reused` runs, the first run's backend is terminated from outside, as a
# database restart or an administrator would, and waited for until gone.
_RUNS = """
import time

import psycopg

from tests.integrations.django_probe import tasks

task = getattr(tasks, {task!r})
runs = [task.send().result(timeout=30) for _ in range({reused})]
if {terminate!r}:
    with psycopg.connect({dsn!r}, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [runs[0][0]])
        deadline = time.monotonic() + 10
        while admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [runs[0][0]]
        ).fetchone()[0]:
            assert time.monotonic() < deadline, "the terminated backend is still there"
            time.sleep(0.02)
runs += [task.send().result(timeout=30) for _ in range({after})]
with psycopg.connect({dsn!r}, autocommit=True) as admin:
    alive_sql = "SELECT count(*) FROM pg_stat_activity WHERE pid = %s"
    alive = [pid for pid, _ in runs if admin.execute(alive_sql, [pid]).fetchone()[0]]
print(json.dumps({{"runs": runs, "alive": alive}}))
"""

TASKS = {"sync": "backend_pid", "async": "backend_pid_async"}


def _runs(
    tmp_path: Path,
    kind: str,
    database: dict[str, Any],
    *,
    reused: int,
    after: int,
    terminate: bool,
) -> dict[str, Any]:
    """A worker (one thread, one task at a time) runs the probe's ``backend_pid`` task (or
    its async twin) ``reused`` times, then, after the connection was terminated if
    ``terminate``, ``after`` times more (see ``_RUNS``)."""
    url = f"sqlite:///{tmp_path / 'pigeon.db'}"
    env = _env({"default": database}, {"url": url})
    workers = Workers(url, "pigeon.integrations.django:app", env=env)
    log = tmp_path / "worker.log"
    workers.start("-c", "1", "--no-scheduler", log=log)
    code = _RUNS.format(
        task=TASKS[kind], reused=reused, after=after, terminate=terminate, dsn=PG_DSN
    )
    try:
        return _script(env, code)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nworker log:\n{log.read_text()}") from None
    finally:
        workers.stop_all()


@pytest.mark.parametrize("kind", list(TASKS))
def test_a_task_after_its_connection_was_terminated_gets_a_new_one_with_health_checks(
    pg_server: None, tmp_path: Path, kind: str
) -> None:
    # Persistent connections, checked by Django when reused after close_old_connections:
    # the first task after the termination reconnects before its first query.
    database = _postgresql(CONN_MAX_AGE=None, CONN_HEALTH_CHECKS=True)
    seen = _runs(tmp_path, kind, database, reused=2, after=2, terminate=True)
    (first, _), (again, _), (fresh, failed), (last, _) = seen["runs"]
    assert first == again, "a persistent connection was not reused"
    assert fresh != first, "the terminated connection was used again"
    assert failed == 0, "the first task after the termination failed"
    assert last == fresh
    assert seen["alive"] == [fresh, last]


@pytest.mark.parametrize("kind", list(TASKS))
def test_a_connection_broken_under_a_task_is_closed_after_it_and_the_next_attempt_works(
    pg_server: None, tmp_path: Path, kind: str
) -> None:
    # Without health checks the first task after the termination meets the broken
    # connection (as a Django request would); closed after it, the retry connects afresh.
    database = _postgresql(CONN_MAX_AGE=None)
    seen = _runs(tmp_path, kind, database, reused=1, after=2, terminate=True)
    (first, _), (fresh, failed), (last, later_failed) = seen["runs"]
    assert failed == 1, "the attempt on the terminated connection did not fail: test is void"
    assert fresh != first
    assert (last, later_failed) == (fresh, 0)


@pytest.mark.parametrize("kind", list(TASKS))
def test_a_connection_past_conn_max_age_is_closed_after_the_task(
    pg_server: None, tmp_path: Path, kind: str
) -> None:
    # CONN_MAX_AGE = 0 (Django's default): a connection per task, closed after it, as
    # Django does per request; none is left open behind the worker.
    database = _postgresql(CONN_MAX_AGE=0)
    seen = _runs(tmp_path, kind, database, reused=3, after=0, terminate=False)
    pids = [pid for pid, _ in seen["runs"]]
    assert len(set(pids)) == 3, f"a connection outlived CONN_MAX_AGE: {pids}"
    deadline = time.monotonic() + 10
    with psycopg.connect(PG_DSN, autocommit=True) as admin:
        while True:
            alive = [
                pid
                for pid in pids
                if admin.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid]
                ).fetchone()
                != (0,)
            ]
            if not alive:
                break
            assert time.monotonic() < deadline, f"connections left open: {alive}"
            time.sleep(0.02)


# Sends that cannot be written in Django's transaction ------------------------------------

# Two sends inside atomic(): one rolled back, one committed; what was stored when, as pigeon
# sees it from its own connections (pending) and as Django's connection sees it in its
# transaction ({table}: pigeon's table of messages).
_SENDS = """
from django.core.management import call_command
from django.db import connection, transaction

from pigeon.integrations.django import get_app
from tests.integrations.django_probe.tasks import echo

call_command("migrate", verbosity=0)
app = get_app()


def pending():
    stats = app.call_sync(app.backend_call(lambda backend: backend.stats()))
    queue = stats.queues.get("default")
    return queue.pending if queue is not None else 0


def in_transaction():
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM {table}")
        return cursor.fetchone()[0]


class Rollback(Exception):
    pass


try:
    with transaction.atomic():
        echo.send("rolled back")
        raise Rollback
except Rollback:
    pass
with transaction.atomic():
    echo.send("committed")
    on_commit = len(connection.run_on_commit)
    pending_inside = pending()
    written_inside = in_transaction()
print(json.dumps({{
    "driver": connection.Database.__name__,
    "url": app.url,
    "follows": app.follows_database,
    "warnings": kept.lines,
    "on_commit": on_commit,
    "pending_inside": pending_inside,
    "written_inside": written_inside,
    "pending_after": pending(),
}}))
"""


def test_django_on_psycopg2_sends_on_commit_and_warns_once(pg_database: str) -> None:
    # No PIGEON setting: pigeon stores in Django's database (schema "pigeon"), but through
    # psycopg2 it cannot write in Django's transaction, so it sends on commit.
    env = _env({"default": _postgresql(pg_database)}, None)
    no_psycopg3 = "import sys\nsys.modules['psycopg'] = None  # Django falls back to psycopg2"
    seen = _script(env, _SENDS.format(table="pigeon.messages"), before=no_psycopg3)
    assert seen["driver"] == "psycopg2"
    assert seen["url"] == f"postgresql://postgres@127.0.0.1:5432/{pg_database}"
    assert seen["follows"] is True
    assert seen["warnings"] == [
        "Django's database 'default' is on psycopg2: sends are made on commit; install"
        " psycopg 3 to write them in the transaction"
    ]
    assert seen["on_commit"] == 1, "the send was not deferred to the commit"
    assert seen["pending_inside"] == seen["written_inside"] == 0, "stored before the commit"
    assert seen["pending_after"] == 1, "the committed send (only) is stored after the commit"


@pytest.mark.parametrize("mode", [None, "DEFERRED", "IMMEDIATE"])
def test_sqlite_outside_immediate_transactions_warns_once(tmp_path: Path, mode: str | None) -> None:
    options = {"timeout": 20} if mode is None else {"timeout": 20, "transaction_mode": mode}
    database = {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(tmp_path / "project.sqlite3"),
        "OPTIONS": options,
    }
    seen = _script(_env({"default": database}, {}), _SENDS.format(table="messages"))
    assert seen["url"] == f"sqlite:///{(tmp_path / 'project.sqlite3').resolve()}"
    assert seen["follows"] is True
    if mode == "IMMEDIATE":
        assert seen["warnings"] == []
    else:
        assert seen["warnings"] == [
            "DATABASES['default']['OPTIONS']['transaction_mode'] is not 'IMMEDIATE': a"
            " transaction that reads before it writes may fail with 'database is locked'"
            " while workers write (see the README, Django)"
        ]
    # Written through Django's connection either way: in the transaction, seen there only.
    assert seen["on_commit"] == 0
    assert seen["written_inside"] == 1
    assert seen["pending_inside"] == 0
    assert seen["pending_after"] == 1

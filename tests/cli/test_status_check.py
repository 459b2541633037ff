"""``pigeon status --check``: exit 1, naming the queue, when a queue has due work and no live
worker consumes it; 0 otherwise. On a SQLite file, with real worker processes."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from pigeon.message import WorkerInfo
from tests.cli.conftest import Processes, Project, eventually


def check(project: Project) -> tuple[int, str, str]:
    result = project.invoke("status", "--check", "--url", project.url)
    return result.exit_code, result.stdout, result.stderr


def test_status_check_fails_naming_the_queue_with_due_work_and_no_live_worker(
    project: Project,
) -> None:
    project.send(
        lambda t: [
            t.add.send(1, 2),
            t.add.send(3, 4),
            t.add.options(queue="mail", delay=600).send(5, 6),  # not due: not a problem
        ]
    )
    code, out, err = check(project)
    assert code == 1, out + err
    assert "queue default: 2 due messages and no live worker consumes it" in out
    assert "mail" not in out
    assert "1 queue not consumed: default" in err


def test_status_check_leaves_out_a_paused_queue(project: Project) -> None:
    project.send(lambda t: [t.add.send(1, 2), t.add.options(queue="mail").send(3, 4)])
    project.backend(lambda b: b.pause("mail", "a migration"))
    code, out, err = check(project)
    assert code == 1, out + err
    assert "queue default: 1 due message and no live worker consumes it" in out
    assert "mail" not in out + err


def test_status_check_passes_when_a_live_worker_consumes_the_queue(project: Project) -> None:
    project.send(lambda t: t.add.send(1, 2))
    worker = WorkerInfo("w-1", "host-a", 4242, ["mail", "default"], 8)
    project.backend(lambda b: b.heartbeat(worker, ttl=60))
    code, out, err = check(project)
    assert code == 0, out + err
    assert "ok: every queue with due work has a live worker (1 live worker)" in out


def test_status_check_of_an_empty_backend_passes(project: Project) -> None:
    code, out, err = check(project)
    assert code == 0, out + err


def test_status_check_with_a_real_worker_on_another_queue_names_the_unconsumed_one(
    project: Project, processes: Processes, tmp_path: Path
) -> None:
    log = (tmp_path / "worker.log").open("wb")
    worker = processes.add(
        project.pigeon("worker", project.spec, "-q", "mail", "--no-scheduler", stderr=log)
    )
    eventually(lambda: project.backend(lambda b: b.stats()).workers, "the worker's heartbeat")
    project.send(lambda t: [t.add.send(1, 2), t.add.options(queue="mail").send(3, 4)])

    def only_default_left() -> tuple[int, str, str] | None:
        code, out, err = check(project)
        return (code, out, err) if "mail" not in out else None  # the worker ran mail's

    code, out, err = eventually(only_default_left, "the mail message to be consumed")
    assert code == 1, out + err
    assert "queue default: 1 due message and no live worker consumes it" in out

    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    project.send(lambda t: t.add.options(queue="mail").send(5, 6))
    code, out, _ = check(project)  # the stopped worker retired its record
    assert code == 1
    assert "queue mail: 1 due message" in out


def test_status_check_runs_as_a_command_with_its_exit_code(project: Project) -> None:
    project.send(lambda t: t.add.send(1, 2))
    proc = project.pigeon(
        "status", "--check", "--url", project.url, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, out + err
    assert b"queue default" in out

"""pigeon send: arguments, options, task names, and --wait against a real worker process."""

from __future__ import annotations

import json
import signal
import subprocess
from typing import Any

from pigeon import codec
from tests.cli.conftest import Processes, Project, eventually


def sent_kwargs(project: Project, mid: str) -> Any:
    info = project.backend(lambda b: b.inspect(mid))
    assert info is not None
    assert info.body is not None
    return json.loads(bytes(codec.decode_message(info.body).kwargs))


def test_send_prints_the_id_of_the_stored_message(project: Project) -> None:
    result = project.invoke("send", project.spec, "t.add", "2", "3")

    assert result.exit_code == 0, result.stderr
    mid = result.stdout.strip()
    info = project.backend(lambda b: b.inspect(mid))
    assert info is not None
    assert (info.state, info.task, info.queue) == ("pending", "t.add", "default")
    assert sent_kwargs(project, mid) == {"a": 2, "b": 3}


def test_send_reads_each_arg_as_json_when_it_parses_else_as_a_string(project: Project) -> None:
    for arg, value in [
        ("hello world", "hello world"),
        ("42", 42),
        ('"42"', "42"),
        ("[1, 2.5, null]", [1, 2.5, None]),
        ('{"a": true}', {"a": True}),
        ("{not json", "{not json"),
    ]:
        result = project.invoke("send", project.spec, "echo", arg)
        assert result.exit_code == 0, result.stderr
        assert sent_kwargs(project, result.stdout.strip()) == {"value": value}


def test_send_options_kwargs_queue_delay_and_key(project: Project) -> None:
    args = ["send", project.spec, "add", "1", "--kwargs", '{"b": 2}', "--queue", "mail"]
    args += ["--delay", "60", "--key", "order-9"]

    first = project.invoke(*args)
    second = project.invoke(*args)

    assert first.exit_code == second.exit_code == 0, first.stderr + second.stderr
    mid = first.stdout.strip()
    assert second.stdout.strip() == mid  # the key made the second send return the first
    info = project.backend(lambda b: b.inspect(mid))
    assert info is not None
    assert (info.state, info.queue) == ("scheduled", "mail")
    assert sent_kwargs(project, mid) == {"a": 1, "b": 2}


def test_send_finds_a_task_by_its_short_name_unless_it_is_ambiguous(project: Project) -> None:
    assert project.invoke("send", project.spec, "whoami").exit_code == 0
    assert project.invoke("send", project.spec, "billing.notify", "ann").exit_code == 0

    ambiguous = project.invoke("send", project.spec, "notify", "ann")
    assert ambiguous.exit_code == 2
    assert "'notify' is ambiguous: it could be billing.notify, email.notify" in ambiguous.stderr

    unknown = project.invoke("send", project.spec, "nope")
    assert unknown.exit_code == 2
    assert "no task named 'nope'" in unknown.stderr
    assert "t.add" in unknown.stderr


def test_send_refuses_arguments_that_do_not_fit_the_task(project: Project) -> None:
    result = project.invoke("send", project.spec, "add", "one", "2")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "t.add()" in result.stderr


def test_send_wait_prints_the_result_or_the_remote_error_from_a_real_worker(
    project: Project, processes: Processes
) -> None:
    worker = processes.add(
        project.pigeon("worker", project.spec, "-c", "4", "--grace", "2", stderr=subprocess.PIPE)
    )

    done = project.invoke("send", project.spec, "add", "2", "3", "--wait", "--timeout", "20")
    assert done.exit_code == 0, done.stderr
    _mid, result = done.stdout.split()
    assert json.loads(result) == 5

    where = project.invoke("send", project.spec, "whoami", "--wait", "--timeout", "20")
    assert json.loads(where.stdout.split()[1]) == worker.pid  # it ran in the worker process

    failed = project.invoke("send", project.spec, "divide", "1", "0", "--wait", "--timeout", "20")
    assert failed.exit_code == 1
    assert "Traceback" in failed.stderr  # the remote traceback, then one line
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith("error: t.divide ")
    assert last.endswith("dead: ZeroDivisionError: float division by zero")

    worker.send_signal(signal.SIGTERM)
    assert worker.wait(15) == 0
    assert worker.stderr is not None
    assert b"stopped after 3 tasks" in worker.stderr.read()


def test_send_wait_gives_up_after_the_timeout_with_exit_code_1(project: Project) -> None:
    result = project.invoke("send", project.spec, "add", "1", "2", "--wait", "--timeout", "0.2")
    assert result.exit_code == 1
    mid = result.stdout.strip()
    assert f"no outcome for {mid} within 0.2 s" in result.stderr
    info = eventually(lambda: project.backend(lambda b: b.inspect(mid)), "the message")
    assert info.state == "pending"

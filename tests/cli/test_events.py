"""``pigeon events`` follows the event log; ``pigeon send --wait`` draws task progress."""

from __future__ import annotations

import json
import subprocess

import msgspec

from pigeon import cli
from pigeon.message import Event, Progress

from .conftest import Processes, Project, eventually


def test_events_prints_what_is_published_after_it_starts_as_json_lines(
    project: Project, processes: Processes
) -> None:
    project.backend(lambda b: b.publish([Event("sent", "before-it-started")]))
    follower = processes.add(
        project.pigeon(
            "events", "--json", "--for", "4", "--url", project.url,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
    )  # fmt: skip
    assert follower.stderr is not None
    assert b"following events" in follower.stderr.readline()
    published = [
        Event("started", "m1", "t.add", "default", 1.0, 1, "w1"),
        Event("dead", "m1", "t.add", "default", 2.0, 1, "w1", "ZeroDivisionError: boom"),
    ]
    project.backend(lambda b: b.publish(published))

    out, _ = follower.communicate(timeout=15)
    assert follower.returncode == 0
    lines = out.decode().splitlines()
    assert [msgspec.json.decode(line, type=Event) for line in lines] == published


def test_events_in_the_terminal_are_one_line_each(project: Project) -> None:
    line = cli.describe_event(
        Event("retried", "m1", "t.add", "default", 0.0, 2, "w1", "ValueError: x")
    )
    assert "retried" in line
    assert "t.add  m1  attempt=2  worker=w1  ValueError: x" in line


def test_the_progress_bar_follows_the_reports() -> None:
    bar = cli._ProgressBar("t.resize 1")  # not started: it draws nothing
    [row] = bar.progress.tasks
    assert row.total is None  # a spinner until the first fraction
    bar.update(Progress("1", 0.4, "resized 4/10"))
    [row] = bar.progress.tasks
    assert (row.total, row.completed, row.fields["text"]) == (1.0, 0.4, "resized 4/10")
    bar.update(Progress("1", None, "thinking"))
    [row] = bar.progress.tasks
    assert (row.total, row.completed, row.fields["text"]) == (1.0, 0.4, "thinking")


def test_send_wait_shows_progress_and_prints_the_result(
    project: Project, processes: Processes
) -> None:
    worker = processes.add(project.pigeon("worker", project.spec, "-c", "2", "--grace", "2"))
    done = project.invoke("send", project.spec, "steps", "3", "--wait", "--timeout", "20")
    assert done.exit_code == 0, done.stderr
    assert json.loads(done.stdout.split()[1]) == 3
    mid = done.stdout.split()[0]
    reports = project.backend(lambda b: b.progress([mid]))
    assert (reports[mid].fraction, reports[mid].text) == (1.0, "step 3/3")
    shown = project.invoke("inspect", mid, "--url", project.url)
    assert "progress  100% step 3/3" in shown.stdout
    worker.terminate()
    eventually(lambda: worker.poll() is not None, "the worker to stop")

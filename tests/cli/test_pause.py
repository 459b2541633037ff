"""``pigeon pause`` / ``pigeon resume`` and the paused column of ``pigeon status``, against a
SQLite file, through the CLI."""

from __future__ import annotations

import pytest

from pigeon.timetext import parse_duration
from tests.cli.conftest import Project
from tests.cli.test_control import cells, one_line


def test_pause_stops_fetches_and_status_shows_why_and_until_when(project: Project) -> None:
    project.send(lambda t: [t.add.send(1, 2), t.add.options(queue="mail").send(3, 4)])

    result = project.invoke(
        "pause", "default", "--for", "10m", "--reason", "deploying v2", "--url", project.url
    )

    assert result.exit_code == 0, result.stdout + result.stderr
    line = one_line(result.stdout)
    assert line.startswith("paused queue default until 20")
    assert "UTC (in 9m" in line or "UTC (in 10m" in line
    assert line.endswith(": deploying v2")
    paused = project.backend(lambda b: b.paused())
    assert list(paused) == ["default"]
    assert paused["default"].reason == "deploying v2"
    assert len(project.backend(lambda b: b.fetch(["default", "mail"], 10, "w"))) == 1  # mail's
    assert project.backend(lambda b: b.fetch(["default"], 10, "w")) == []

    status = project.invoke("status", "--url", project.url)
    assert status.exit_code == 0, status.stderr
    #                                          waiting scheduled pending leased dead paused
    row = cells(status.stdout, "default")
    assert row[:5] == ["0", "0", "1", "0", "0"]
    assert row[5].startswith("until 20")
    assert row[5].endswith(": deploying v2")
    assert cells(status.stdout, "mail")[:5] == ["0", "0", "0", "1", "0"]  # leased above


def test_resume_lets_the_queue_run_again(project: Project) -> None:
    project.send(lambda t: t.add.send(1, 2))
    assert project.invoke("pause", "default", "--url", project.url).exit_code == 0
    assert project.backend(lambda b: b.fetch(["default"], 10, "w")) == []

    result = project.invoke("resume", "default", "--url", project.url)

    assert result.exit_code == 0, result.stderr
    assert one_line(result.stdout) == "resumed queue default"
    assert project.backend(lambda b: b.paused()) == {}
    assert len(project.backend(lambda b: b.fetch(["default"], 10, "w"))) == 1
    again = project.invoke("resume", "default", "--url", project.url)
    assert again.exit_code == 0
    assert one_line(again.stdout) == "queue default was not paused"


def test_a_pause_without_for_lasts_until_resumed_and_a_queue_without_messages_shows(
    project: Project,
) -> None:
    result = project.invoke("pause", "reports", "--app", project.spec)

    assert result.exit_code == 0, result.stderr
    assert one_line(result.stdout) == "paused queue reports until resumed"
    status = project.invoke("status", project.spec)
    assert cells(status.stdout, "reports") == ["0", "0", "0", "0", "0", "until resumed"]


def test_pausing_again_changes_the_reason(project: Project) -> None:
    project.invoke("pause", "default", "--reason", "first", "--url", project.url)
    project.invoke("pause", "default", "--reason", "zweiter Grund: 🚧", "--url", project.url)

    status = project.invoke("status", "--url", project.url)

    assert cells(status.stdout, "default")[-1] == "until resumed: zweiter Grund: 🚧"


def test_status_without_a_paused_queue_has_no_paused_column(project: Project) -> None:
    project.send(lambda t: t.add.send(1, 2))

    status = project.invoke("status", "--url", project.url)

    assert "┃ paused" not in status.stdout
    assert cells(status.stdout, "default") == ["0", "0", "1", "0", "0"]


@pytest.mark.parametrize("bad", ["0", "-5m", "10 minutes", "m", "1x", "", "inf"])
def test_a_bad_duration_is_one_line_and_exit_2(project: Project, bad: str) -> None:
    result = project.invoke("pause", "default", "--for", bad, "--url", project.url)

    assert result.exit_code == 2
    assert "--for" in result.stderr
    assert project.backend(lambda b: b.paused()) == {}


def test_an_empty_queue_name_is_one_line_and_exit_2(project: Project) -> None:
    result = project.invoke("pause", "", "--url", project.url)

    assert result.exit_code == 2
    assert "needs a name" in one_line(result.stderr)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("90s", 90.0), ("10m", 600.0), ("1h30m", 5400.0), ("2d", 172800.0),
     ("0.5s", 0.5), ("1.5H", 5400.0)],
)  # fmt: skip
def test_durations_are_read_in_seconds_minutes_hours_and_days(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds

"""status, inspect, dlq, purge and cancel against a SQLite file, through the CLI."""

from __future__ import annotations

import datetime
import json
import time
from types import ModuleType

from pigeon import codec
from pigeon.message import WorkerInfo
from tests.cli.conftest import Project


def cells(output: str, first: str) -> list[str]:
    """The cells of the table row whose first cell is ``first``."""
    for line in output.splitlines():
        parts = [c.strip() for c in line.replace("┃", "│").split("│")]
        parts = [c for c in parts if c]
        if parts and parts[0] == first:
            return parts[1:]
    raise AssertionError(f"no row {first!r} in:\n{output}")


def field(output: str, label: str) -> str:
    """The value of one ``label   value`` line of ``pigeon inspect``."""
    for line in output.splitlines():
        if line.startswith(label + "  "):
            return line[len(label) :].strip()
    raise AssertionError(f"no {label!r} in:\n{output}")


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def test_status_counts_messages_by_queue_and_state_and_lists_live_workers(
    project: Project,
) -> None:
    project.send(
        lambda t: [
            t.add.send(1, 2),
            t.add.send(3, 4),
            t.add.options(delay=60).send(5, 6),
            t.add.options(queue="mail").send(7, 8),
        ]
    )
    worker = WorkerInfo("w-1", "host-a", 4242, ["default", "mail"], 8, running=3, done=17,
                        started_at=time.time() - 90)  # fmt: skip
    project.backend(lambda b: b.heartbeat(worker, ttl=60))

    for args in (["status", "--url", project.url], ["status", project.spec]):
        result = project.invoke(*args)
        assert result.exit_code == 0, result.stdout + result.stderr
        #                                    waiting scheduled pending leased dead
        assert cells(result.stdout, "default") == ["0", "1", "2", "0", "0"]
        assert cells(result.stdout, "mail") == ["0", "0", "1", "0", "0"]
        row = cells(result.stdout, "w-1")
        assert row[:5] == ["host-a", "4242", "default,mail", "3/8", "17"]
        assert row[5].startswith("1m3")  # up for about 90 s


def test_status_of_an_empty_backend_says_so(project: Project) -> None:
    result = project.invoke("status", "--url", project.url)
    assert result.exit_code == 0
    assert "no queued messages" in result.stdout
    assert "no live workers" in result.stdout


def test_inspect_shows_a_pending_message_and_its_arguments(project: Project) -> None:
    (mid,) = project.send(lambda t: t.add.options(key="order-7").send(2, 3))

    result = project.invoke("inspect", mid, "--url", project.url)

    assert result.exit_code == 0, result.stderr
    assert field(result.stdout, "state") == "pending"
    assert field(result.stdout, "task") == "t.add"
    assert field(result.stdout, "queue") == "default"
    assert json.loads(field(result.stdout, "kwargs")) == {"a": 2, "b": 3}
    assert field(result.stdout, "key") == "order-7"


def test_inspect_shows_when_a_message_was_sent_and_when_it_expires(project: Project) -> None:
    (mid,) = project.send(lambda t: t.add.options(expires=7200).send(1, 1))

    result = project.invoke("inspect", mid, "--url", project.url)

    assert result.exit_code == 0, result.stderr
    sent, expires = field(result.stdout, "sent"), field(result.stdout, "expires")
    assert sent.endswith(" ago)"), sent
    assert " UTC (in 1h59m" in expires or " UTC (in 2h00m" in expires, expires

    def stamp(text: str) -> datetime.datetime:
        return datetime.datetime.strptime(text.split(" UTC")[0], "%Y-%m-%d %H:%M:%S")

    # The relative expiry, resolved on the backend's clock from when it stored the message.
    assert abs((stamp(expires) - stamp(sent)).total_seconds() - 7200) <= 1


def test_inspect_shows_a_dead_letter_with_its_error_and_traceback(project: Project) -> None:
    (mid,) = project.dead_letters(1)

    result = project.invoke("inspect", mid, "--app", project.spec)

    assert result.exit_code == 0, result.stderr
    assert field(result.stdout, "state") == "dead"
    assert field(result.stdout, "error") == "ZeroDivisionError: float division by zero"
    assert "Traceback (most recent call last)" in result.stdout
    assert json.loads(field(result.stdout, "kwargs")) == {"a": 0, "b": 0}


def test_inspect_shows_a_cancel_requested_while_the_message_runs(project: Project) -> None:
    (mid,) = project.send(lambda t: t.add.send(1, 2))

    async def lease_and_cancel(tasks: ModuleType) -> None:
        backend = await tasks.app.open()
        assert [d.id for d in await backend.fetch(["default"], 1, "w")] == [mid]
        assert await backend.cancel([mid]) == []  # running: its worker is told instead

    project.run(lease_and_cancel)
    result = project.invoke("inspect", mid, "--url", project.url)

    assert result.exit_code == 0, result.stderr
    assert field(result.stdout, "state") == "leased"
    assert field(result.stdout, "cancel") == "requested: its worker is stopping it"


def test_inspect_of_an_unknown_id_fails_with_one_line(project: Project) -> None:
    result = project.invoke("inspect", "no-such-id", "--url", project.url)
    assert result.exit_code == 1
    assert "no message no-such-id" in one_line(result.stderr)


def test_dlq_list_requeue_and_purge(project: Project) -> None:
    first, second = project.dead_letters(2)

    listed = project.invoke("dlq", "list", "--url", project.url)
    assert listed.exit_code == 0, listed.stderr
    assert cells(listed.stdout, first)[:2] == ["default", "t.divide"]
    assert "ZeroDivisionError" in cells(listed.stdout, second)[-1]

    requeued = project.invoke("dlq", "requeue", first, "--url", project.url)
    assert requeued.exit_code == 0, requeued.stderr
    assert "requeued 1 message" in requeued.stdout
    info = project.backend(lambda b: b.inspect(first))
    assert info is not None
    assert info.state == "pending"

    refused = project.invoke("dlq", "purge", "--url", project.url)
    assert refused.exit_code == 2
    assert "--yes" in one_line(refused.stderr)
    assert project.backend(lambda b: b.stats()).dead == 1

    purged = project.invoke("dlq", "purge", "--yes", "--url", project.url)
    assert purged.exit_code == 0, purged.stderr
    assert "purged 1 dead letter" in purged.stdout
    assert project.backend(lambda b: b.stats()).dead == 0
    assert "no dead letters" in project.invoke("dlq", "list", "--url", project.url).stdout


def test_dlq_requeue_all_moves_every_dead_letter_back(project: Project) -> None:
    ids = project.dead_letters(3)

    result = project.invoke("dlq", "requeue", "--all", "--url", project.url)

    assert result.exit_code == 0, result.stderr
    assert "requeued 3 messages" in result.stdout
    stats = project.backend(lambda b: b.stats())
    assert (stats.dead, stats.queues["default"].pending) == (0, 3)
    infos = [project.backend(lambda b, mid=mid: b.inspect(mid)) for mid in ids]
    assert [i.state for i in infos if i is not None] == ["pending"] * 3


def test_dlq_requeue_of_an_id_that_is_not_a_dead_letter_fails(project: Project) -> None:
    (mid,) = project.send(lambda t: t.add.send(1, 2))
    result = project.invoke("dlq", "requeue", mid, "--url", project.url)
    assert result.exit_code == 1
    assert "not dead letters" in one_line(result.stderr)


def test_purge_deletes_the_waiting_messages_of_one_queue_only(project: Project) -> None:
    project.send(
        lambda t: [t.add.send(1, 2), t.add.send(3, 4), t.add.options(queue="mail").send(5, 6)]
    )

    refused = project.invoke("purge", "default", "--url", project.url)
    assert refused.exit_code == 2
    assert "--yes" in one_line(refused.stderr)

    result = project.invoke("purge", "default", "--yes", "--url", project.url)
    assert result.exit_code == 0, result.stderr
    assert "purged 2 messages from queue default" in result.stdout
    queues = project.backend(lambda b: b.stats()).queues
    assert queues.get("default") is None or queues["default"].pending == 0
    assert queues["mail"].pending == 1


def test_cancel_cancels_messages_not_started_and_names_the_others(project: Project) -> None:
    (waiting,) = project.send(lambda t: t.add.options(delay=60).send(1, 2))
    (dead,) = project.dead_letters(1)

    result = project.invoke("cancel", waiting, dead, "nope", "--url", project.url)

    assert result.exit_code == 1
    assert f"cancelled {waiting}" in result.stdout
    assert f"{dead}: it is dead" in result.stderr
    assert "nope: unknown id" in result.stderr
    assert "2 of 3 messages were not cancelled" in result.stderr
    outcome = project.backend(lambda b: b.results([waiting]))[waiting]
    assert outcome.state == "cancelled"


def test_inspect_decodes_the_arguments_the_cli_sent(project: Project) -> None:
    sent = project.invoke("send", project.spec, "echo", '{"deep": [1, 2.5, null]}')
    mid = sent.stdout.strip()
    info = project.backend(lambda b: b.inspect(mid))
    assert info is not None
    assert info.body is not None
    message = codec.decode_message(info.body)
    assert json.loads(bytes(message.kwargs)) == {"value": {"deep": [1, 2.5, None]}}

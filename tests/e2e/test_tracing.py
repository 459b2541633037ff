"""OpenTelemetry traces across processes: a sender process and a worker process, each with
the SDK exporting its spans to a file; one trace joins the sender's spans, both attempts
of a message that is retried, and its follow-up's attempt (linked to their creation
contexts by default, children of them with ``trace_parent="child"``). A follow-up and a
join attached in another trace link to their parents' sends too (a join to each member's).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.processes import ROOT, Workers, eventually

pytest.importorskip("opentelemetry.sdk.trace")

APP = "tests.e2e.tracing_app"


@pytest.fixture
def url(shared_url: str) -> str:
    """Every backend worker processes can share (SQLite in a tmp path, Redis, PostgreSQL)."""
    return shared_url


def read(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def send(url: str, spans: Path, trace_parent: str) -> str:
    """Run the sender process; what it printed (the outcomes it waited for)."""
    env = {
        **os.environ,
        "PIGEON_URL": url,
        "PYTHONPATH": str(ROOT),
        "TRACE_FILE": str(spans),
        "TRACE_PARENT": trace_parent,
    }
    done = subprocess.run(
        [sys.executable, "-m", APP], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def worker_spans(tmp_path: Path) -> Path:
    return tmp_path / "worker.jsonl"


@pytest.fixture
def workers(url: str, worker_spans: Path, request: pytest.FixtureRequest) -> Iterator[Workers]:
    env = {"TRACE_FILE": str(worker_spans), "TRACE_PARENT": request.param}
    w = Workers(url, f"{APP}:app", env)
    w.start("-c", "4")
    yield w
    w.stop_all()


def by_name(spans: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [s for s in spans if s["name"] == name]


def processed(worker_spans: Path) -> list[dict[str, Any]] | None:
    """The worker's seven process spans, once exported: two attempts of ``flaky``, its
    follow-up, two members, their join and the join's follow-up."""
    spans = [s for s in read(worker_spans) if s["name"].startswith("process ")]
    return spans if len(spans) == 7 else None


def linked(span: dict[str, Any]) -> list[tuple[str, str]]:
    return [(trace_id, span_id) for trace_id, span_id in span["links"]]


def ctx(span: dict[str, Any]) -> tuple[str, str]:
    return span["trace_id"], span["span_id"]


@pytest.mark.parametrize("workers", ["link", "child"], indirect=True)
def test_one_trace_joins_the_send_both_attempts_the_follow_up_and_the_join(
    url: str, workers: Workers, worker_spans: Path, tmp_path: Path
) -> None:
    trace_parent = workers.env["TRACE_PARENT"]
    sender_spans = tmp_path / "sender.jsonl"
    assert send(url, sender_spans, trace_parent) == "ok done: ok 3"
    sent = read(sender_spans)
    [request] = by_name(sent, "request")
    [later] = by_name(sent, "later")
    assert later["trace_id"] != request["trace_id"]
    sends = by_name(sent, "send default")
    assert len(sends) == 5  # flaky, two members; then, in `later`: the follow-up, the join
    for span in sends:
        assert span["kind"] == "PRODUCER"
    first = [s for s in sends if s["parent"] == request["span_id"]]
    assert {s["trace_id"] for s in first} == {request["trace_id"]}
    by_id = {s["attributes"]["messaging.message.id"]: s for s in first}
    [then_send, join_send] = sorted(
        (s for s in sends if s["parent"] == later["span_id"]),
        key=lambda s: s["attributes"].get("messaging.batch.message_count", 1),
    )
    assert join_send["attributes"]["messaging.batch.message_count"] == 2  # the join, its then

    spans = eventually(lambda: processed(worker_spans), "the worker's process spans")
    attempts = sorted(
        by_name(spans, "process tr.flaky"), key=lambda s: s["attributes"]["pigeon.attempt"]
    )
    [follow_up] = by_name(spans, "process tr.done")
    members = by_name(spans, "process tr.member")
    [join] = by_name(spans, "process pigeon.join")
    [join_follow_up] = by_name(spans, "process tr.total")
    assert [a["attributes"]["pigeon.outcome"] for a in attempts] == ["retried", "succeeded"]
    assert attempts[0]["status"] == "ERROR"
    for span in [follow_up, join, join_follow_up, *members]:
        assert span["attributes"]["pigeon.outcome"] == "succeeded"
    flaky_id = attempts[0]["attributes"]["messaging.message.id"]
    assert follow_up["attributes"]["pigeon.after"] == flaky_id
    assert (
        join_follow_up["attributes"]["pigeon.after"] == join["attributes"]["messaging.message.id"]
    )
    flaky_created = ctx(by_id[flaky_id])
    member_created = {ctx(by_id[m["attributes"]["messaging.message.id"]]) for m in members}
    assert len(member_created) == 2

    def own(span: dict[str, Any], created: tuple[str, str]) -> list[tuple[str, str]]:
        """The span's links besides its parents': its creation context when linked."""
        if trace_parent == "link":
            assert span["parent"] is None
            assert span["trace_id"] != created[0]  # a trace of its own
            return [created]
        assert (span["trace_id"], span["parent"]) == created
        return []

    # The sender's spans, both attempts (the retry links to the same send) and the members
    for span in [*attempts, *members]:
        created = ctx(by_id[span["attributes"]["messaging.message.id"]])
        assert linked(span) == own(span, created)
    # A follow-up, attached in another trace, links to its parent's send as well...
    assert linked(then_send) == [flaky_created]
    assert linked(follow_up) == [*own(follow_up, ctx(then_send)), flaky_created]
    # ...and a join, and its follow-up, to each member's.
    assert set(linked(join_send)) == member_created
    for span in (join, join_follow_up):
        mine, links = own(span, ctx(join_send)), linked(span)
        assert links[: len(mine)] == mine
        assert len(links) == len(mine) + 2
        assert set(links[len(mine) :]) == member_created
    # One trace id joins the sender's request, both attempts, the follow-up and the join.
    for span in [*attempts, follow_up, join, join_follow_up]:
        reached = {t for t, _ in linked(span)} | {span["trace_id"]}
        assert request["trace_id"] in reached, span["name"]

"""OpenTelemetry traces across processes: a sender process and a worker process, each with
the SDK exporting its spans to a file; one trace joins the sender's spans, both attempts
of a message that is retried, and its follow-up's attempt (linked to their creation
contexts by default, children of them with ``trace_parent="child"``)."""

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
    """The worker's three process spans (two attempts and the follow-up), once exported."""
    spans = [s for s in read(worker_spans) if s["name"].startswith("process ")]
    return spans if len(spans) == 3 else None


@pytest.mark.parametrize("workers", ["link", "child"], indirect=True)
def test_one_trace_joins_the_send_both_attempts_and_the_follow_up(
    url: str, workers: Workers, worker_spans: Path, tmp_path: Path
) -> None:
    trace_parent = workers.env["TRACE_PARENT"]
    sender_spans = tmp_path / "sender.jsonl"
    assert send(url, sender_spans, trace_parent) == "ok done: ok"
    sent = read(sender_spans)
    [request] = by_name(sent, "request")
    sends = by_name(sent, "send default")
    assert len(sends) == 2  # the message, and its follow-up (sent by `.then`)
    for span in sends:
        assert span["kind"] == "PRODUCER"
        assert span["trace_id"] == request["trace_id"]
        assert span["parent"] == request["span_id"]
    spans = eventually(lambda: processed(worker_spans), "the worker's process spans")
    attempts = sorted(
        by_name(spans, "process tr.flaky"), key=lambda s: s["attributes"]["pigeon.attempt"]
    )
    [follow_up] = by_name(spans, "process tr.done")
    assert [a["attributes"]["pigeon.outcome"] for a in attempts] == ["retried", "succeeded"]
    assert attempts[0]["status"] == "ERROR"
    assert follow_up["attributes"]["pigeon.outcome"] == "succeeded"
    flaky_id = attempts[0]["attributes"]["messaging.message.id"]
    assert follow_up["attributes"]["pigeon.after"] == flaky_id
    created = {s["attributes"]["messaging.message.id"]: s for s in sends}
    joined = set()
    for span in [*attempts, follow_up]:
        creation = created[span["attributes"]["messaging.message.id"]]
        if trace_parent == "link":
            assert span["parent"] is None
            assert span["links"] == [[creation["trace_id"], creation["span_id"]]]
            joined.add(span["links"][0][0])
        else:
            assert span["parent"] == creation["span_id"]
            assert span["links"] == []
            joined.add(span["trace_id"])
    assert joined == {request["trace_id"]}

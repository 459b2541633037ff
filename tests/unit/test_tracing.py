"""pigeon.tracing in one process: nothing loaded while it is off, the trace context injected
into the headers and covered by the signature, send, process and settle spans, links or
parents, and the observers of metrics and tracing combined."""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

import pigeon
from pigeon import codec, metrics
from pigeon.message import Delivery, Message, Outcome
from pigeon.signing import Signer
from pigeon.tracing import Tracing
from pigeon.worker import Worker
from pigeon.worker.observer import Observers, combine
from pigeon.worker.tracing import WorkerTracing

sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
export = pytest.importorskip("opentelemetry.sdk.trace.export")
in_memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")
from opentelemetry import trace  # noqa: E402

SECRET = "a secret of at least sixteen bytes"


class Spans:
    """A tracer provider of the test's own (the global one is left alone) and its spans."""

    def __init__(self) -> None:
        self.exporter = in_memory.InMemorySpanExporter()
        self.provider = sdk_trace.TracerProvider()
        self.provider.add_span_processor(export.SimpleSpanProcessor(self.exporter))

    def use(self, app: pigeon.App) -> pigeon.App:
        assert app.tracing is not None
        app.tracing.tracer = self.provider.get_tracer("pigeon")
        return app

    def named(self, prefix: str) -> list[Any]:
        return [s for s in self.exporter.get_finished_spans() if s.name.startswith(prefix)]


@pytest.fixture
def spans() -> Iterator[Spans]:
    s = Spans()
    yield s
    s.provider.shutdown()


def traceparent(span: Any) -> str:
    c = span.get_span_context()
    return f"00-{c.trace_id:032x}-{c.span_id:016x}-{c.trace_flags:02x}"


async def stored(app: pigeon.App, n: int) -> list[Message]:
    backend = await app.open()
    deliveries = await backend.fetch(["default"], n, "test", wait=1.0)
    return [codec.decode_message(d.body) for d in deliveries]


def test_nothing_of_opentelemetry_is_imported_while_tracing_is_off() -> None:
    code = """
import asyncio, sys, pigeon
from pigeon.worker import Worker

app = pigeon.App("memory://")

@app.task(name="t.add")
async def add(a: int, b: int) -> int:
    return a + b

@app.task(name="t.double")
async def double(n: int) -> int:
    return 2 * n

async def main() -> None:
    promise = add.send(1, 2)
    then = promise.then(double)
    assert await Worker(app, max_tasks=2).run() == 0
    assert await then == 6
    assert promise._created is None and then._created is None
    await app.close()

asyncio.run(main())
print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


async def test_a_send_injects_its_span_into_the_headers_and_the_signature_covers_them(
    spans: Spans,
) -> None:
    app = spans.use(pigeon.App("memory://", tracing=True, secret=SECRET))
    add = app.task(name="t.add")(_add)
    await add.send(1, 2).sent()
    [send] = spans.named("send")
    assert send.name == "send default"
    assert send.kind == trace.SpanKind.PRODUCER
    [m] = await stored(app, 1)
    assert dict(send.attributes) == {
        "messaging.system": "pigeon",
        "messaging.destination.name": "default",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.message.id": m.id,
    }
    assert m.headers["traceparent"] == traceparent(send)
    signer = Signer([SECRET])
    assert signer.check(m) is None
    forged = {**m.headers, "traceparent": f"00-{'1' * 32}-{'2' * 16}-01"}
    assert signer.check(msgspec.structs.replace(m, headers=forged)) is not None
    stripped = {k: v for k, v in m.headers.items() if k != "traceparent"}
    assert signer.check(msgspec.structs.replace(m, headers=stripped)) is not None
    await app.close()


def test_a_message_without_trace_headers_is_signed_as_before() -> None:
    signer = Signer([SECRET])
    m = Message("an-id", "t.add", headers={"pigeon-tick": "1"})
    digest = signer._digest(signer._sign_key, m)
    expected = signer._sign_key.hexdigest(
        msgspec.json.encode((m.id, m.task, m.args, m.kwargs, m.after, m.mode, m.join))
    )
    assert digest == expected


async def test_a_bulk_send_is_one_span_whose_context_every_message_carries(
    spans: Spans,
) -> None:
    app = spans.use(pigeon.App("memory://", tracing=True))
    add = app.task(name="t.add")(_add)
    add.send_many([(i, i) for i in range(3)])
    await app.flush()
    [send] = spans.named("send")
    assert send.attributes["messaging.batch.message_count"] == 3
    assert "messaging.message.id" not in send.attributes
    messages = await stored(app, 3)
    assert [m.headers["traceparent"] for m in messages] == [traceparent(send)] * 3
    await app.close()


async def test_a_send_made_inside_a_span_belongs_to_its_trace(spans: Spans) -> None:
    app = spans.use(pigeon.App("memory://", tracing=True))
    add = app.task(name="t.add")(_add)
    with spans.provider.get_tracer("test").start_as_current_span("request") as request:
        await add.send(1, 2).sent()
    [send] = spans.named("send")
    assert send.parent.span_id == request.get_span_context().span_id
    await app.close()


async def _attempts(spans: Spans, trace_parent: str) -> tuple[Any, list[Any], list[Any]]:
    """Send a task that fails once, run both attempts; its send, process, settle spans."""
    app = spans.use(pigeon.App("memory://", tracing=True, trace_parent=trace_parent))  # type: ignore[arg-type]
    flaky = app.task(name="t.flaky", retries=1, retry_backoff=0.001, retry_backoff_max=0.001)(
        _flaky
    )
    promise = flaky.send()
    assert await Worker(app, max_tasks=2).run() == 0
    assert await promise == "ok"
    await app.close()
    [send] = spans.named("send")
    process = sorted(spans.named("process"), key=lambda s: s.attributes["pigeon.attempt"])
    return send, process, spans.named("settle")


async def test_each_attempt_is_a_process_span_linked_to_the_creation_context(
    spans: Spans,
) -> None:
    send, process, settle = await _attempts(spans, "link")
    assert [s.name for s in process] == ["process t.flaky", "process t.flaky"]
    first, second = process
    for span in process:
        assert span.kind == trace.SpanKind.CONSUMER
        assert span.parent is None  # a trace of its own
        [link] = span.links
        assert (link.context.trace_id, link.context.span_id) == (
            send.context.trace_id,
            send.context.span_id,
        )
        assert span.attributes["messaging.operation.type"] == "process"
        assert span.attributes["messaging.message.id"] == send.attributes["messaging.message.id"]
    assert first.attributes["pigeon.outcome"] == "retried"
    assert first.status.status_code == trace.StatusCode.ERROR
    assert first.attributes["error.type"] == "KeyError"
    assert [e.name for e in first.events] == ["exception"]
    assert second.attributes["pigeon.outcome"] == "succeeded"
    assert second.status.status_code == trace.StatusCode.UNSET
    linked = {link.context.span_id for s in settle for link in s.links}
    assert linked == {s.get_span_context().span_id for s in process}
    assert all(s.attributes["messaging.operation.type"] == "settle" for s in settle)


async def test_with_trace_parent_child_each_attempt_is_a_child_of_the_send(
    spans: Spans,
) -> None:
    send, process, _ = await _attempts(spans, "child")
    assert len(process) == 2
    for span in process:
        assert span.parent.span_id == send.get_span_context().span_id
        assert span.context.trace_id == send.context.trace_id
        assert span.links == ()


def test_observers_are_combined_only_when_more_than_one_is_on() -> None:
    tracing = WorkerTracing(Tracing())
    assert combine(None, None) is None
    assert combine(None, tracing) is tracing
    both = combine(tracing, tracing)
    assert isinstance(both, Observers)
    assert both.observers == [tracing, tracing]


async def test_metrics_and_tracing_both_observe_one_worker(spans: Spans) -> None:
    prometheus_client = pytest.importorskip("prometheus_client")
    registry = prometheus_client.CollectorRegistry()
    app = spans.use(pigeon.App("memory://", tracing=True))
    add = app.task(name="t.add")(_add)
    promise = add.send(1, 2)
    worker = Worker(app, max_tasks=1, observer=metrics.WorkerMetrics(registry))
    assert isinstance(worker.observer, Observers)
    assert await worker.run() == 0
    assert await promise == 3
    await app.close()
    [span] = spans.named("process")
    assert span.attributes["pigeon.outcome"] == "succeeded"
    labels = {"queue": "default", "task": "t.add", "outcome": "succeeded"}
    assert registry.get_sample_value("pigeon_messages_total", labels) == 1


async def test_a_worker_of_an_app_without_tracing_settles_unwrapped() -> None:
    app = pigeon.App("memory://")
    worker = Worker(app)
    assert worker.observer is None
    backend = await app.open()
    session = worker._start_session(backend)
    try:
        assert session.process == session.executor.process
    finally:
        session.executor.shutdown()
        session.gate.close()
        await app.close()


def context_of(span: Any) -> tuple[int, int]:
    c = span.get_span_context() if hasattr(span, "get_span_context") else span.context
    return c.trace_id, c.span_id


def linked(span: Any) -> list[tuple[int, int]]:
    return [(link.context.trace_id, link.context.span_id) for link in span.links]


async def test_a_chain_of_follow_ups_links_each_to_its_parents_send(spans: Spans) -> None:
    app = spans.use(pigeon.App("memory://", tracing=True, secret=SECRET))
    add = app.task(name="t.add")(_add)
    inc = app.task(name="t.inc")(_inc)
    first = add.send(1, 2)
    second = first.then(inc)
    third = second.then(inc)
    assert await Worker(app, max_tasks=3).run() == 0  # signed links verify
    assert await third == 5
    await app.close()
    sends = {s.attributes.get("messaging.message.id"): s for s in spans.named("send")}
    process = {s.attributes["messaging.message.id"]: s for s in spans.named("process")}
    chain = [first.id, second.id, third.id]
    assert linked(sends[chain[0]]) == []
    for parent, child in itertools.pairwise(chain):
        assert linked(sends[child]) == [context_of(sends[parent])]
        assert [link.attributes.get("pigeon.link") for link in process[child].links] == [
            None,
            "parent",
        ]
        assert linked(process[child]) == [context_of(sends[child]), context_of(sends[parent])]
    assert linked(process[chain[0]]) == [context_of(sends[chain[0]])]


def test_the_signature_covers_a_follow_ups_links_to_its_parents() -> None:
    signer = Signer([SECRET])
    links = f"{'1' * 32}-{'2' * 16}-01"
    headers = {"traceparent": f"00-{'3' * 32}-{'4' * 16}-01", "pigeon-links": links}
    m = signer.sign(Message("an-id", "t.inc", after="parent", mode="then", headers=headers))
    assert signer.check(m) is None
    forged = {**m.headers, "pigeon-links": f"{'5' * 32}-{'6' * 16}-01"}
    assert signer.check(msgspec.structs.replace(m, headers=forged)) is not None
    stripped = {k: v for k, v in m.headers.items() if k != "pigeon-links"}
    assert signer.check(msgspec.structs.replace(m, headers=stripped)) is not None


def test_malformed_parent_links_are_skipped(spans: Spans) -> None:
    tracing = Tracing()
    tracing.tracer = spans.provider.get_tracer("pigeon")
    good = f"{'a' * 32}-{'b' * 16}-01"
    value = f"zz-1-01,{good},{'0' * 32}-{'0' * 16}-01,,{'c' * 32}"
    m = Message("an-id", "t.inc", headers={"pigeon-links": value})
    span = tracing.start_process(Delivery("an-id", 1, 0, codec.encode_message(m)))
    tracing.end_process(span, Outcome("an-id", 1, "succeeded"))
    [done] = spans.named("process")
    assert linked(done) == [(int("a" * 32, 16), int("b" * 16, 16))]


def test_an_undecodable_message_still_gets_a_process_span(spans: Spans) -> None:
    tracing = Tracing()
    tracing.tracer = spans.provider.get_tracer("pigeon")
    span = tracing.start_process(Delivery("an-id", 1, 0, b"not a message"))
    tracing.end_process(span, Outcome("an-id", 1, "dead"))
    [done] = spans.named("process")
    assert done.attributes["messaging.message.id"] == "an-id"
    assert done.attributes["pigeon.outcome"] == "dead"


def test_semconv_opt_in_messaging_dup_also_sets_the_old_operation_name(
    spans: Spans, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http,messaging/dup")
    tracing = Tracing()
    tracing.tracer = spans.provider.get_tracer("pigeon")
    _, end = tracing.start_send([Message("an-id", "t.add")], False)
    end(None)
    [send] = spans.named("send")
    assert send.attributes["messaging.operation"] == "publish"
    assert send.attributes["messaging.operation.type"] == "send"


def test_a_bad_trace_parent_is_a_config_error() -> None:
    with pytest.raises(pigeon.ConfigError, match="trace_parent"):
        pigeon.App("memory://", tracing=True, trace_parent="sibling")  # type: ignore[arg-type]


async def _add(a: int, b: int) -> int:
    return a + b


async def _flaky() -> str:
    if pigeon.current().failures == 0:
        raise KeyError("first attempt")
    return "ok"


async def _inc(n: int) -> int:
    return n + 1

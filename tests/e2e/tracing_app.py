"""The App the tracing tests run in a sender process and a worker process (URL from
PIGEON_URL), each with the OpenTelemetry SDK exporting every span, as it ends, to the JSON
lines file TRACE_FILE names; TRACE_PARENT is the App's ``trace_parent``.

    python -m tests.e2e.tracing_app     sends ``flaky`` (fails once) and two ``member``
                                        messages inside a ``request`` span, then, inside a
                                        ``later`` span (another trace), ``flaky.then(done)``
                                        and ``Promise.all(members).then(total)``, and
                                        waits for them all
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

import pigeon


class JsonLines(SpanExporter):
    """Appends each span to ``path`` as one JSON object per line."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self.lock, open(self.path, "a", encoding="utf-8") as out:
            for span in spans:
                out.write(json.dumps(record(span)) + "\n")
        return SpanExportResult.SUCCESS


def record(span: ReadableSpan) -> dict[str, Any]:
    context = span.get_span_context()
    assert context is not None
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent": f"{span.parent.span_id:016x}" if span.parent is not None else None,
        "links": [
            [f"{link.context.trace_id:032x}", f"{link.context.span_id:016x}"] for link in span.links
        ],
        "attributes": dict(span.attributes or {}),
        "status": span.status.status_code.name,
    }


provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(JsonLines(os.environ["TRACE_FILE"])))
trace.set_tracer_provider(provider)

app = pigeon.App(tracing=True, trace_parent=os.environ.get("TRACE_PARENT", "link"))  # type: ignore[arg-type]


@app.task(name="tr.flaky", retries=1, retry_backoff=0.01, retry_backoff_max=0.01)
async def flaky() -> str:
    """Fails its first attempt (KeyError), succeeds on the retry."""
    if pigeon.current().failures == 0:
        raise KeyError("first attempt")
    return "ok"


@app.task(name="tr.done")
async def done(value: str) -> str:
    return f"done: {value}"


@app.task(name="tr.member")
async def member(n: int) -> int:
    return n


@app.task(name="tr.total")
async def total(values: list[int]) -> int:
    return sum(values)


def main() -> None:
    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("request"):
        first = flaky.send()
        members = [member.send(1), member.send(2)]
    with tracer.start_as_current_span("later"):  # follow-ups attached in another trace
        then = first.then(done)
        joined = pigeon.Promise.all(members).then(total)
    outcomes = [p.result(timeout=30) for p in (first, then, joined)]
    print(*outcomes, flush=True)
    app.close_sync()
    provider.shutdown()


if __name__ == "__main__":
    main()

"""What tracing costs per message: sends and worker runs with ``App(tracing=...)`` off and
on, on the memory backend (so that the backend's own time does not hide the difference).

    python benchmarks/tracing_cost.py [-n 20000]

"on (SDK)" exports every span through the SDK's BatchSpanProcessor to an exporter that
drops them (the cost of making, ending and queueing spans, not of shipping them); "on (no
SDK)" is tracing turned on with no tracer provider set (the API's no-op spans).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pigeon
from pigeon.worker import Worker


def dropping_tracer() -> Any:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class Drop(SpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop(), max_queue_size=1 << 16))
    return provider.get_tracer("pigeon")


async def measure(n: int, tracing: bool, sdk: bool) -> tuple[float, float]:
    """µs per message: (send, worker run) for ``n`` messages."""
    app = pigeon.App("memory://", tracing=tracing)
    if app.tracing is not None and sdk:
        app.tracing.tracer = dropping_tracer()

    @app.task(name="noop")
    async def noop(i: int) -> int:
        return i

    await app.open()
    t = time.perf_counter()
    for i in range(n):
        noop.fire(i)
    await app.flush()
    sent = (time.perf_counter() - t) / n * 1e6
    t = time.perf_counter()
    await Worker(app, max_tasks=n, concurrency=100).run()
    ran = (time.perf_counter() - t) / n * 1e6
    await app.close()
    return sent, ran


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=20_000)
    n = parser.parse_args().n
    rows = [("off", False, False), ("on (no SDK)", True, False), ("on (SDK)", True, True)]
    print(f"{'µs per message':16}{'send':>10}{'worker run':>12}")
    for name, tracing, sdk in rows:
        asyncio.run(measure(1000, tracing, sdk))  # warm up
        sent, ran = asyncio.run(measure(n, tracing, sdk))
        print(f"{name:16}{sent:>10.1f}{ran:>12.1f}")


if __name__ == "__main__":
    main()

"""Where the microseconds of one message go: each stage of the hot path timed on its own.

    python benchmarks/hot_path.py --backends memory,sqlite,redis,postgresql

Stages, per message, in batches of 100 (as the worker runs them):
  send      build and validate the Message (Task.message: bind, check, encode)
  enqueue   store it (backend.enqueue of a batch; one round trip per batch)
  fetch     lease it (backend.fetch, limit 100)
  decode    decode the stored body and the arguments against the task's types
  dispatch  run the no-op coroutine as its own asyncio task and build its Outcome
  settle    apply the outcome (backend.settle of a batch)
  results   read the outcome back (backend.results of a batch)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.servers import BACKEND_URLS, cleanup, make_url, scheme_of  # noqa: E402

import pigeon  # noqa: E402
from pigeon import codec  # noqa: E402
from pigeon.message import Outcome  # noqa: E402

N = 20_000
BATCH = 100


async def measure(url: str) -> dict[str, float]:
    app = pigeon.App(url)

    @app.task(name="noop")
    async def noop(i: int) -> int:
        return i

    backend = await app.open()
    us: dict[str, float] = {}

    def per_message(start: float) -> float:
        return (time.perf_counter() - start) / N * 1e6

    t = time.perf_counter()
    messages = [noop.message((i,), {}) for i in range(N)]
    us["send"] = per_message(t)

    t = time.perf_counter()
    for i in range(0, N, BATCH):
        await backend.enqueue(messages[i : i + BATCH])
    us["enqueue"] = per_message(t)

    t = time.perf_counter()
    deliveries = []
    while len(deliveries) < N:
        deliveries.extend(await backend.fetch(["default"], BATCH, "hot-path"))
    us["fetch"] = per_message(t)

    t = time.perf_counter()
    calls = []
    for d in deliveries:
        m = codec.decode_message(d.body)
        calls.append(noop.codec.decode_args(bytes(m.args), bytes(m.kwargs)))
    us["decode"] = per_message(t)

    t = time.perf_counter()
    outcomes = []
    for i in range(0, N, BATCH):
        chunk = deliveries[i : i + BATCH]
        tasks = [
            asyncio.ensure_future(noop.fn(*calls[i + j][0], **calls[i + j][1]))
            for j in range(len(chunk))
        ]
        for d, task in zip(chunk, tasks, strict=True):
            value = await task
            outcomes.append(Outcome(d.id, d.attempt, "succeeded", noop.codec.encode_result(value)))
    us["dispatch"] = per_message(t)

    t = time.perf_counter()
    for i in range(0, N, BATCH):
        await backend.settle(outcomes[i : i + BATCH])
    us["settle"] = per_message(t)

    t = time.perf_counter()
    ids = [m.id for m in messages]
    for i in range(0, N, BATCH):
        await backend.results(ids[i : i + BATCH])
    us["results"] = per_message(t)
    us["total"] = sum(us.values())
    await app.close()
    return us


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--backends", default="memory,sqlite")
    args = parser.parse_args()
    wanted = args.backends.split(",")
    rows: list[tuple[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for template in BACKEND_URLS:
            if scheme_of(template) not in wanted:
                continue
            url = make_url(template, Path(tmp))
            try:
                rows.append((scheme_of(url), asyncio.run(measure(url))))
            finally:
                asyncio.run(cleanup(url))
    stages = list(rows[0][1])
    print("µs per message" + "".join(f"{name:>12}" for name, _ in rows))
    for stage in stages:
        print(f"{stage:14}" + "".join(f"{r[stage]:>12.1f}" for _, r in rows))


if __name__ == "__main__":
    main()

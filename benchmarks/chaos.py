"""The fault-injection run at full size: 100,000 tasks per backend, 20+ worker SIGKILLs.

    python benchmarks/chaos.py                          # sqlite, 100,000 tasks
    python benchmarks/chaos.py --backends sqlite,redis,postgresql -n 100000 --kills 20

Two worker processes run tasks of 1-50 ms; every 0.5 s a random one is SIGKILLed and
restarted, until the work is done and at least ``--kills`` kills happened. Then the
Jepsen-style checker of tests/chaos classifies every message (see tests/chaos/jepsen.py)
and a table per backend is printed. Exits non-zero if anything was lost, unexpected or
stale, or if a duplicate outcome is visible.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.chaos import chaos_app  # noqa: E402
from tests.chaos.jepsen import History, Verdict, check  # noqa: E402
from tests.processes import Workers  # noqa: E402
from tests.servers import BACKEND_URLS, cleanup, make_url, scheme_of  # noqa: E402

import pigeon  # noqa: E402


def run(url: str, n: int, min_kills: int, concurrency: int, tmp: Path) -> Verdict:
    history = tmp / f"history-{scheme_of(url)}.log"
    app = chaos_app.register(pigeon.App(url))
    workers = Workers(url, "tests.chaos.chaos_app:app", {"PIGEON_CHAOS_LOG": str(history)})
    rng = random.Random(1)
    try:
        work = app.tasks["chaos.work"]
        sent: list[str] = []

        async def send_all() -> None:
            for start in range(0, n, 5000):
                batch = [work.send(rng.randint(1, 50)) for _ in range(min(5000, n - start))]
                await app.flush()
                sent.extend(p.id for p in batch)

        app.call_sync(send_all())
        print(f"{scheme_of(url)}: {len(sent):,} sent", flush=True)
        procs = [workers.start("-c", str(concurrency), "--log-level", "warning") for _ in range(2)]
        kills = 0
        started = time.monotonic()
        while True:
            done = len(app.backend_call_sync(lambda b: b.results(sent)))
            if done == len(sent) and kills >= min_kills:
                break
            if time.monotonic() - started > 1800:
                raise RuntimeError(f"only {done} of {len(sent)} settled after 30 minutes")
            time.sleep(0.5)
            if kills < min_kills or done < len(sent):
                victim = rng.randrange(2)
                procs[victim].send_signal(signal.SIGKILL)
                procs[victim].wait(10)
                kills += 1
                procs[victim] = workers.start("-c", str(concurrency), "--log-level", "warning")
                print(f"  kill {kills}: {done:,} of {len(sent):,} settled", flush=True)
        outcomes = app.backend_call_sync(lambda b: b.results(sent))
        return check(sent, History.read(history), outcomes, kills)
    finally:
        workers.stop_all()
        app.close_sync()
        asyncio.run(cleanup(url))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=100_000)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("-c", "--concurrency", type=int, default=100)
    parser.add_argument("--backends", default="sqlite")
    args = parser.parse_args()
    wanted = args.backends.split(",")
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        tables = []
        for template in BACKEND_URLS:
            if scheme_of(template) not in wanted:
                continue
            url = make_url(template, Path(tmp))
            verdict = run(url, args.n, args.kills, args.concurrency, Path(tmp))
            tables.append(verdict.table(f"{scheme_of(url)}: {args.n:,} tasks, 2 workers"))
            failed |= bool(verdict.lost or verdict.unexpected or verdict.stale)
            failed |= verdict.ok != verdict.sent
        print("\n\n".join(tables))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

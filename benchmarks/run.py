"""Task queues side by side: pigeon (memory, SQLite, Redis, PostgreSQL) and its peers on the
same Redis and PostgreSQL, one system at a time, with the same workloads.

    benchmarks/setup.sh                          # once: .venv-bench with the peers
    .venv-bench/bin/python benchmarks/run.py     # everything (about 10 minutes)
    .venv-bench/bin/python benchmarks/run.py --systems pigeon,celery -n 2000
    .venv/bin/python benchmarks/run.py --quick   # CI smoke: pigeon on memory + SQLite

Writes benchmarks/results.md (the table), benchmarks/results.json (the raw figures) and
docs/benchmarks.png (the chart); --out DIR writes the three to DIR instead. --quick writes
them to its scratch directory (removed at the end) unless --out is given. A system whose
library or pigeon backend does not import is skipped with a one-line note. Exits 1 when a
system failed (with --quick, also when one was skipped). Method: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import secrets
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import peers
from harness import limits, namespaces, report
from harness.workloads import Figures, Settings, measure
from peers.base import Broker, Place, System

BENCHMARKS = Path(__file__).resolve().parent
DEFAULT_PNG = BENCHMARKS.parent / "docs" / "benchmarks.png"
QUICK_SYSTEMS = ["pigeon-memory", "pigeon-sqlite"]
QUICK = Settings(n=200, rtt=20, nap_n=200, concurrency=100)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    d = Settings()
    parser.add_argument(
        "--systems",
        default="all",
        help="comma-separated systems or groups (all, pigeon, peers); default: all."
        f" Systems: {', '.join(peers.SYSTEMS)}",
    )
    parser.add_argument("-n", type=int, default=d.n, help=f"no-op tasks (default {d.n:,})")
    parser.add_argument("--rtt", type=int, default=d.rtt, help=f"round trips ({d.rtt})")
    parser.add_argument(
        "--nap-n", type=int, default=d.nap_n, help=f"10 ms tasks of workload (d) ({d.nap_n:,})"
    )
    parser.add_argument(
        "-c", "--concurrency", type=int, default=d.concurrency,
        help=f"concurrency of (d), and of asyncio workers in (b) ({d.concurrency})",
    )  # fmt: skip
    parser.add_argument("--redis", default="redis://127.0.0.1:6379", help="Redis server URL")
    parser.add_argument(
        "--postgres",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="PostgreSQL DSN of a role that may CREATE DATABASE",
    )
    parser.add_argument("--out", type=Path, help="write results.md/.json and the PNG here")
    parser.add_argument("--no-limits", action="store_true", help="skip the raw limits")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument(
        "--metrics",
        action="store_true",
        help="run pigeon's workers with Prometheus metrics on (--metrics-port), to compare",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="CI smoke: pigeon on memory and SQLite, tiny N, fails on any error or skip",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.metrics:
        os.environ["PIGEON_BENCH_METRICS"] = "1"  # read by peers/pigeon_adapter.py
    if args.quick:
        names, settings = QUICK_SYSTEMS, QUICK
    else:
        try:
            names = peers.expand(args.systems.split(","))
        except ValueError as exc:
            print(f"run.py: {exc}", file=sys.stderr)
            return 2
        settings = Settings(
            args.n, args.rtt, args.nap_n, args.concurrency, raw_n=min(args.n, Settings.raw_n)
        )
    run_id = secrets.token_hex(3)
    scratch = Path(tempfile.mkdtemp(prefix=f"pigeon-bench-{run_id}-"))
    # --quick leaves the committed results alone: its files go with the scratch directory.
    out = args.out or (scratch / "results" if args.quick else None)
    command = "python benchmarks/run.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    run = report.Run(command.strip(), settings, environment(args, names))
    print(f"run {run_id}: {', '.join(names)}; scratch {scratch}", flush=True)

    for name in names:
        run_system(name, args, settings, run, run_id, scratch / name)
    if not args.no_limits:
        run_limits(args, settings, run, run_id)

    write_outputs(run, out)
    failed = bool(run.errors) or (args.quick and bool(run.skipped))
    if failed or args.keep:
        print(f"worker logs kept in {scratch}")
    else:
        shutil.rmtree(scratch, ignore_errors=True)
        print(f"removed the scratch directory {scratch}")
    return 1 if failed else 0


def run_system(
    name: str, args: argparse.Namespace, settings: Settings, run: report.Run, run_id: str,
    workdir: Path,
) -> None:  # fmt: skip
    try:
        system = peers.load(name)
    except peers.Unavailable as exc:
        run.skipped[name] = str(exc)
        print(f"{name}: skipped: {exc}", flush=True)
        return
    workdir.mkdir(parents=True)
    figures = Figures(name, system.broker.value)
    print(f"{name}: running ...", flush=True)
    t0 = time.perf_counter()
    try:
        asyncio.run(in_place(system, args, run_id, workdir, settings, figures))
    except Exception as exc:
        what = " ".join(f"{type(exc).__name__}: {exc}".split())  # one line
        run.errors[name] = what
        print(f"{name}: error: {what}", flush=True)
    if figures.enqueue_one is not None:
        run.figures.append(figures)
    print(f"{name}: {summary(figures)} ({time.perf_counter() - t0:.1f} s)", flush=True)


async def in_place(
    system: System, args: argparse.Namespace, run_id: str, workdir: Path, settings: Settings,
    figures: Figures,
) -> None:  # fmt: skip
    """Measure ``system`` in a namespace of its own on its broker's server."""
    counter_path = workdir / "counter"
    if system.broker is Broker.REDIS:
        with namespaces.redis_database(args.redis, run_id) as url:
            place = Place(run_id, workdir, redis_url=url)
            await measure(system, place, settings, counter_path, figures)
    elif system.broker is Broker.POSTGRES:
        name = namespaces.database_name(system.name, run_id)
        async with namespaces.postgres_database(args.postgres, name) as dsn:
            place = Place(run_id, workdir, postgres_dsn=dsn)
            await measure(system, place, settings, counter_path, figures)
    elif system.broker is Broker.NATS:
        with namespaces.nats_server(workdir) as url:
            place = Place(run_id, workdir, nats_url=url)
            await measure(system, place, settings, counter_path, figures)
    else:
        await measure(system, Place(run_id, workdir), settings, counter_path, figures)


def run_limits(args: argparse.Namespace, settings: Settings, run: report.Run, run_id: str) -> None:
    n = settings.n
    try:
        run.limits["asyncio create_task + await, in a loop"] = asyncio.run(
            limits.asyncio_create_and_await(n)
        )
        if args.quick:
            return
        with namespaces.redis_database(args.redis, run_id) as url:
            run.limits[f"redis-py LPUSH, pipelines of {limits.PIPELINE:,}"] = (
                limits.redis_lpush_pipelined(url, n)
            )
            run.limits["redis-py asyncio LPUSH, one awaited at a time"] = asyncio.run(
                limits.redis_lpush_one_by_one(url, min(n, 5000))
            )
        executemany, copy, single = asyncio.run(pg_limits(args.postgres, run_id, n))
        run.limits["asyncpg executemany INSERT, one transaction (rows)"] = executemany
        run.limits["asyncpg copy_records_to_table (rows)"] = copy
        run.limits["asyncpg INSERT, one awaited at a time (rows)"] = single
    except Exception as exc:
        run.errors["raw limits"] = " ".join(f"{type(exc).__name__}: {exc}".split())
        print(f"raw limits: error: {run.errors['raw limits']}", flush=True)


async def pg_limits(admin_dsn: str, run_id: str, n: int) -> tuple[float, float, float]:
    name = namespaces.database_name("limits", run_id)
    async with namespaces.postgres_database(admin_dsn, name) as dsn:
        return await limits.asyncpg_inserts(dsn, n)


def environment(args: argparse.Namespace, names: list[str]) -> dict[str, str]:
    env = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{os.cpu_count()} cores, {platform.system()} {platform.machine()}",
        "Python": platform.python_version(),
    }
    uses = {peers.SYSTEMS[name][1] for name in names}
    try:
        if Broker.REDIS in uses:
            env["Redis"] = namespaces.redis_version(args.redis)
        if Broker.POSTGRES in uses:
            env["PostgreSQL"] = asyncio.run(namespaces.postgres_version(args.postgres))
        if Broker.NATS in uses:
            env["nats-server"] = namespaces.nats_version()
    except Exception as exc:  # the systems that need the server will report it
        print(f"could not read a server's version: {exc}", flush=True)
    return env


def summary(f: Figures) -> str:
    parts = []
    if f.one_vs_raw is not None:
        parts.append(f"one send {f.one_vs_raw:.2f}x a raw round trip")
    if f.processed is not None:
        parts.append(f"{f.processed:,.0f} no-op/s")
    if f.rtt_p50 is not None:
        parts.append(f"p50 {f.rtt_p50:.2f} ms")
    if f.nap_processed is not None:
        parts.append(f"{f.nap_processed:,.0f} naps/s")
    if f.rss_mb is not None:
        parts.append(f"RSS {f.rss_mb:,.0f} MiB")
    return ", ".join(parts) or "no figures"


def write_outputs(run: report.Run, out: Path | None) -> None:
    if out is None:
        md, js, png = BENCHMARKS / "results.md", BENCHMARKS / "results.json", DEFAULT_PNG
    else:
        out.mkdir(parents=True, exist_ok=True)
        md, js, png = out / "results.md", out / "results.json", out / "benchmarks.png"
    md.write_text(report.markdown(run))
    report.write_json(run, js)
    try:
        report.chart(run, png)
    except ImportError:
        print("chart: matplotlib is not installed here, no PNG (benchmarks/setup.sh installs it)")
        png = None  # type: ignore[assignment]
    print()
    print(md.read_text())
    print(f"wrote {md}, {js}" + (f", {png}" if png else ""))


if __name__ == "__main__":
    sys.exit(main())

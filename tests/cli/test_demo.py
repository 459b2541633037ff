"""pigeon demo, end to end, as a new user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_demo_runs_a_real_worker_and_explains_what_happened(tmp_path: Path) -> None:
    temp = tmp_path / "temp"
    temp.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "TMPDIR": str(temp), "COLUMNS": "200"}
    env.pop("PIGEON_URL", None)

    proc = subprocess.run(
        [sys.executable, "-m", "pigeon", "demo"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for line in [
        "is up (concurrency 50)",
        "34/34",
        "Receipt(order='order-42', attempt=2)",
        "'BANNER@1200.PNG'",
        "durable chain",
        "durable join",
        "flaky: attempt 1 raised ConnectionError",
        "join: fired once, when all 10 checksums had succeeded",
        "Nothing is left in the queues",
        "stopped on SIGTERM and exited 0",
    ]:
        assert line in out, f"{line!r} not in:\n{out}"
    assert list(temp.iterdir()) == []  # the temporary directory is gone
    assert list(work.iterdir()) == []  # and nothing was written where it ran

"""The harness's completion counter: every benchmark task appends one byte to one file.

The same two system calls run in every system's task (``open`` once per process, then one
``write`` of one byte per task, with ``O_APPEND`` so that concurrent writers from threads,
forked children and separate processes never overwrite each other). The harness reads the
count as the file's size. It needs no server and costs about a microsecond per task, the same
for every system.
"""

from __future__ import annotations

import os

#: The environment variable that names the counter file in worker processes.
COUNTER_ENV = "BENCH_COUNTER"

_fds: dict[int, int] = {}  # pid -> fd: a forked child opens its own


def mark_done() -> None:
    """Count one completed task."""
    pid = os.getpid()
    fd = _fds.get(pid)
    if fd is None:
        path = os.environ[COUNTER_ENV]
        fd = _fds[pid] = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, b".")


def forget() -> None:
    """Close this process's counter file (for workers that ran inside the harness)."""
    fd = _fds.pop(os.getpid(), None)
    if fd is not None:
        os.close(fd)


def count(path: str | os.PathLike[str]) -> int:
    """How many tasks have marked themselves done in the counter file at ``path``."""
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0

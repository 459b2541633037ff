"""A verb against a server that cannot be reached says so at once, in one line: which server
(its password hidden) and why, with exit code 2. A worker rides out a restart instead (its
calls retry for 30 s on Redis: ``tests/chaos/test_redis_restart.py``); a verb does not wait
that long, nor print a line per retry.

Each test runs the real ``pigeon`` process (what a user sees on stderr, log lines included)
against a port on which nothing listens.
"""

from __future__ import annotations

import socket
import subprocess
import time

import pytest

from pigeon.backends import redact
from tests.cli.conftest import Project

#: Generous, for a loaded CI machine: the verbs give up after about 3 s (Redis).
BOUND = 10.0
PASSWORD = "s3cret-pw"


def closed_port() -> int:
    """A local port nothing listens on (free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def url_for(scheme: str) -> str:
    port = closed_port()
    if scheme == "redis":
        return f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    return f"postgresql://ann:{PASSWORD}@127.0.0.1:{port}/pigeon"


def run_pigeon(project: Project, *args: str) -> tuple[int, float, str]:
    """(exit code, seconds taken, stderr) of ``pigeon ARGS``; stdout must stay empty."""
    started = time.monotonic()
    proc = project.pigeon(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    took = time.monotonic() - started
    assert out == b"", out
    return proc.returncode, took, err.decode()


def assert_says_unreachable_in_one_line(err: str, url: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # no "retrying" log lines before it
    [line] = lines
    assert line.startswith("error: "), line
    assert redact(url) in line  # which server, password hidden
    assert "Connect call failed" in line  # and why
    assert PASSWORD not in err
    assert "retrying" not in err
    assert "Traceback" not in err


@pytest.mark.parametrize("scheme", ["redis", "postgresql"])
def test_status_on_an_unreachable_server_is_one_line_within_seconds(
    project: Project, scheme: str
) -> None:
    url = url_for(scheme)

    code, took, err = run_pigeon(project, "status", "--url", url)

    assert code == 2
    assert took < BOUND, f"took {took:.1f}s"
    assert_says_unreachable_in_one_line(err, url)


def test_send_through_an_app_on_an_unreachable_redis_is_one_line_within_seconds(
    project: Project,
) -> None:
    # APP instead of --url: the App the user's module made, with its backend's own defaults,
    # gives up as soon.
    url = url_for("redis")
    module = project.root / "unreachable_app.py"
    module.write_text(
        f"import pigeon\n\napp = pigeon.App({url!r})\n\n\n"
        "@app.task(name='t.add')\ndef add(a: int, b: int) -> int:\n    return a + b\n"
    )

    code, took, err = run_pigeon(project, "send", "unreachable_app:app", "t.add", "1", "2")

    assert code == 2
    assert took < BOUND, f"took {took:.1f}s"
    assert_says_unreachable_in_one_line(err, url)

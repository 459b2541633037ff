"""``pigeon dashboard``: it refuses, in one line, to serve other machines without a token."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pigeon.addresses import is_loopback
from pigeon.cli.dashboard import check_bind
from pigeon.cli.output import CommandError


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PIGEON_DASHBOARD_TOKEN"}
    return subprocess.run(
        [sys.executable, "-m", "pigeon", "dashboard", "--url", "memory://", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_dashboard_on_a_public_address_without_a_token_exits_with_one_line() -> None:
    done = run_cli("--host", "0.0.0.0")
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "token" in lines[0]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"])
def test_loopback_binds_need_no_token(host: str) -> None:
    assert is_loopback(host)
    check_bind(host, None)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.1", "127.example.com", "example"])
def test_other_binds_need_a_token(host: str) -> None:
    assert not is_loopback(host)
    with pytest.raises(CommandError):
        check_bind(host, None)
    check_bind(host, "a-token")

"""Prints the checker's table of every fault-injection run at the end of the session."""

from __future__ import annotations

import pytest

from tests.chaos.jepsen import TABLES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TABLES:
        terminalreporter.section("fault injection: Jepsen-style checks")
        for table in TABLES:
            terminalreporter.write_line(table)
            terminalreporter.write_line("")

"""Types flow end to end (DESIGN.md section 6): mypy --strict accepts ``fixture_ok.py``, whose
``assert_type`` calls pin the types pigeon's API gives, and reports on ``fixture_bad.py``
exactly the lines marked ``# E: code[, code]``, each with the codes marked."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import pytest
from mypy import api

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
OK = HERE / "fixture_ok.py"
BAD = HERE / "fixture_bad.py"

ERROR = re.compile(
    r"^(?P<file>[^:]+):(?P<line>\d+): error: (?P<text>.*?)(?:  \[(?P<code>[a-z-]+)\])?$"
)
MARKER = re.compile(r"#\s*E:\s*(?P<codes>[a-z-]+(?:\s*,\s*[a-z-]+)*)\s*$")


@pytest.fixture(scope="module")
def mypy_errors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[int, set[str]]]:
    """mypy --strict on both fixtures, as the project configures it: file -> line -> codes."""
    cache = tmp_path_factory.getbasetemp().parent / "pigeon-typing-mypy-cache"
    stdout, stderr, status = api.run(
        [
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--strict",
            "--show-error-codes",
            "--no-error-summary",
            "--no-pretty",
            "--cache-dir",
            str(cache),
            str(OK),
            str(BAD),
        ]
    )
    assert status in (0, 1), f"mypy crashed ({status}):\n{stdout}\n{stderr}"
    errors: dict[str, dict[int, set[str]]] = defaultdict(lambda: defaultdict(set))
    for line in stdout.splitlines():
        match = ERROR.match(line)
        if match:
            name = Path(match["file"]).name
            errors[name][int(match["line"])].add(match["code"] or "")
    return errors


def test_the_typed_api_is_accepted_and_its_types_are_as_pinned(
    mypy_errors: dict[str, dict[int, set[str]]],
) -> None:
    source = OK.read_text().splitlines()
    reported = {
        line: (sorted(codes), source[line - 1].strip())
        for line, codes in mypy_errors[OK.name].items()
    }
    assert reported == {}


def test_misuse_is_reported_on_exactly_the_marked_lines(
    mypy_errors: dict[str, dict[int, set[str]]],
) -> None:
    expected: dict[int, set[str]] = {}
    for number, text in enumerate(BAD.read_text().splitlines(), start=1):
        match = MARKER.search(text)
        if match:
            expected[number] = {code.strip() for code in match["codes"].split(",")}
    assert len(expected) >= 15
    reported = mypy_errors[BAD.name]
    assert sorted(reported) == sorted(expected), "lines reported differ from the marked lines"
    for line, codes in expected.items():
        assert codes <= reported[line], f"line {line}: marked {codes}, reported {reported[line]}"

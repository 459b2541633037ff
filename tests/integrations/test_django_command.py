"""``manage.py pigeon VERB``: the pigeon command line, given the project's App.

What each verb is given is read off the click commands themselves, so a verb added to pigeon
works through manage.py with no change here. (The example's tests run the command for real.)
"""

from __future__ import annotations

import pytest

from pigeon.integrations.django import APP_SPEC
from pigeon.integrations.django.management.commands.pigeon import with_app


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["worker", "-c", "20"], ["worker", APP_SPEC, "-c", "20"]),
        (["--debug", "worker"], ["--debug", "worker", APP_SPEC]),
        (["send", "fulfil", "x"], ["send", APP_SPEC, "fulfil", "x"]),
        (["status"], ["status", "--app", APP_SPEC]),
        (["dlq", "list"], ["dlq", "list", "--app", APP_SPEC]),
        (["status", "--url", "redis://h"], ["status", "--url", "redis://h"]),
        (["inspect", "--url=sqlite:///x.db", "id"], ["inspect", "--url=sqlite:///x.db", "id"]),
        (["demo"], ["demo"]),
        ([], []),
        (["--help"], ["--help"]),
        (["no-such-verb"], ["no-such-verb"]),
    ],
)
def test_each_verb_is_given_the_project_app_the_way_it_takes_one(
    words: list[str], expected: list[str]
) -> None:
    assert with_app(words) == expected

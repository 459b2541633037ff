"""Task options are checked when the task is registered or re-optioned, with errors that
name the option, so nothing a backend cannot store ever reaches one."""

from __future__ import annotations

from typing import Any

import pytest

import pigeon
from pigeon.errors import ConfigError


def _noop() -> None:
    return None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"name": "bad\x00name"}, "without NUL"),
        ({"name": "half \ud800 a pair"}, "lone surrogates"),
        ({"queue": "q\udfff"}, "queue must be a non-empty string without NUL or lone"),
        ({"queue": ""}, "queue must be a non-empty string"),
        ({"queue": "q\x00"}, "queue must be a non-empty string without NUL"),
        ({"retries": -1}, "retries must be >= 0"),
        ({"timeout": 0}, "timeout must be > 0"),
        ({"lease": 0}, "lease must be > 0"),
        ({"priority": 10}, "priority must be 0-9"),
        ({"max_deliveries": 0}, "max_deliveries must be >= 1"),
        ({"nonsense": 1}, "nonsense"),
    ],
)
def test_a_bad_option_is_refused_at_registration(options: dict[str, Any], message: str) -> None:
    app = pigeon.App("memory://")
    with pytest.raises(ConfigError, match=message):
        app.task(**options)(_noop)
    assert app.tasks == {}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"key": "k\x00"}, "key must be a string without NUL"),
        ({"key": "k\ud800"}, "key must be a string without NUL or lone surrogates"),
        ({"queue": "q\x00"}, "without NUL"),
        ({"delay": -1}, "delay must be >= 0"),
    ],
)
def test_a_bad_per_send_option_is_refused_before_sending(
    options: dict[str, Any], message: str
) -> None:
    app = pigeon.App("memory://")
    task = app.task(_noop)
    with pytest.raises(ConfigError, match=message):
        task.options(**options)


def test_the_same_name_twice_is_refused() -> None:
    app = pigeon.App("memory://")
    app.task(name="x")(_noop)
    with pytest.raises(ConfigError, match="already registered"):
        app.task(name="x")(_noop)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@h:6379/0?prefix=p", "redis://:***@h:6379/0?prefix=p"),
        (
            "rediss://u:pw@h/0?ssl_password=key-pass&ssl_certfile=c.pem",
            "rediss://u:***@h/0?ssl_password=***&ssl_certfile=c.pem",
        ),
        (
            "postgresql://h/db?client_secret=x&schema=s",
            "postgresql://h/db?client_secret=***&schema=s",
        ),
        ("sqlite:///tmp/p.db", "sqlite:///tmp/p.db"),
    ],
)
def test_urls_are_shown_without_their_passwords(url: str, shown: str) -> None:
    from pigeon.backends.base import redact

    assert redact(url) == shown

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


def test_a_relative_expiry_travels_relative_and_the_sender_clock_sets_no_expiry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import types

    import pigeon.task
    from pigeon.backends.base import plain_options

    app = pigeon.App("memory://")
    task = app.task()(_noop)
    # The sender's clock an hour behind: nothing it makes may depend on it but created_at.
    monkeypatch.setattr(pigeon.task, "time", types.SimpleNamespace(time=lambda: 1000.0))
    opts = task.options(expires=60).opts

    one = task.message((), {}, opts)
    many = task.messages([(), ()], opts)

    for m in [one, *many]:
        assert (m.expires, m.expires_at, m.created_at) == (60, None, 1000.0)
    # A bulk send keeps the shared-options fast path, relative expiry included.
    shared = plain_options(many)
    assert shared is not None
    assert shared.expires == 60


def test_an_expiry_given_as_a_datetime_stays_absolute() -> None:
    from datetime import UTC, datetime

    app = pigeon.App("memory://")
    task = app.task()(_noop)
    at = datetime(2030, 1, 1, tzinfo=UTC)

    m = task.message((), {}, task.options(expires=at).opts)

    assert (m.expires, m.expires_at) == (None, at.timestamp())

"""How broker URLs are read: pigeon's own query parameters taken out, the rest kept for the
broker's client, and a clear error for a wrong scheme or value (password never shown)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pigeon.backends.base import read_url
from pigeon.backends.postgres.session import _parse_url
from pigeon.backends.redis.connections import parse_url
from pigeon.errors import ConfigError

names = st.sampled_from(["prefix", "retry_for", "socket_timeout", "ssl", "x"])
values = st.text(alphabet="abc019._-", max_size=6)


@given(st.lists(st.tuples(names, values), max_size=6))
def test_own_parameters_are_taken_out_and_the_others_kept_in_order(
    query: list[tuple[str, str]],
) -> None:
    text = "&".join(f"{n}={v}" for n, v in query)
    url = f"redis://:pw@host:6379/2?{text}" if text else "redis://:pw@host:6379/2"
    got = read_url(url, ("redis",), "Redis", ("prefix", "retry_for"))
    own = {n: v for n, v in query if n in ("prefix", "retry_for")}
    assert got.own == own  # the last value of a repeated one wins
    assert parse_qsl(urlsplit(got.rest).query, keep_blank_values=True) == [
        (n, v) for n, v in query if n not in ("prefix", "retry_for")
    ]
    assert urlsplit(got.rest).netloc == ":pw@host:6379"
    assert urlsplit(got.rest).path == "/2"


def test_a_wrong_scheme_names_the_broker_and_hides_the_password() -> None:
    with pytest.raises(ConfigError, match="not a Redis URL") as caught:
        read_url("postgresql://u:hunter2@h/db", ("redis", "rediss"), "Redis", ())
    assert "hunter2" not in str(caught.value)
    assert "***" in str(caught.value)


def test_the_scheme_is_matched_in_any_case() -> None:
    assert read_url("REDIS://h/0?prefix=a", ("redis",), "Redis", ("prefix",)).own == {"prefix": "a"}


def test_redis_and_postgres_urls_keep_their_meaning() -> None:
    target = parse_url("redis://h:1/3?prefix=app&retry_for=2.5&socket_timeout=4")
    assert (target.prefix, target.retry_for) == ("app", 2.5)
    assert target.client_url == "redis://h:1/3?socket_timeout=4"
    pg = _parse_url("postgresql://u:p%40ss@h/db?schema=s1&migrate=no&sslmode=disable")
    assert (pg.schema, pg.migrate, pg.password) == ("s1", False, "p@ss")
    assert pg.dsn == "postgresql://u:p%40ss@h/db?sslmode=disable"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis://h/0?prefix=", "prefix must be a non-empty name"),
        ("redis://h/0?prefix=a{b}", "without braces"),
        ("redis://:pw@h/0?retry_for=99", "retry_for must be a number of seconds"),
        ("postgresql://u:pw@h/db?migrate=maybe", "use true or false"),
        ("postgresql://u:pw@h/db?schema=", "give 1 to 63 bytes"),
        ("mysql://u:pw@h/db", "not a PostgreSQL URL"),
    ],
)
def test_bad_values_are_refused_with_what_to_do(url: str, says: str) -> None:
    read = _parse_url if url.startswith(("postgresql", "mysql")) else parse_url
    with pytest.raises(ConfigError, match=says) as caught:
        read(url)
    assert "pw@" not in str(caught.value)

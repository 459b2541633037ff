"""Reading a ``nats://`` URL, checking a server's version and an existing stream's settings:
no server needed."""

from __future__ import annotations

import dataclasses

import pytest
from nats.js.api import RetentionPolicy

from pigeon.backends.nats.connections import (
    MIN_VERSION,
    Target,
    check_version,
    parse_url,
    redact_url,
    stream_config,
    stream_conflicts,
)
from pigeon.errors import ConfigError


def test_defaults_are_the_pigeon_stream_with_one_replica() -> None:
    assert parse_url("nats://127.0.0.1:4222") == Target("nats://127.0.0.1:4222", "pigeon", 1)


def test_stream_and_replicas_are_taken_out_and_the_rest_goes_to_nats_py() -> None:
    target = parse_url("tls://user:secret@nats.example:4443/?stream=jobs-1&replicas=3")
    assert target == Target("tls://user:secret@nats.example:4443", "jobs-1", 3)


def test_the_scheme_is_case_insensitive_and_the_port_optional() -> None:
    assert parse_url("NATS://host?replicas=5") == Target("nats://host", "pigeon", 5)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis://127.0.0.1:6379", "not a NATS URL (nats:// or tls://)"),
        ("nats://h?prefix=x", "unknown query parameter 'prefix'"),
        ("nats://h?stream=a&user=u&token=t", "unknown query parameter 'token', 'user'"),
        ("nats://h?replicas=0", "replicas must be a whole number from 1 to 5, not '0'"),
        ("nats://h?replicas=6", "replicas must be a whole number from 1 to 5, not '6'"),
        ("nats://h?replicas=three", "not 'three'"),
        ("nats://h?replicas=", "not ''"),
        ("nats://h?stream=a.b", "stream must be 1 to 64 letters, digits, '_' or '-', not 'a.b'"),
        ("nats://h?stream=", "not ''"),
        ("nats://h?stream=a>", "not 'a>'"),
        ("nats://h?stream=" + "x" * 65, "stream must be 1 to 64"),
        ("nats://:4222", "name the server's host"),
        ("nats://h:99999", "the port must be a number from 1 to 65535"),
        ("nats://h/db", "a NATS URL has no path"),
    ],
)
def test_a_bad_url_is_a_config_error_that_says_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_url(url)
    assert says in str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    "url",
    [
        "nats://user:hunter2@h?bogus=1",
        "nats://hunter2@h?bogus=1",  # a token
        "tls://user:hunter2@h?replicas=9",
        "redis://user:hunter2@h",
        "nats://h?token=hunter2",  # refused as unknown, its value not repeated
    ],
)
def test_credentials_never_appear_in_an_error(url: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_url(url)
    assert "hunter2" not in str(raised.value)
    assert "***" in str(raised.value)


def test_redact_url_hides_a_password_and_a_token() -> None:
    assert redact_url("nats://u:p@h:4222") == "nats://u:***@h:4222"
    assert redact_url("nats://tok@h:4222") == "nats://***@h:4222"
    assert redact_url("nats://h:4222?stream=s") == "nats://h:4222?stream=s"
    assert redact_url("nats://h?token=t&nkey_seed=s&stream=x") == (
        "nats://h?token=***&nkey_seed=***&stream=x"
    )


def test_a_server_older_than_2_12_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError) as raised:
        check_version((2, 11, 9), "nats://h:4222")
    message = str(raised.value)
    assert "nats-server at nats://h:4222 is version 2.11.9" in message
    assert "needs nats-server 2.12.0 or later" in message
    assert "\n" not in message
    check_version(MIN_VERSION, "nats://h:4222")
    check_version((3, 0, 0), "nats://h:4222")


def test_an_unreadable_version_is_refused_as_unknown() -> None:
    with pytest.raises(ConfigError, match="is version unknown"):
        check_version((0, 0, 0), "nats://h:4222")


def test_the_stream_pigeon_creates_has_no_conflicts() -> None:
    target = Target("nats://h", "s", 3)
    config = stream_config(target)
    assert config.max_msgs_per_subject == 1
    assert config.allow_atomic is True
    assert config.allow_msg_ttl is True
    assert config.num_replicas == 3
    assert config.subjects == ["s.>"]
    assert stream_conflicts(config, target) == []


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"max_msgs_per_subject": 10}, "max_msgs_per_subject is 10 (needs 1)"),
        ({"allow_atomic": None}, "allow_atomic is False (needs True)"),
        ({"allow_msg_ttl": False}, "allow_msg_ttl is False (needs True)"),
        ({"num_replicas": 1}, "num_replicas is 1 (needs 3)"),
        ({"retention": RetentionPolicy.WORK_QUEUE}, "retention is workqueue (needs limits)"),
        ({"max_age": 3600.0}, "max_age is 3600.0 (needs 0)"),
        ({"max_msgs": 1000}, "max_msgs is 1000 (needs -1)"),
        ({"max_bytes": 1 << 20}, "max_bytes is 1048576 (needs -1)"),
        ({"subjects": ["other.>"]}, "subjects are ['other.>'] (needs s.>)"),
        ({"deny_delete": True}, "deny_delete is True (needs False)"),
    ],
)
def test_each_setting_pigeon_depends_on_is_checked(change: dict[str, object], says: str) -> None:
    target = Target("nats://h", "s", 3)
    config = dataclasses.replace(stream_config(target), **change)
    assert stream_conflicts(config, target) == [says]


def test_unlimited_is_accepted_however_the_server_spells_it() -> None:
    target = Target("nats://h", "s", 1)
    for unlimited in (None, 0, -1):
        config = dataclasses.replace(stream_config(target), max_msgs=unlimited, max_bytes=unlimited)
        assert stream_conflicts(config, target) == []

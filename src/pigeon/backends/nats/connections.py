"""Reaching a NATS JetStream server: the URL read into nats-py's server URL, the stream's name
and replicas, and what opening checks before anything is stored: the server's version,
that JetStream is on for the account, and that the stream exists with the settings the
backend's records need (created on first open).

URL: ``nats://[[user]:password@|token@]host[:port][?stream=NAME][&replicas=N]`` (``tls://``
for TLS). ``stream`` (default ``pigeon``) names the JetStream stream, which takes the
subjects ``NAME.>``; ``replicas`` (1 to 5, default 1) is the stream's replication factor
when it is created and what an existing stream must have. No other query parameter is
accepted: nats-py takes its options as arguments, not from the URL, so anything else would
be silently ignored.

The stream keeps one message per subject (``max_msgs_per_subject=1``): a subject is one
record and its last message is its value. It allows atomic batch publishes (ADR-50,
nats-server 2.12), so that one step can change many records, each guarded by the sequence
it was read at, and per-message TTLs (``Nats-TTL``), so that outcomes and keys expire on
the server. Its retention is ``limits`` with no age, count or size limit: nothing but a
new value, a TTL or a delete ever removes a record.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import nats.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig, StreamInfo
from nats.js.errors import APIError, NotFoundError, ServiceUnavailableError

from pigeon.backends.base import read_url, redact
from pigeon.errors import BackendError, ConfigError

log = logging.getLogger("pigeon.backends.nats")

DEFAULT_STREAM = "pigeon"
#: The oldest nats-server with atomic batch publish (ADR-50) and per-message TTLs.
MIN_VERSION = (2, 12, 0)
MAX_REPLICAS = 5
#: Seconds ``open_stream`` keeps trying to reach the server before it raises BackendError.
CONNECT_FOR = 10.0
#: Seconds a JetStream API request (stream info, create) waits for its reply.
API_TIMEOUT = 5.0

#: A stream name that is also one subject token (the stream's subjects are ``NAME.>``).
_STREAM_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: Query parameter names whose values are secrets (shown as ``***`` in errors).
_SECRET_PARAMETER = re.compile(r"token|key|seed|cred|pass|secret|jwt", re.IGNORECASE)
#: JetStream's error code for "stream name already in use with a different configuration".
_STREAM_NAME_IN_USE = 10058
#: JetStream's error codes for "JetStream not enabled" (server, account).
_JETSTREAM_OFF = frozenset({10076, 10039})


class Target(NamedTuple):
    """What a ``nats://`` URL says, read by ``parse_url``."""

    server_url: str
    """The URL nats-py is given: scheme, credentials, host and port."""
    stream: str
    """The JetStream stream's name (``?stream=``); its subjects are ``NAME.>``."""
    replicas: int
    """The stream's replicas (``?replicas=``), from 1 to ``MAX_REPLICAS``."""


def redact_url(url: str) -> str:
    """``url`` safe for logs and errors: ``base.redact`` hides a password; a NATS URL with a
    user but no password (``nats://TOKEN@host``) carries a token there, hidden too, as is
    the value of a query parameter that names a token, key, seed or credentials."""
    safe = redact(url)
    parts = urlsplit(safe)
    if parts.username and parts.password is None:
        host = parts.netloc.rsplit("@", 1)[1]
        safe = urlunsplit(parts._replace(netloc=f"***@{host}"))
    if _SECRET_PARAMETER.search(parts.query):
        query = "&".join(map(_hide_secret, parts.query.split("&")))
        safe = urlunsplit(urlsplit(safe)._replace(query=query))
    return safe


def _hide_secret(item: str) -> str:
    name = item.split("=", 1)[0]
    return f"{name}=***" if _SECRET_PARAMETER.search(name) else item


def parse_url(url: str) -> Target:
    """Read a ``nats://`` or ``tls://`` URL: pigeon's query parameters (``stream``,
    ``replicas``) out, and the rest checked. Raises ConfigError naming the redacted URL and
    what is wrong with it."""
    where = f"NATS URL {redact_url(url)!r}"
    try:
        given = read_url(url, ("nats", "tls"), "NATS", ("stream", "replicas"))
    except ConfigError:
        raise ConfigError(f"not a NATS URL (nats:// or tls://): {redact_url(url)!r}") from None
    rest = urlsplit(given.rest)
    unknown = sorted({name for name, _ in parse_qsl(rest.query, keep_blank_values=True)})
    if unknown:
        raise ConfigError(
            f"{where}: unknown query parameter {', '.join(map(repr, unknown))} "
            "(the NATS backend takes only stream= and replicas=)"
        )
    if not rest.hostname:
        raise ConfigError(f"{where}: name the server's host, as in nats://127.0.0.1:4222")
    try:
        rest.port  # noqa: B018 (reading it validates it)
    except ValueError:
        raise ConfigError(f"{where}: the port must be a number from 1 to 65535") from None
    if rest.path not in ("", "/"):
        raise ConfigError(f"{where}: a NATS URL has no path (name the stream with ?stream=)")
    stream = given.own.get("stream", DEFAULT_STREAM)
    if not _STREAM_NAME.fullmatch(stream):
        raise ConfigError(
            f"{where}: stream must be 1 to 64 letters, digits, '_' or '-', not {stream!r}"
        )
    replicas = _replicas(given.own.get("replicas", "1"), where)
    server_url = urlunsplit(rest._replace(path="", query="", fragment=""))
    return Target(server_url, stream, replicas)


def _replicas(value: str, where: str) -> int:
    try:
        replicas = int(value)
    except ValueError:
        replicas = 0
    if not 1 <= replicas <= MAX_REPLICAS:
        raise ConfigError(
            f"{where}: replicas must be a whole number from 1 to {MAX_REPLICAS}, not {value!r}"
        )
    return replicas


def stream_config(target: Target) -> StreamConfig:
    """The configuration the stream is created with (see the module docstring)."""
    return StreamConfig(
        name=target.stream,
        subjects=[f"{target.stream}.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_msgs_per_subject=1,
        num_replicas=target.replicas,
        allow_atomic=True,
        allow_msg_ttl=True,
        allow_direct=True,
    )


def stream_conflicts(config: StreamConfig, target: Target) -> list[str]:
    """What of an existing stream's ``config`` the backend cannot work with, one phrase
    each (empty when it can use the stream)."""
    wanted: list[tuple[str, Any, Any]] = [
        ("retention", config.retention, RetentionPolicy.LIMITS),
        ("max_msgs_per_subject", config.max_msgs_per_subject, 1),
        ("allow_atomic", bool(config.allow_atomic), True),
        ("allow_msg_ttl", bool(config.allow_msg_ttl), True),
        ("num_replicas", config.num_replicas, target.replicas),
        ("max_age", config.max_age or 0, 0),
        ("max_msgs", _unlimited(config.max_msgs), -1),
        ("max_bytes", _unlimited(config.max_bytes), -1),
        ("sealed", config.sealed, False),
        ("deny_delete", config.deny_delete, False),
        ("deny_purge", config.deny_purge, False),
    ]
    found = [
        f"{name} is {_shown(value)} (needs {_shown(needed)})"
        for name, value, needed in wanted
        if value != needed
    ]
    if f"{target.stream}.>" not in (config.subjects or []):
        found.append(f"subjects are {config.subjects} (needs {target.stream}.>)")
    if config.mirror is not None:
        found.append("it is a mirror (needs its own subjects)")
    return found


def _unlimited(value: int | None) -> int:
    return -1 if value is None or value <= 0 else value


def _shown(value: Any) -> str:
    return str(value.value) if hasattr(value, "value") else str(value)


def check_version(version: tuple[int, int, int], url: str) -> None:
    """Raise ConfigError, in one line, when the server is older than ``MIN_VERSION``."""
    if version < MIN_VERSION:
        found = ".".join(map(str, version)) if version > (0, 0, 0) else "unknown"
        needed = ".".join(map(str, MIN_VERSION))
        raise ConfigError(
            f"nats-server at {url} is version {found}; pigeon's NATS backend needs "
            f"nats-server {needed} or later (atomic batch publish)"
        )


def server_version(nc: NATS) -> tuple[int, int, int]:
    """The connected server's version as (major, minor, patch); (0, 0, 0) if unreadable."""
    version = nc.connected_server_version
    try:
        return (version.major, version.minor, version.patch)
    except (TypeError, ValueError):
        return (0, 0, 0)


class Opened(NamedTuple):
    """An open connection whose server and stream passed the checks of ``open_stream``."""

    nc: NATS
    js: JetStreamContext
    stream: StreamInfo


async def open_stream(target: Target, url: str, connect_for: float = CONNECT_FOR) -> Opened:
    """Connect to the server ``target`` names, check its version and that JetStream is on,
    and create the stream (or check the existing one's settings). ``url`` is the redacted
    URL that errors name.

    Raises:
        BackendError: the server did not answer within ``connect_for`` seconds, or its
            JetStream is on but unavailable now.
        ConfigError: the server is too old, JetStream is off, or the stream exists with
            settings the backend cannot use (or cannot be created as the URL asks).
    """
    nc = await connect(target, url, connect_for)
    try:
        check_version(server_version(nc), url)
        js = nc.jetstream(timeout=API_TIMEOUT)
        await check_jetstream(js, url)
        info = await ensure_stream(js, target, url)
    except BaseException:
        await nc.close()
        raise
    return Opened(nc, js, info)


async def connect(target: Target, url: str, connect_for: float = CONNECT_FOR) -> NATS:
    """A nats-py connection to ``target.server_url`` that reconnects by itself once made;
    the first connection must succeed within ``connect_for`` seconds (BackendError)."""
    nc = NATS()

    async def report(exc: Exception) -> None:
        log.warning("NATS %s: %s", url, exc or type(exc).__name__)

    try:
        async with asyncio.timeout(connect_for):
            await nc.connect(
                servers=[target.server_url],
                name="pigeon",
                error_cb=report,
                connect_timeout=min(2, max(1, int(connect_for))),
                reconnect_time_wait=1,
                max_reconnect_attempts=-1,
            )
    except (TimeoutError, OSError, nats.errors.Error) as exc:
        await nc.close()
        raise BackendError(
            f"cannot reach nats-server at {url} within {connect_for:g} s: "
            f"{exc or type(exc).__name__}"
        ) from None
    return nc


async def check_jetstream(js: JetStreamContext, url: str) -> None:
    """Raise ConfigError when JetStream is off for the connection's account (no one answers
    its API, or the server says it is not enabled), BackendError when it is on but does not
    answer now (a cluster electing its leader)."""
    try:
        await js.account_info()
    except nats.errors.NoRespondersError:
        off = True
    except ServiceUnavailableError as exc:
        # nats-py turns the 503 "no responders" status into this error without a JetStream
        # error code: no one serves the JetStream API, as when it is off
        if exc.err_code is not None and exc.err_code not in _JETSTREAM_OFF:
            raise BackendError(
                f"JetStream at {url} is unavailable: {exc.description} (JetStream error "
                f"{exc.err_code})"
            ) from None
        off = True
    except nats.errors.TimeoutError:
        raise BackendError(f"JetStream at {url} did not answer within {API_TIMEOUT:g} s") from None
    else:
        off = False
    if off:
        raise ConfigError(
            f"nats-server at {url} has JetStream off for this account; pigeon's NATS backend "
            "needs it (start the server with -js, or enable jetstream in its config)"
        )


async def ensure_stream(js: JetStreamContext, target: Target, url: str) -> StreamInfo:
    """The stream's info, creating it first when it does not exist; raises ConfigError when
    it exists with settings the backend cannot use or the server refuses to create it."""
    try:
        info = await js.stream_info(target.stream)
    except NotFoundError:
        info = await _create_stream(js, target, url)
    conflicts = stream_conflicts(info.config, target)
    if conflicts:
        raise ConfigError(
            f"NATS stream {target.stream!r} at {url} exists with settings pigeon cannot use: "
            f"{'; '.join(conflicts)}. Change them (nats stream edit {target.stream}) or "
            "name another stream with ?stream="
        )
    return info


async def _create_stream(js: JetStreamContext, target: Target, url: str) -> StreamInfo:
    try:
        return await js.add_stream(stream_config(target))
    except APIError as exc:
        if exc.err_code == _STREAM_NAME_IN_USE:
            # Another process created it since we looked: check what it made.
            return await js.stream_info(target.stream)
        raise ConfigError(
            f"cannot create NATS stream {target.stream!r} at {url}: {exc.description} "
            f"(JetStream error {exc.err_code})"
        ) from None

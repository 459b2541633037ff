"""How the Redis backend talks to the server: connections, retries and scripts.

``Client`` belongs to one event loop. It keeps idle redis-py connections (made by one
redis-py ``ConnectionPool``, which knows the URL's host, TLS, password and database) and
uses them directly, one command at a time each: a command costs one write and one read,
packed by hiredis, with none of redis-py's per-command bookkeeping. That matters here: the
round trip of a send -> run -> await is several of them.

Each call is timed as a whole (``asyncio.timeout``, the URL's ``socket_timeout`` or
``REPLY_TIMEOUT``) instead of by redis-py per write and per read: redis-py runs every
timed write as a task of its own (``asyncio.wait_for``), an extra event-loop iteration
per command on the path of every message.

A connection that fails (or whose caller is cancelled mid-command) is closed, never reused.
Transient errors (connection refused or reset, timeouts, a server still loading its data)
are retried with exponential backoff for up to ``RETRY_FOR`` seconds, on a fresh connection;
whether a command is safe to repeat is the caller's business (see ``redis.py``).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import importlib.resources
import logging
import ssl
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import hiredis
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.exceptions import (
    AskError,
    AuthenticationError,
    AuthorizationError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pigeon.backends.base import DEAD_LETTER_TTL, EVENTS_KEPT
from pigeon.errors import BackendError

log = logging.getLogger("pigeon.backends.redis")

#: Seconds a call keeps retrying while the server is unreachable before it raises.
RETRY_FOR = 30.0
#: A result with follow-ups or joins waiting on it is kept this long even when its ttl is 0.
KEEP_FOR_DEPENDENTS = 86400.0
#: Seconds a script's reply is remembered for a retry of the same call (which can only
#: come within RETRY_FOR seconds of the first try).
REPLY_TTL = RETRY_FOR + 15.0
#: Seconds a call waits for its reply (unless the URL sets ``socket_timeout``) before the
#: connection counts as dead and the call is retried on a new one.
REPLY_TIMEOUT = 15.0
#: Idle connections kept for reuse; more are made while more calls are in flight.
MAX_IDLE = 16

#: Errors after which a call is retried on a new connection. The cluster's own (a slot being
#: migrated: ASK; a cluster that cannot serve a slot for now) pass as the migration or the
#: failover ends.
TRANSIENT = (
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    TimeoutError,
    AskError,
    TryAgainError,
    ClusterDownError,
)
#: Redirects (MOVED) one call follows before it gives up: a slot moves once at a time.
MAX_REDIRECTS = 5


def _refused_certificate(exc: BaseException) -> bool:
    """Whether a connection failed because a TLS certificate was refused (either side)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError) or "CERTIFICATE" in str(seen).upper():
            return True
        seen = seen.__cause__ or seen.__context__
    return False


SCRIPTS = (
    "enqueue",
    "enqueue_plain",
    "fetch",
    "extend",
    "settle",
    "release",
    "cancel",
    "requeue",
    "purge",
    "purge_dead",
    "dead_letters",
    "stats",
    "inspect",
    "heartbeat",
    "retire",
    "sweep",
    "cancelling",
    "lock",
    "unlock",
    "take",
    "acquire",
    "release_slots",
    "report",
    "publish",
)


@functools.cache
def script_source(name: str) -> bytes:
    """The script as loaded: generated constants, ``common.lua``, then the script."""
    lua = importlib.resources.files("pigeon.backends").joinpath("redis_lua")
    header = (
        f"local DEAD_LETTER_TTL_US = {int(DEAD_LETTER_TTL * 1_000_000)}\n"
        f"local KEEP_FOR_DEPENDENTS = {KEEP_FOR_DEPENDENTS!r}\n"
        f"local REPLY_TTL_MS = {int(REPLY_TTL * 1000)}\n"
        f"local EVENTS_KEPT = {int(EVENTS_KEPT)}\n"
    )
    common = lua.joinpath("common.lua").read_text(encoding="utf-8")
    return (header + common + lua.joinpath(f"{name}.lua").read_text(encoding="utf-8")).encode()


@functools.cache
def script_sha(name: str) -> bytes:
    return hashlib.sha1(script_source(name)).hexdigest().encode()


class _Retry:
    """The retry policy of one call (``Client.execute``, ``Client.scripts``): transient errors
    retried on fresh connections with exponential backoff for up to ``RETRY_FOR`` seconds,
    ``MOVED`` followed; anything else raised as BackendError (NOSCRIPT as is: the caller
    loads the scripts)."""

    __slots__ = ("client", "deadline", "delay", "redirects")

    def __init__(self, client: Client, started: float) -> None:
        self.client = client
        self.delay = 0.005
        self.deadline = started + RETRY_FOR
        self.redirects = 0

    async def after(self, exc: BaseException) -> None:
        """Called with what one try raised: returns when the call should be tried again."""
        client = self.client
        url = client._url
        if isinstance(exc, MovedError):
            self.redirects = await client._follow(exc, self.redirects)
            return
        if isinstance(exc, NoScriptError):
            raise exc
        if isinstance(exc, (AuthenticationError, AuthorizationError)):
            raise BackendError(f"Redis {url}: {exc}") from None  # no use retrying
        if not isinstance(exc, TRANSIENT):
            raise BackendError(f"Redis {url}: {exc}") from None
        if _refused_certificate(exc):  # TLS misconfigured: retrying cannot help
            raise BackendError(f"Redis {url}: {exc}") from None
        # The server restarted or dropped its clients: the idle connections are most likely
        # dead too, so none of them is tried next.
        await client._drop_idle()
        if client._closed:
            raise BackendError(f"Redis {url}: the backend is closed") from None
        if time.monotonic() > self.deadline:
            raise BackendError(f"Redis {url} unreachable for {RETRY_FOR:.0f}s: {exc}") from None
        log.warning("Redis %s: %s; retrying in %.3fs", url, exc, self.delay)
        await asyncio.sleep(self.delay)
        self.delay = min(self.delay * 2, 1.0)


class Client:
    """Commands and scripts on one server, from one event loop. See the module docstring."""

    def __init__(self, pool: ConnectionPool, url: str, base: str) -> None:
        self.pool = pool
        kwargs = pool.connection_kwargs
        self._timeout: float = kwargs.get("socket_timeout") or REPLY_TIMEOUT
        kwargs["socket_timeout"] = None  # each call is timed here: see the module docstring
        self.loop = asyncio.get_running_loop()
        self._url = url
        self._base = base.encode()
        self._idle: list[AbstractConnection] = []
        self._closing: set[asyncio.Task[None]] = set()
        self._client_ids: weakref.WeakKeyDictionary[AbstractConnection, int] = (
            weakref.WeakKeyDictionary()
        )
        self._closed = False

    async def execute(self, *args: Any) -> Any:
        """One command, retried on transient errors; raises BackendError past RETRY_FOR."""
        packed = hiredis.pack_command(args)
        started = time.monotonic()
        retry: _Retry | None = None  # made on the first error: none on the common path
        while True:
            try:
                return await self._once(packed)
            except (RedisError, *TRANSIENT) as exc:
                retry = retry or _Retry(self, started)
                await retry.after(exc)  # returns to try again, or raises

    async def script(self, name: str, *args: Any) -> Any:
        """Run one script by SHA (loading it again if the server forgot it: a restart)."""
        try:
            return await self.execute(b"EVALSHA", script_sha(name), 1, self._base, *args)
        except NoScriptError:
            await self.execute(b"SCRIPT", b"LOAD", script_source(name))
            return await self.execute(b"EVALSHA", script_sha(name), 1, self._base, *args)

    async def scripts(self, calls: Iterable[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Run one script per ``(name, args)`` of ``calls``, pipelined on one connection:
        the server runs them in order, one after another, while the next ones are still
        being packed and sent (``calls`` is consumed lazily). Returns their replies, in
        order. Only for scripts that are safe to run again: after a transient error or a
        NOSCRIPT the whole pipeline is sent again (as ``execute`` retries one command).
        """
        packed: list[bytes] = []

        def pack() -> Iterator[bytes]:
            for name, args in calls:
                command = hiredis.pack_command((b"EVALSHA", script_sha(name), 1, self._base, *args))
                packed.append(command)
                yield command

        source = pack()
        retry = _Retry(self, time.monotonic())
        reloaded = False
        while True:
            try:
                return await self._pipeline(source)
            except NoScriptError as exc:
                if reloaded:
                    raise BackendError(f"Redis {self._url}: {exc}") from None
                reloaded = True  # the server forgot the scripts (a restart): load them again
                await self.load_scripts()
            except (RedisError, *TRANSIENT) as exc:
                await retry.after(exc)  # returns to try again, or raises
            for _ in source:  # pack the rest: a retry sends every call
                pass
            source = iter(packed)

    async def _pipeline(self, commands: Iterator[bytes]) -> list[Any]:
        conn = await self._connected()
        reusable = False
        try:
            sent = 0
            replies: list[Any] = []
            error: ResponseError | None = None
            async with asyncio.timeout(self._timeout) as timer:
                for command in commands:
                    await conn.send_packed_command(command, check_health=False)
                    sent += 1
                    timer.reschedule(self.loop.time() + self._timeout)  # a long pipeline
                for _ in range(sent):  # every reply is read: the connection stays usable
                    try:
                        replies.append(await conn.read_response())
                    except ResponseError as exc:
                        error = error or exc
                        replies.append(None)
            reusable = True
            if error is not None:
                raise error
            return replies
        finally:
            self._put_back(conn, reusable)

    async def script_when_woken(
        self, keys: list[bytes], block: float, blocked: list[int], name: str, *args: Any
    ) -> Any:
        """``BLPOP keys block`` and the script, sent together on one connection: the script
        runs on the server as soon as the BLPOP is served (a token pushed, or ``block``
        seconds gone), with no round trip in between. Returns the script's reply.

        The connection's client id goes into ``blocked`` before it blocks: ``unblock`` it
        to end the wait at once (the script still runs). Not retried: after a transient
        error (or NOSCRIPT) the script may or may not have run, so the caller decides
        (``fetch`` runs it again with the same token).
        """
        blpop: tuple[Any, ...] = (b"BLPOP", *keys, f"{max(block, 0.001):.3f}".encode())
        evalsha: tuple[Any, ...] = (b"EVALSHA", script_sha(name), 1, self._base, *args)
        try:
            conn = await self._connected()
        except (AuthenticationError, AuthorizationError) as exc:
            raise BackendError(f"Redis {self._url}: {exc}") from None
        reusable = False
        try:
            client_id = self._client_ids.get(conn)
            if client_id is None:
                try:
                    async with asyncio.timeout(self._timeout):
                        await conn.send_packed_command(b"*2\r\n$6\r\nCLIENT\r\n$2\r\nID\r\n")
                        client_id = int(await conn.read_response())
                except ResponseError:  # an ACL without CLIENT: the wait cannot be cut short
                    client_id = -1
                self._client_ids[conn] = client_id
            if client_id >= 0:
                blocked.append(client_id)
            async with asyncio.timeout(block + self._timeout):
                await conn.send_packed_command(
                    hiredis.pack_command(blpop) + hiredis.pack_command(evalsha),
                    check_health=False,
                )
                try:
                    await conn.read_response()  # the token, or nil: the script runs either way
                except MovedError as exc:
                    await conn.read_response()  # the script's MOVED too: its slot is elsewhere
                    reusable = True
                    await self._follow(exc, 0)
                    raise
                try:
                    reply = await conn.read_response()
                except ResponseError:
                    reusable = True
                    raise
            reusable = True
            return reply
        finally:
            self._put_back(conn, reusable)

    async def _follow(self, moved: MovedError, redirects: int) -> int:
        """A Redis Cluster node said the app's slot is served elsewhere: from now on, make
        connections to that node (the listener too: pub/sub reaches every node). Returns
        the redirects followed so far; raises BackendError past ``MAX_REDIRECTS``."""
        if redirects >= MAX_REDIRECTS:
            raise BackendError(
                f"Redis {self._url}: redirected {redirects} times in a row ({moved}); "
                "the cluster is resharding the app's slot: try again later"
            )
        kwargs = self.pool.connection_kwargs
        host = moved.host or kwargs.get("host")  # a node that does not know its address
        if (kwargs.get("host"), kwargs.get("port")) != (host, moved.port):
            log.info(
                "Redis %s: the app's slot %s is served by %s:%s; connecting there",
                self._url,
                moved.slot_id,
                host,
                moved.port,
            )
            kwargs["host"], kwargs["port"] = host, int(moved.port)
        await self._drop_idle()  # connected to the node that no longer serves the slot
        return redirects + 1

    async def unblock(self, client_id: int) -> None:
        """End the BLPOP of connection ``client_id`` now, as if its time had run out (if
        that fails, it ends when its time runs out)."""
        try:
            await self.execute(b"CLIENT", b"UNBLOCK", client_id)
        except BackendError as exc:
            log.warning("Redis %s: could not end a blocked fetch early: %s", self._url, exc)

    async def load_scripts(self) -> None:
        for name in SCRIPTS:
            await self.execute(b"SCRIPT", b"LOAD", script_source(name))

    async def close(self) -> None:
        self._closed = True
        await self._drop_idle()
        await asyncio.gather(*self._closing, return_exceptions=True)

    async def _drop_idle(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.disconnect(nowait=True)

    async def _once(self, packed: bytes) -> Any:
        conn = await self._connected()
        reusable = False
        try:
            async with asyncio.timeout(self._timeout):
                await conn.send_packed_command(packed, check_health=False)
                try:
                    reply = await conn.read_response()
                except ResponseError:
                    reusable = True  # an error reply: the connection itself is fine
                    raise
            reusable = True
            return reply
        finally:
            self._put_back(conn, reusable)

    async def _connected(self) -> AbstractConnection:
        conn: AbstractConnection = (
            self._idle.pop() if self._idle else self.pool.make_connection()  # type: ignore[no-untyped-call]
        )
        if not conn.is_connected:
            self._client_ids.pop(conn, None)  # a new connection has a new client id
            try:
                await conn.connect()  # type: ignore[no-untyped-call]
            except BaseException:
                self._put_back(conn, False)
                raise
        return conn

    def _put_back(self, conn: AbstractConnection, reusable: bool) -> None:
        if reusable and not self._closed and len(self._idle) < MAX_IDLE:
            self._idle.append(conn)
            return
        # Failed, or cancelled mid-command: its reply may still come, so it can never
        # carry another command.
        self._client_ids.pop(conn, None)
        task = self.loop.create_task(conn.disconnect(nowait=True))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

"""How the Redis backend talks to the server: connections, retries and scripts.

``Client`` belongs to one event loop. It keeps idle connections, opened by redis-py (one
redis-py ``ConnectionPool``, which knows the URL's host, TLS, password and database) and
then read and written by pigeon's own ``_Wire``: a command is one write, packed by hiredis,
and its reply is parsed by hiredis in the transport's callback and handed straight to the
command's future, with none of redis-py's per-command bookkeeping nor the wake-up of a
reading task for every reply. That matters here: the round trip of a send -> run -> await
is several of them.

Each call is timed as a whole (the URL's ``socket_timeout``, or ``REPLY_TIMEOUT``) instead
of by redis-py per write and per read: redis-py runs every timed write as a task of its
own (``asyncio.wait_for``), an extra event-loop iteration per command on the path of every
message. Nor does each call start a timer of its own (``asyncio.timeout`` costs some 7 µs of
CPU per call here): a call sets its connection's deadline, and one watchdog per ``Client``
looks at the connections in use a few times per timeout, failing the calls of one whose
deadline passed with ``TimeoutError`` (and dropping the connection).

A connection that fails (or whose caller is cancelled mid-command) is closed, never reused.
Transient errors (connection refused or reset, timeouts, a server still loading its data)
are retried with exponential backoff, on a fresh connection, for up to the client's
``retry_for`` seconds (``RETRY_FOR`` unless the URL's ``retry_for`` lowers it); whether a
command is safe to repeat is the caller's business (see ``backend.py``).
"""

from __future__ import annotations

import abc
import asyncio
import functools
import hashlib
import importlib.resources
import logging
import ssl
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import hiredis
from redis._parsers import BaseParser
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

from pigeon.backends.base import DEAD_LETTER_TTL, EVENTS_KEPT, KEEP_FOR_DEPENDENTS
from pigeon.errors import BackendError

log = logging.getLogger("pigeon.backends.redis")

#: Seconds a call keeps retrying while the server is unreachable before it raises: the
#: default of a client's ``retry_for``, and its maximum (see REPLY_TTL).
RETRY_FOR = 30.0
#: A client that gives up within this many seconds (the CLI's) retries quietly: its caller
#: reports the failure itself, so each retry is logged at DEBUG, not as a warning.
QUIET_RETRY_FOR = 5.0
#: Seconds a script's reply is remembered for a retry of the same call (which can only
#: come within RETRY_FOR seconds of the first try).
REPLY_TTL = RETRY_FOR + 15.0
#: Seconds a call waits for its reply (unless the URL sets ``socket_timeout``) before the
#: connection counts as dead and the call is retried on a new one.
REPLY_TIMEOUT = 15.0
#: The longest one blocking command (``BLPOP`` of a waiting fetch, ``XREAD BLOCK`` of
#: ``read_events``) blocks, in seconds: well under REPLY_TIMEOUT, so a long wait is several.
MAX_BLOCK = 10.0
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
    "mark_schedules",
    "take",
    "acquire",
    "release_slots",
    "report",
    "publish",
    "pauses",
    "list",
)


def _lua(name: str) -> str:
    scripts = importlib.resources.files("pigeon.backends.redis").joinpath("lua")
    return scripts.joinpath(name).read_text(encoding="utf-8")


@functools.cache
def script_prelude() -> str:
    """What every script starts with: the generated constants, then ``common.lua``."""
    header = (
        f"local DEAD_LETTER_TTL_US = {int(DEAD_LETTER_TTL * 1_000_000)}\n"
        f"local KEEP_FOR_DEPENDENTS = {KEEP_FOR_DEPENDENTS!r}\n"
        f"local REPLY_TTL_MS = {int(REPLY_TTL * 1000)}\n"
        f"local EVENTS_KEPT = {int(EVENTS_KEPT)}\n"
    )
    return header + _lua("common.lua")


@functools.cache
def script_source(name: str) -> bytes:
    """The script as loaded: ``script_prelude()``, then the script."""
    return (script_prelude() + _lua(f"{name}.lua")).encode()


@functools.cache
def script_sha(name: str) -> bytes:
    return hashlib.sha1(script_source(name)).hexdigest().encode()


class _ErrorReplies(BaseParser):
    """redis-py's exception for each error reply, with Redis Cluster's (``MOVED``, ``ASK``,
    ``TRYAGAIN``, ``CLUSTERDOWN``) too. Only its ``parse_error`` is used."""

    EXCEPTION_CLASSES = {
        **BaseParser.EXCEPTION_CLASSES,
        "ASK": AskError,
        "CLUSTERDOWN": ClusterDownError,
        "MOVED": MovedError,
        "TRYAGAIN": TryAgainError,
    }


class TakenOver(asyncio.Protocol, abc.ABC):
    """A connection that redis-py opened (TLS, AUTH, SELECT done), read and written by pigeon
    from then on: the transport's protocol becomes this object, replies are parsed by
    hiredis as the bytes arrive and each is handed to ``on_reply`` in the transport's own
    callback (no reading task to wake first: an event-loop iteration less per reply).
    ``on_lost`` is called once the connection is gone or unreadable.

    Used by ``_Wire`` (commands) and the listener's ``_Subscriber`` (pub/sub).
    """

    def __init__(self, conn: AbstractConnection, reader: hiredis.Reader) -> None:
        self.conn = conn
        writer = conn._writer  # the stream redis-py opened: its transport is ours from now on
        assert writer is not None, "a connected redis-py connection"
        self.transport = writer.transport
        self.reader = reader
        self.transport.set_protocol(self)

    @abc.abstractmethod
    def on_reply(self, reply: Any) -> None:
        """One reply, in the order the server sent it."""

    @abc.abstractmethod
    def on_lost(self, error: BaseException) -> None:
        """The connection is gone (or unreadable): ``error`` says why."""

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        try:
            while (reply := self.reader.gets()) is not False:
                self.on_reply(reply)
        except (hiredis.ProtocolError, IndexError) as exc:  # garbage, or a reply nobody asked
            self.on_lost(RedisConnectionError(f"unreadable reply from the server: {exc!r}"))
            self.transport.abort()

    def eof_received(self) -> bool:
        return False  # the server closed its side: close ours (connection_lost follows)

    def connection_lost(self, exc: Exception | None) -> None:
        reason = "Connection closed by server." if exc is None else f"Connection lost: {exc}"
        self.on_lost(RedisConnectionError(reason))


class _Wire(TakenOver):
    """One connection of the ``Client``: ``request`` writes packed commands and returns one
    future per reply expected; each reply completes the next future, in order, so the
    awaiting caller runs in the next event-loop iteration. An error reply becomes
    redis-py's exception for it. A lost connection fails every future still waiting with
    a ``ConnectionError`` (retried by the caller as transient), and the wire is never used
    again.
    """

    def __init__(self, conn: AbstractConnection) -> None:
        super().__init__(conn, hiredis.Reader(replyError=_ErrorReplies.parse_error))
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.lost: BaseException | None = None
        self.client_id: int | None = None  # CLIENT ID, once asked (for CLIENT UNBLOCK)
        self.deadline = 0.0  # (loop time) the replies asked for are overdue after this
        self._paused = False
        self._drained: asyncio.Future[None] | None = None

    def request(self, packed: bytes, replies: int = 1) -> list[asyncio.Future[Any]]:
        """Write ``packed`` (``replies`` commands); the futures of their replies, in order."""
        if self.lost is not None:
            raise self.lost
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(replies)]
        self.waiting.extend(futures)
        self.transport.write(packed)
        return futures

    async def drain(self) -> None:
        """Wait while the transport's write buffer is over its high-water mark."""
        if self._paused and self.lost is None:
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained

    def expire(self, timeout: float) -> None:
        """The replies are overdue: fail their callers and drop the connection."""
        self.on_lost(TimeoutError(f"no reply in time (reply timeout {timeout:g}s)"))
        self.transport.abort()

    def on_reply(self, reply: Any) -> None:
        future = self.waiting.popleft()  # IndexError: a reply nobody asked for
        if future.done():  # its caller gave up (cancelled, timed out)
            return
        if isinstance(reply, ResponseError):
            future.set_exception(reply)
        else:
            future.set_result(reply)

    def on_lost(self, error: BaseException) -> None:
        if self.lost is None:
            self.lost = error
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)
                future.exception()  # retrieved: a caller that gave up never will
        self.resume_writing()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)


class _Retry:
    """The retry policy of one call (``Client.execute``, ``Client.scripts``): transient errors
    retried on fresh connections with exponential backoff for up to the client's
    ``retry_for`` seconds, ``MOVED`` followed; anything else raised as BackendError
    (NOSCRIPT as is: the caller loads the scripts). Each retry is a warning, unless the
    client gives up within ``QUIET_RETRY_FOR`` seconds."""

    __slots__ = ("client", "deadline", "delay", "level", "redirects", "window")

    def __init__(self, client: Client, started: float) -> None:
        self.client = client
        self.delay = 0.005
        self.window = client.retry_for
        self.deadline = started + self.window
        self.level = logging.WARNING if self.window > QUIET_RETRY_FOR else logging.DEBUG
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
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise BackendError(f"Redis {url} unreachable for {self.window:g}s: {exc}") from None
        delay = min(self.delay, left)  # the last try comes at the deadline, not past it
        log.log(self.level, "Redis %s: %s; retrying in %.3fs", url, exc, delay)
        await asyncio.sleep(delay)
        self.delay = min(self.delay * 2, 1.0)


class Client:
    """Commands and scripts on one server, from one event loop. See the module docstring."""

    def __init__(
        self, pool: ConnectionPool, url: str, base: str, retry_for: float = RETRY_FOR
    ) -> None:
        self.pool = pool
        #: Seconds a call keeps retrying while the server is unreachable (at most RETRY_FOR).
        self.retry_for = retry_for
        kwargs = pool.connection_kwargs
        self._timeout: float = kwargs.get("socket_timeout") or REPLY_TIMEOUT
        kwargs["socket_timeout"] = None  # each call is timed here: see the module docstring
        # RESP2 whatever the URL says: _Wire reads plain replies, and RESP3 could interleave
        # pushes with them (the listener's own connections are RESP2 too).
        kwargs["protocol"] = 2
        self.loop = asyncio.get_running_loop()
        self._url = url
        self._base = base.encode()
        self._idle: list[_Wire] = []
        self._busy: set[_Wire] = set()  # with calls in flight: what the watchdog looks at
        self._watchdog: asyncio.TimerHandle | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    async def execute(self, *args: Any) -> Any:
        """One command, retried on transient errors; raises BackendError past ``retry_for``."""
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
        wire = await self._connected()
        reusable = False
        try:
            futures: list[asyncio.Future[Any]] = []
            replies: list[Any] = []
            error: ResponseError | None = None
            for command in commands:
                futures.extend(wire.request(command))
                self._watch(wire, self._timeout)  # from the latest write: a long pipeline
                await wire.drain()
            for future in futures:  # every reply is read: the connection stays usable
                try:
                    replies.append(await future)
                except ResponseError as exc:
                    error = error or exc
                    replies.append(None)
            reusable = True
            if error is not None:
                raise error
            return replies
        finally:
            self._put_back(wire, reusable)

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
            wire = await self._connected()
        except (AuthenticationError, AuthorizationError) as exc:
            raise BackendError(f"Redis {self._url}: {exc}") from None
        reusable = False
        try:
            if wire.client_id is None:
                [asked] = wire.request(b"*2\r\n$6\r\nCLIENT\r\n$2\r\nID\r\n")
                self._watch(wire, self._timeout)
                try:
                    wire.client_id = int(await asked)
                except ResponseError:  # an ACL without CLIENT: the wait cannot be cut short
                    wire.client_id = -1
            if wire.client_id >= 0:
                blocked.append(wire.client_id)
            token, script = wire.request(
                hiredis.pack_command(blpop) + hiredis.pack_command(evalsha), replies=2
            )
            self._watch(wire, block + self._timeout)
            try:
                await token  # the token, or nil: the script runs either way
            except MovedError as exc:
                try:
                    await script
                except MovedError:
                    pass  # the script's MOVED too: its slot is elsewhere
                reusable = True
                await self._follow(exc, 0)
                raise
            try:
                reply = await script
            except ResponseError:
                reusable = True
                raise
            reusable = True
            return reply
        finally:
            self._put_back(wire, reusable)

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
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        await self._drop_idle()
        await asyncio.gather(*self._closing, return_exceptions=True)

    async def _drop_idle(self) -> None:
        idle, self._idle = self._idle, []
        for wire in idle:
            await wire.conn.disconnect(nowait=True)

    async def _once(self, packed: bytes) -> Any:
        wire = await self._connected()
        reusable = False
        try:
            [future] = wire.request(packed)
            self._watch(wire, self._timeout)
            try:
                reply = await future
            except ResponseError:
                reusable = True  # an error reply: the connection itself is fine
                raise
            reusable = True
            return reply
        finally:
            self._put_back(wire, reusable)

    async def _connected(self) -> _Wire:
        while self._idle:
            wire = self._idle.pop()
            if wire.lost is None:
                return wire
            self._put_back(wire, False)  # the server closed it while it was idle
        conn: AbstractConnection = self.pool.make_connection()  # type: ignore[no-untyped-call]
        try:
            await conn.connect()  # type: ignore[no-untyped-call]
        except BaseException:
            self._disconnect(conn)
            raise
        return _Wire(conn)

    def _watch(self, wire: _Wire, seconds: float) -> None:
        """The calls in flight on ``wire`` fail with TimeoutError unless answered within
        ``seconds`` (give or take the watchdog's period)."""
        wire.deadline = self.loop.time() + seconds
        self._busy.add(wire)
        if self._watchdog is None and not self._closed:
            self._watchdog = self.loop.call_later(self._period(), self._check)

    def _period(self) -> float:
        return min(max(self._timeout / 4, 0.01), 1.0)

    def _check(self) -> None:
        now = self.loop.time()
        for wire in [w for w in self._busy if w.deadline <= now]:
            self._busy.discard(wire)
            wire.expire(self._timeout)
        self._watchdog = None
        if self._busy and not self._closed:
            self._watchdog = self.loop.call_later(self._period(), self._check)

    def _put_back(self, wire: _Wire, reusable: bool) -> None:
        self._busy.discard(wire)
        if reusable and wire.lost is None and not self._closed and len(self._idle) < MAX_IDLE:
            self._idle.append(wire)
            return
        # Failed, or cancelled mid-command: its reply may still come, so it can never
        # carry another command.
        self._disconnect(wire.conn)

    def _disconnect(self, conn: AbstractConnection) -> None:
        task = self.loop.create_task(conn.disconnect(nowait=True))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

"""A TCP proxy with fault controls, for putting a broker's connections through network faults.

``TcpProxy(host, port)`` listens on a free loopback port and forwards every connection it
accepts to ``host:port`` (which must be a loopback address too: these faults stay on this
machine). It runs on an event loop of its own, in a background thread, so a test drives it
from plain sync code:

- ``reset()``: every current connection is reset on both sides at once (RST, as a crashed
  host or a dropped NAT entry does): in-flight requests fail, and clients must reconnect.
- ``stall(seconds)``: no byte moves in either direction, on current or new connections,
  until ``seconds`` have passed; then forwarding resumes where it stopped (nothing is lost).
  Returns at once: the proxy resumes by itself.
- ``stop_accepting()`` / ``start_accepting()``: close the listening socket (new connections
  are refused, as by a server that is down) and open it again on the same port; current
  connections carry on.
- ``upstream_ports()``: the local ports of the proxy's current connections to the target,
  which is how a test finds the server-side sessions of the clients behind the proxy (for
  PostgreSQL, ``pg_stat_activity.client_port``).

Every control call waits at most ``CONTROL_TIMEOUT`` seconds; the proxy shuts itself down
after ``lifetime`` seconds whatever happens, and ``close()`` (or leaving the ``with`` block)
closes every connection and stops the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

T = TypeVar("T")

#: Longest a control call (reset, stall, ...) may take before it raises.
CONTROL_TIMEOUT = 10.0
#: Longest the proxy lives, so that a test that forgets it cannot leave it running.
DEFAULT_LIFETIME = 300.0
CONNECT_TIMEOUT = 5.0
CHUNK = 1 << 16


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Link:
    """One proxied connection: the client's side and the target's side."""

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream = upstream

    def reset(self) -> None:
        """Close both sides with an RST (SO_LINGER 0), not an orderly FIN."""
        for writer in (self.client, self.upstream):
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()

    def close(self) -> None:
        for writer in (self.client, self.upstream):
            writer.transport.close()


class TcpProxy:
    """Forwards connections from a loopback port to ``host:port``; see the module docstring."""

    def __init__(self, host: str, port: int, *, lifetime: float = DEFAULT_LIFETIME) -> None:
        if not _loopback(host):
            raise ValueError(f"TcpProxy forwards to loopback addresses only, not {host!r}")
        self.target = (host, port)
        self.lifetime = lifetime
        self.port = 0
        self.accepted = 0  # connections accepted since start: each reconnection counts
        self.resets = 0  # connections reset by reset()
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._flowing: asyncio.Event | None = None
        self._stalled_until = 0.0
        self._stopped: asyncio.Event | None = None

    # lifecycle (from the test's thread) --------------------------------------------------

    def start(self) -> TcpProxy:
        """Listen on a free loopback port (``self.port``) and start forwarding."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._main(ready, failure))
            finally:
                loop.close()

        self._thread = threading.Thread(target=serve, name="tcp-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(CONTROL_TIMEOUT):
            raise RuntimeError("the TCP proxy did not start listening in time")
        if failure:
            raise failure[0]
        return self

    def close(self) -> None:
        """Close every connection and the listener, and stop the proxy's thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop has just ended by itself
                loop.call_soon_threadsafe(self._stop)
            thread.join(CONTROL_TIMEOUT)
        self._thread = None

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def rewrite(self, url: str) -> str:
        """``url`` with its host and port replaced by the proxy's (user and password kept)."""
        parts = urlsplit(url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@" if userinfo else ""
        return urlunsplit(parts._replace(netloc=f"{netloc}127.0.0.1:{self.port}"))

    # faults (from the test's thread) -----------------------------------------------------

    def reset(self) -> int:
        """Reset every current connection on both sides; returns how many."""
        return self._control(self._reset())

    def stall(self, seconds: float) -> None:
        """Forward nothing for ``seconds`` (from now), then resume. Returns at once."""
        self._control(self._stall(seconds))

    def stop_accepting(self) -> None:
        """Close the listening socket: new connections are refused until start_accepting()."""
        self._control(self._stop_accepting())

    def start_accepting(self) -> None:
        """Listen again, on the same port."""
        self._control(self._listen())

    def upstream_ports(self) -> list[int]:
        """The local ports of the current connections from the proxy to the target."""
        return self._control(self._upstream_ports())

    @property
    def connections(self) -> int:
        return len(self._links)

    def _control(self, coro: Coroutine[Any, Any, T]) -> T:
        loop = self._loop
        if loop is None or self._thread is None or not self._thread.is_alive():
            coro.close()
            raise RuntimeError("the TCP proxy is not running")
        return asyncio.run_coroutine_threadsafe(coro, loop).result(CONTROL_TIMEOUT)

    # the proxy's own loop ------------------------------------------------------------------

    async def _main(self, ready: threading.Event, failure: list[BaseException]) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._stopped = asyncio.Event()
        try:
            await self._listen()
        except BaseException as exc:
            failure.append(exc)
            ready.set()
            return
        ready.set()
        try:
            async with asyncio.timeout(self.lifetime):
                await self._stopped.wait()
        except TimeoutError:
            pass  # lived its lifetime: shut down all the same
        finally:
            if self._server is not None:
                self._server.close()
                self._server = None
            for link in list(self._links):
                link.reset()
            # The handlers see their sockets closed and end by themselves (a handler that
            # is cancelled instead makes asyncio's stream callback log an error).
            if self._handlers:
                await asyncio.wait(self._handlers, timeout=CONTROL_TIMEOUT)

    def _stop(self) -> None:
        if self._stopped is not None:
            self._stopped.set()

    async def _listen(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop_accepting(self) -> None:
        if self._server is not None:
            # Not wait_closed(): from Python 3.12 on it also waits for every connection.
            self._server.close()
            self._server = None

    async def _reset(self) -> int:
        links = list(self._links)
        for link in links:
            link.reset()
        self._links.difference_update(links)
        self.resets += len(links)
        return len(links)

    async def _stall(self, seconds: float) -> None:
        assert self._flowing is not None
        loop = asyncio.get_running_loop()
        until = loop.time() + seconds
        if until <= self._stalled_until:
            return
        self._stalled_until = until
        self._flowing.clear()
        loop.call_at(until, self._resume_if_due)

    def _resume_if_due(self) -> None:
        assert self._flowing is not None
        assert self._loop is not None
        if self._loop.time() >= self._stalled_until:
            self._flowing.set()

    async def _upstream_ports(self) -> list[int]:
        ports = []
        for link in self._links:
            name = link.upstream.get_extra_info("sockname")
            if name is not None:
                ports.append(name[1])
        return ports

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        handler.add_done_callback(self._handlers.discard)
        self.accepted += 1
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                up_reader, up_writer = await asyncio.open_connection(*self.target)
        except (OSError, TimeoutError):
            writer.transport.abort()  # the target is down: so is the proxied connection
            return
        link = _Link(writer, up_writer)
        self._links.add(link)
        pipes = [
            asyncio.ensure_future(self._pipe(reader, up_writer)),
            asyncio.ensure_future(self._pipe(up_reader, writer)),
        ]
        try:
            # When either side ends, the connection ends: close the other side too.
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            if link in self._links:
                self._links.discard(link)
                link.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        with contextlib.suppress(OSError):  # a reset connection (ours or the peer's)
            while data := await reader.read(CHUNK):
                await self._flowing.wait()  # a stall holds the bytes read so far
                writer.write(data)
                await writer.drain()

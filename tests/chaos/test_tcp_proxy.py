"""The fault-injecting TCP proxy does what the broker-fault tests rely on, checked against a
local echo server."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from tests.chaos.tcp_proxy import TcpProxy


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        with contextlib.suppress(OSError):  # the proxy resets connections on purpose
            while data := self.request.recv(4096):
                self.request.sendall(data)


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with TcpProxy("127.0.0.1", server.server_address[1], lifetime=30) as proxy:
            yield proxy
    finally:
        server.shutdown()
        server.server_close()


def connect(proxy: TcpProxy) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=5)


def echo(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    received = b""
    while len(received) < len(data):
        chunk = sock.recv(4096)
        if not chunk:
            break
        received += chunk
    return received


def test_forwards_both_ways_and_names_its_upstream_ports(proxy: TcpProxy) -> None:
    with connect(proxy) as a, connect(proxy) as b:
        assert echo(a, b"hello") == b"hello"
        assert echo(b, b"world" * 10_000) == b"world" * 10_000
        assert len(proxy.upstream_ports()) == 2
        assert proxy.accepted == 2


def test_reset_breaks_every_current_connection_and_new_ones_work(proxy: TcpProxy) -> None:
    with connect(proxy) as sock:
        assert echo(sock, b"x") == b"x"
        assert proxy.reset() == 1
        with pytest.raises(ConnectionResetError):  # an RST, not an orderly close
            sock.recv(1)
    with connect(proxy) as sock:
        assert echo(sock, b"z") == b"z"


def test_stall_holds_bytes_then_delivers_them(proxy: TcpProxy) -> None:
    with connect(proxy) as sock:
        proxy.stall(0.5)
        started = time.monotonic()
        assert echo(sock, b"held") == b"held"
        assert time.monotonic() - started >= 0.45


def test_stop_accepting_refuses_new_connections_until_started_again(proxy: TcpProxy) -> None:
    with connect(proxy) as kept:
        assert echo(kept, b"up") == b"up"  # accepted and forwarded before the listener closes
        proxy.stop_accepting()
        with pytest.raises(ConnectionRefusedError):
            connect(proxy)
        assert echo(kept, b"still") == b"still"
        proxy.start_accepting()
        with connect(proxy) as sock:
            assert echo(sock, b"again") == b"again"


def test_forwards_to_loopback_only() -> None:
    with pytest.raises(ValueError, match="loopback"):
        TcpProxy("192.0.2.1", 5432)

"""``pyproxy --listen-fd``: listening sockets handed over by the supervisor, matched to listeners by address."""

from __future__ import annotations

import os
import socket

import pytest

from pyproxy.io.inherited import InheritedSocketError, adopt


def test_a_listening_socket_is_adopted_under_its_address() -> None:
    original = socket.create_server(("127.0.0.1", 0))
    try:
        fd = os.dup(original.fileno())
        adopted = adopt([fd])
        [(address, sock)] = adopted.items()
        assert address == original.getsockname()
        assert sock.fileno() == fd
        # Connections made now wait in the backlog and are the adopter's to accept.
        client = socket.create_connection(address, timeout=5)
        conn, _ = sock.accept()
        conn.close()
        client.close()
        sock.close()
    finally:
        original.close()


@pytest.mark.parametrize("kind", ["not listening", "udp"])
def test_anything_but_a_listening_tcp_socket_is_refused(kind: str) -> None:
    sock = (socket.socket(socket.AF_INET, socket.SOCK_STREAM) if kind == "not listening"
            else socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    try:
        sock.bind(("127.0.0.1", 0))
        with pytest.raises(InheritedSocketError, match=f"--listen-fd {sock.fileno()}: not a listening TCP socket"):
            adopt([sock.fileno()])
        sock.getsockname()  # still open: a refused descriptor is left alone
    finally:
        sock.close()


def test_a_closed_descriptor_is_refused() -> None:
    r, w = os.pipe()
    os.close(w)
    os.close(r)
    with pytest.raises(InheritedSocketError, match=f"--listen-fd {r}: not an open socket"):
        adopt([r])

"""Listening sockets handed over by the process that started us (socket activation, as systemd does it).

``pyproxy --listen-fd N`` names an open, listening TCP socket the proxy inherited. A listener whose address
is the one that socket is bound to serves it instead of binding its own. The process that keeps a copy (the
supervisor of ``mesh_ctl up``) keeps the port open while the proxy is restarted: clients' connections wait in
the socket's backlog instead of being refused, and the next proxy accepts them. This is what Envoy's hot
restart does by passing listen sockets from one process to the next; here the copy outlives a crash too.

Error handling: a descriptor that is not a listening TCP socket is a :class:`InheritedSocketError` naming it.
"""

from __future__ import annotations

import socket


class InheritedSocketError(ValueError):
    pass


def adopt(fds: list[int]) -> dict[tuple[str, int], socket.socket]:
    """(host, port) the socket is bound to -> the socket, for each inherited descriptor."""
    out: dict[tuple[str, int], socket.socket] = {}
    for fd in fds:
        try:
            sock = socket.socket(fileno=fd)
        except OSError as e:
            raise InheritedSocketError(f"--listen-fd {fd}: not an open socket ({e.strerror})") from None
        try:
            listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        except OSError:
            listening = 0
        if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET, socket.AF_INET6) or not listening:
            sock.detach()
            raise InheritedSocketError(f"--listen-fd {fd}: not a listening TCP socket")
        host, port = sock.getsockname()[:2]
        out[(host, port)] = sock
    return out

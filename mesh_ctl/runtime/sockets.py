"""The sidecars' traffic ports, held open by the supervisor across restarts (socket activation).

The supervisor binds each sidecar's inbound and outbound listening sockets itself, once, and hands them to
every pyproxy it starts for that sidecar (``pyproxy --listen-fd``, see :mod:`pyproxy.io.inherited`). When a
sidecar dies, the kernel keeps accepting connections for it into the socket's backlog (the supervisor's copy
keeps the socket alive), and the restarted sidecar serves them: callers see a slower call, not a refused
connection. systemd's socket activation works the same way; Envoy's hot restart passes its listen sockets to
the next process for the same reason.

Resource handling: the sockets live until :meth:`HeldSockets.close`, which the supervisor calls after it has
stopped every process. A port that cannot be bound is an ``OSError`` naming the sidecar and the address.
"""

from __future__ import annotations

import socket

from mesh_ctl.runtime.specs import ProcessSpec

TRAFFIC_ROLES = ("inbound", "outbound")  # the sidecar's listeners; admin and metrics ports are its own
BACKLOG = 4096  # connections that may wait while the sidecar restarts (capped by net.core.somaxconn)


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class HeldSockets:
    def __init__(self) -> None:
        self._by_process: dict[str, list[socket.socket]] = {}

    def fds_for(self, spec: ProcessSpec) -> list[int]:
        """The descriptors to hand to ``spec``'s process (bound on first use; none for other roles)."""
        if spec.role != "sidecar":
            return []
        held = self._by_process.get(spec.name)
        if held is None:
            held = self._by_process[spec.name] = []
            for role in TRAFFIC_ROLES:
                address = spec.addresses.get(role)
                if address is not None:
                    held.append(_listen(spec.name, role, *_split(address)))
        return [s.fileno() for s in held]

    def close(self) -> None:
        for held in self._by_process.values():
            for s in held:
                s.close()
        self._by_process.clear()


def _listen(owner: str, role: str, host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # as pyproxy binds IPv6 listeners
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError as e:
        sock.close()
        raise OSError(e.errno, f"{owner}: cannot listen on its {role} address {host}:{port}: {e.strerror}") from e
    return sock

"""Proxy implementations under test, one module each, all driven through :class:`base.ProxyImpl`.

Each module turns a :class:`base.Hop` (listen port, upstream port, which side speaks mTLS, certificates)
into its own configuration file, starts the proxy as a real foreground process in the run's temp dir and
returns once it accepts connections. They are configured to be comparable: one worker/thread, keep-alive
to the upstream, HTTP/2 on both sides, mTLS with a required client certificate on the B side.
"""

from __future__ import annotations

from bench.proxies.base import Hop, ProxyImpl
from bench.proxies.haproxy import HAProxy
from bench.proxies.nginx import Nginx
from bench.proxies.pyproxy import PyProxy

IMPLEMENTATIONS: dict[str, ProxyImpl] = {"pyproxy": PyProxy(), "nginx": Nginx(), "haproxy": HAProxy()}

__all__ = ["IMPLEMENTATIONS", "Hop", "ProxyImpl"]

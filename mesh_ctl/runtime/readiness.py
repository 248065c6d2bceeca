"""Which workloads are ready, as the supervisor sees them, told to the control plane (a kubelet's role).

A workload whose app died, or whose sidecar is down for longer than an immediate restart (it crash-loops and
waits out a back-off), is not ready: the supervisor tells the control plane (``PUT /v1/workloads/<ns>/<name>
/ready``) and the proxies' EDS leave it out until it is ready again, as Kubernetes takes a pod that is not
ready out of its Service's endpoints. A sidecar restarted at once keeps its endpoint: its ports stay open
(:mod:`mesh_ctl.runtime.sockets`) and callers' connections wait in the backlog for the new sidecar.

What the control plane was told is kept; a change that could not be told (the control plane is down or
restarting) is told again at the next :meth:`Readiness.sync`, and everything again to a restarted control
plane (:meth:`Readiness.control_plane_restarted`: its registry starts with every workload ready).
"""

from __future__ import annotations

import time
from pathlib import Path

from mesh_ctl.client import Client, ControlPlaneError, Endpoint

RETRY_AFTER = 0.5  # s between attempts while the control plane does not answer
TIMEOUT = 2.0


class Readiness:
    def __init__(self, api: str, token_file: Path) -> None:
        self._client = Client(Endpoint(api, "the mesh's control plane", token_file=token_file), timeout=TIMEOUT)
        self._desired: dict[tuple[str, str], bool] = {}
        self._told: dict[tuple[str, str], bool] = {}  # absent: ready (the control plane starts so)
        self._retry_at = 0.0
        self.last_error = ""

    def set(self, namespace: str, name: str, ready: bool) -> None:
        self._desired[(namespace, name)] = ready

    def is_ready(self, namespace: str, name: str) -> bool:
        return self._desired.get((namespace, name), True)

    def control_plane_restarted(self) -> None:
        self._told.clear()
        self._retry_at = 0.0

    @property
    def pending(self) -> bool:
        return any(self._told.get(k, True) != v for k, v in self._desired.items())

    def sync(self) -> None:
        """Tell the control plane what changed since it was last told (never raises)."""
        if not self.pending or time.monotonic() < self._retry_at:
            return
        for (namespace, name), ready in list(self._desired.items()):
            if self._told.get((namespace, name), True) == ready:
                continue
            try:
                self._client.set_ready(name, namespace, ready)
            except ControlPlaneError as e:
                self.last_error = str(e)
                self._retry_at = time.monotonic() + RETRY_AFTER
                return
            self._told[(namespace, name)] = ready

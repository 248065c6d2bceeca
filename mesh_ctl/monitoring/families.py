"""Every metric family of the control plane, declared once, under istiod's names, labels, units and buckets.

========================================== ========= ====================== =========================================
name                                       type      labels                 Istio source (istio/istio)
========================================== ========= ====================== =========================================
pilot_xds                                  gauge     version                pilot/pkg/xds/monitoring.go (xdsClients)
pilot_xds_pushes                           counter   type                   pilot/pkg/xds/monitoring.go (pushes;
                                                                            ``<type>_senderr`` on a failed send)
pilot_xds_push_time                        histogram type                   pilot/pkg/xds/monitoring.go (pushTime)
pilot_xds_config_size_bytes                histogram type                   pilot/pkg/xds/monitoring.go
pilot_proxy_convergence_time               histogram                        pilot/pkg/xds/monitoring.go
pilot_proxy_queue_time                     histogram                        pilot/pkg/xds/monitoring.go
pilot_debounce_time                        histogram                        pilot/pkg/xds/monitoring.go
pilot_push_triggers                        counter   type                   pilot/pkg/xds/monitoring.go
pilot_services                             gauge                            pilot/pkg/xds/monitoring.go
pilot_virt_services                        gauge                            pilot/pkg/model/push_context.go
pilot_xds_send_time                        histogram                        pkg/xds/monitoring.go (sendTime)
pilot_total_xds_rejects                    counter   type                   pkg/xds/monitoring.go (totalXDSRejects)
pilot_xds_{cds,eds,lds,rds}_reject         gauge     node, err              pkg/xds/monitoring.go (kept by Istio
                                                                            "for backwards compatibility")
pilot_xds_expired_nonce                    counter   type                   pkg/xds/monitoring.go (ExpiredNonce)
pilot_k8s_cfg_events                       counter   type, event            pilot/pkg/config/kube/crdclient
galley_validation_passed                   counter   group, version,        pkg/webhooks/validation/server/
                                                     resource               monitoring.go
galley_validation_failed                   counter   group, version,        pkg/webhooks/validation/server/
                                                     resource, reason       monitoring.go
citadel_server_csr_count                   counter                          security/pkg/server/ca/monitoring.go
citadel_server_authentication_failure_count counter                         security/pkg/server/ca/monitoring.go
citadel_server_csr_parsing_err_count       counter                          security/pkg/server/ca/monitoring.go
citadel_server_id_extraction_err_count     counter                          security/pkg/server/ca/monitoring.go
citadel_server_csr_sign_err_count          counter   error                  security/pkg/server/ca/monitoring.go
citadel_server_success_cert_issuance_count counter                          security/pkg/server/ca/monitoring.go
citadel_server_root_cert_expiry_timestamp  gauge                            security/pkg/server/ca/monitoring.go
citadel_server_root_cert_expiry_seconds    gauge                            security/pkg/server/ca/monitoring.go
citadel_server_cert_chain_expiry_timestamp gauge                            security/pkg/server/ca/monitoring.go
citadel_server_cert_chain_expiry_seconds   gauge                            security/pkg/server/ca/monitoring.go
istiod_uptime_seconds                      gauge                            pilot/pkg/bootstrap/monitoring.go
pilot_info                                 gauge     version                pilot/pkg/bootstrap/monitoring.go
istio_build                                gauge     component, tag         pkg/version (component="pilot")
process_*                                  (Go's process collector in istiod; prometheus_client's here)
========================================== ========= ====================== =========================================

Counters are exposed without ``_total`` (:mod:`.exposition`), as istiod's OpenTelemetry exporter does
(``WithoutCounterSuffixes``): Istio's dashboards query ``pilot_xds_pushes``, not ``pilot_xds_pushes_total``.
The ``_seconds`` expiry gauges and the uptime are computed when scraped. Label values follow Istio: ``type`` is
``cds``/``eds``/``lds``/``rds``/``sds``, ``node`` is the proxy's ``pod.namespace`` name, ``err`` the NACK's
gRPC code as Go prints it (``InvalidArgument``), a validation ``reason`` is ``invalid_resource``,
``yaml_decode_error`` or ``unknown_type``, a config ``event`` is ``add``/``update``/``delete``.

Thread safety: prometheus_client's metrics lock internally; the CA records from its worker thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

VERSION = "0.1.0"  # minimesh's version: pilot_info / istio_build (pyproject.toml)

# Istio's buckets (seconds, bytes).
PUSH_BUCKETS = (.01, .1, 1, 3, 5, 10, 20, 30)  # pilot_xds_push_time, pilot_xds_send_time, pilot_debounce_time
PROXY_BUCKETS = (.1, .5, 1, 3, 5, 10, 20, 30)  # pilot_proxy_convergence_time, pilot_proxy_queue_time
SIZE_BUCKETS = (1, 10000, 1000000, 4000000, 10000000, 40000000)  # pilot_xds_config_size_bytes

REJECT_TYPES = ("cds", "eds", "lds", "rds")  # the types with a pilot_xds_<type>_reject gauge

# Go's codes.Code.String(): the `err` label of pilot_xds_<type>_reject.
GRPC_CODE_NAMES = ("OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound", "AlreadyExists",
                   "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted", "OutOfRange",
                   "Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated")

# Istio's validation failure reasons (pkg/webhooks/validation/server/monitoring.go).
INVALID_RESOURCE = "invalid_resource"
YAML_DECODE_ERROR = "yaml_decode_error"
UNKNOWN_TYPE = "unknown_type"

# Istio's config event names (crdclient): the store's actions map onto them.
CONFIG_EVENTS = {"created": "add", "configured": "update", "deleted": "delete"}

# Istio's caerror types (security/pkg/pki/error): the `error` label of citadel_server_csr_sign_err_count.
TTL_ERROR = "TTL_ERROR"
CA_NOT_READY = "CA_NOT_READY"
CERT_GEN_ERROR = "CERT_GEN_ERROR"

Expiry = Callable[[], float]  # a certificate's not-after, seconds since the epoch


def grpc_code_name(code: int) -> str:
    return GRPC_CODE_NAMES[code] if 0 <= code < len(GRPC_CODE_NAMES) else f"Code({code})"


class ControlPlaneMetrics:
    """One control plane's metrics: ``registry`` holds them all (and the process collector); the methods are
    what the control plane's parts call. ``bare_counters``: the counter families exposed without ``_total``."""

    def __init__(self, version: str = VERSION, *, clock: Callable[[], float] = time.time,
                 process: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.bare_counters: set[str] = set()
        self.clock = clock
        self.started = clock()
        r = self.registry

        # pilot/pkg/xds/monitoring.go
        self.xds_clients = Gauge("pilot_xds", "Number of endpoints connected to this pilot using XDS.",
                                 ["version"], registry=r)
        self.pushes = self._counter("pilot_xds_pushes", "Pilot build and send errors for lds, rds, cds and eds.",
                                    ["type"])
        self.push_time = Histogram("pilot_xds_push_time",
                                   "Total time in seconds Pilot takes to push lds, rds, cds and eds.", ["type"],
                                   buckets=PUSH_BUCKETS, registry=r)
        self.config_size = Histogram("pilot_xds_config_size_bytes",
                                     "Distribution of configuration sizes pushed to clients", ["type"],
                                     buckets=SIZE_BUCKETS, registry=r)
        self.convergence = Histogram("pilot_proxy_convergence_time", "Delay in seconds between config change and "
                                     "a proxy receiving all required configuration.", buckets=PROXY_BUCKETS,
                                     registry=r)
        self.queue_time = Histogram("pilot_proxy_queue_time", "Time in seconds, a proxy is in the push queue "
                                    "before being dequeued.", buckets=PROXY_BUCKETS, registry=r)
        self.debounce_time = Histogram("pilot_debounce_time", "Delay in seconds between the first config enters "
                                       "debouncing and the merged push request is pushed into the push queue.",
                                       buckets=PUSH_BUCKETS, registry=r)
        self.push_triggers = self._counter("pilot_push_triggers", "Total number of times a push was triggered, "
                                           "labeled by reason for the push.", ["type"])
        self.services = Gauge("pilot_services", "Total services known to pilot.", registry=r)
        self.virt_services = Gauge("pilot_virt_services", "Total virtual services known to pilot.", registry=r)

        # pkg/xds/monitoring.go
        self.send_time = Histogram("pilot_xds_send_time",
                                   "Total time in seconds Pilot takes to send generated configuration.",
                                   buckets=PUSH_BUCKETS, registry=r)
        self.total_rejects = self._counter("pilot_total_xds_rejects",
                                           "Total number of XDS responses from pilot rejected by proxy.", ["type"])
        self.type_rejects = {
            t: Gauge(f"pilot_xds_{t}_reject", f"Pilot rejected {t.upper()}{' configs' if t == 'cds' else ''}.",
                     ["node", "err"], registry=r)
            for t in REJECT_TYPES}
        self.expired_nonces = self._counter("pilot_xds_expired_nonce",
                                            "Total number of XDS requests with an expired nonce.", ["type"])

        # configuration: pilot's config events, the validating webhook's verdicts
        self.cfg_events = self._counter("pilot_k8s_cfg_events", "Events from k8s config.", ["type", "event"])
        self.validation_passed = self._counter("galley_validation_passed", "Resource is valid",
                                               ["group", "version", "resource"])
        self.validation_failed = self._counter("galley_validation_failed", "Resource validation failed",
                                               ["group", "version", "resource", "reason"])

        # security/pkg/server/ca/monitoring.go
        self.csr_count = self._counter("citadel_server_csr_count", "The number of CSRs received by Citadel server.")
        self.authn_errors = self._counter("citadel_server_authentication_failure_count",
                                          "The number of authentication failures.")
        self.csr_parsing_errors = self._counter("citadel_server_csr_parsing_err_count",
                                                "The number of errors occurred when parsing the CSR.")
        self.id_extraction_errors = self._counter("citadel_server_id_extraction_err_count",
                                                  "The number of errors occurred when extracting the ID from CSR.")
        self.sign_errors = self._counter("citadel_server_csr_sign_err_count",
                                         "The number of errors occurred when signing the CSR.", ["error"])
        self.issued = self._counter("citadel_server_success_cert_issuance_count",
                                    "The number of certificates issuances that have succeeded.")
        self._expiry: dict[str, Gauge] = {
            name: Gauge(name, doc, registry=r) for name, doc in (
                ("citadel_server_root_cert_expiry_timestamp", "The unix timestamp, in seconds, when Citadel root "
                 "cert will expire. A negative time indicates the cert is expired."),
                ("citadel_server_root_cert_expiry_seconds", "The time remaining, in seconds, before the root cert "
                 "will expire. A negative value indicates the cert is expired."),
                ("citadel_server_cert_chain_expiry_timestamp", "The unix timestamp, in seconds, when Citadel cert "
                 "chain will expire. A negative time indicates the cert is expired."),
                ("citadel_server_cert_chain_expiry_seconds", "The time remaining, in seconds, before the cert "
                 "chain will expire. A negative value indicates the cert is expired."))}

        # pilot/pkg/bootstrap/monitoring.go, pkg/version
        Gauge("istiod_uptime_seconds", "Current istiod server uptime in seconds",
              registry=r).set_function(lambda: self.clock() - self.started)
        Gauge("pilot_info", "Pilot version and build information.", ["version"], registry=r).labels(version).set(1)
        Gauge("istio_build", "Istio component build info", ["component", "tag"],
              registry=r).labels("pilot", version).set(1)
        if process:
            ProcessCollector(registry=r)

    def _counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
        self.bare_counters.add(name)
        return Counter(name, doc, list(labels), registry=self.registry)

    # ------------------------------------------------------------------------------------------ xDS

    def proxy_connected(self, version: str) -> None:
        self.xds_clients.labels(version).inc()

    def proxy_disconnected(self, version: str) -> None:
        self.xds_clients.labels(version).dec()

    def pushed(self, type_: str, push_seconds: float, send_seconds: float, size: int) -> None:
        """One response sent: ``push_seconds`` from building it to written, ``send_seconds`` the write."""
        self.pushes.labels(type_).inc()
        self.push_time.labels(type_).observe(push_seconds)
        self.send_time.observe(send_seconds)
        self.config_size.labels(type_).observe(size)

    def send_failed(self, type_: str) -> None:
        self.pushes.labels(f"{type_}_senderr").inc()

    def rejected(self, type_: str, node: str, code: int) -> None:
        """A NACK (``code``: the request's error_detail.code)."""
        self.total_rejects.labels(type_).inc()
        gauge = self.type_rejects.get(type_)
        if gauge is not None:
            gauge.labels(node, grpc_code_name(code)).inc()

    def expired_nonce(self, type_: str) -> None:
        self.expired_nonces.labels(type_).inc()

    def queued(self, seconds: float) -> None:
        self.queue_time.observe(seconds)

    def converged(self, seconds: float) -> None:
        self.convergence.observe(seconds)

    def debounced(self, seconds: float) -> None:
        self.debounce_time.observe(seconds)

    def triggered(self, type_: str, count: int = 1) -> None:
        self.push_triggers.labels(type_).inc(count)

    def known_config(self, services: int, virtual_services: int) -> None:
        self.services.set(services)
        self.virt_services.set(virtual_services)

    # ------------------------------------------------------------------------------------------ config

    def config_changed(self, changes: Iterable[tuple[str, str]]) -> None:
        """The store committed ``(kind, action)`` changes (``unchanged`` ones are not events)."""
        for kind, action in changes:
            event = CONFIG_EVENTS.get(action)
            if event is not None:
                self.cfg_events.labels(kind, event).inc()

    def validation_passed_for(self, group: str, version: str, resource: str) -> None:
        self.validation_passed.labels(group, version, resource).inc()

    def validation_failed_for(self, group: str, version: str, resource: str, reason: str) -> None:
        self.validation_failed.labels(group, version, resource, reason).inc()

    # ------------------------------------------------------------------------------------------ CA

    def csr_received(self) -> None:
        self.csr_count.inc()

    def csr_issued(self) -> None:
        self.issued.inc()

    def authentication_failed(self) -> None:
        self.authn_errors.inc()

    def csr_parsing_failed(self) -> None:
        self.csr_parsing_errors.inc()

    def id_extraction_failed(self) -> None:
        self.id_extraction_errors.inc()

    def signing_failed(self, error: str) -> None:
        self.sign_errors.labels(error).inc()

    def watch_ca(self, root_expiry: Expiry, chain_expiry: Expiry) -> None:
        """Read the signing root's and the signing chain's not-after when scraped (a root rotation moves them)."""
        g = self._expiry
        g["citadel_server_root_cert_expiry_timestamp"].set_function(root_expiry)
        g["citadel_server_root_cert_expiry_seconds"].set_function(lambda: root_expiry() - self.clock())
        g["citadel_server_cert_chain_expiry_timestamp"].set_function(chain_expiry)
        g["citadel_server_cert_chain_expiry_seconds"].set_function(lambda: chain_expiry() - self.clock())

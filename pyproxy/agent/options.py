"""What the identity agent is told: the CA, the token, the identity, the certificate's shape.

Flags (``pyproxy --ca-address HOST:PORT --token-path FILE [--ca-root FILE] [--cert-ttl 24h]
[--key-algorithm rsa|ecdsa] [--trust-domain cluster.local] [--namespace NS] [--service-account SA]``);
the namespace and service account default to the bootstrap's node metadata ``NAMESPACE`` and
``SERVICE_ACCOUNT`` (what Istio's injector puts there), the cluster id sent to the CA to ``CLUSTER_ID``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pyproxy.config.model import NodeInfo

DEFAULT_TTL = 24 * 3600.0  # Istio SECRET_TTL
MAX_TTL = 90 * 24 * 3600.0  # Istio MAX_WORKLOAD_CERT_TTL: a CA refuses longer
MIN_TTL = 1.0
DEFAULT_TRUST_DOMAIN = "cluster.local"
KeyAlgorithm = Literal["rsa", "ecdsa"]

_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|m|s)")
# Istio's pkg/spiffe: lower-case DNS-ish labels.
_NAME = re.compile(r"^[a-z0-9]([a-z0-9.\-]*[a-z0-9])?$")
_TRUST_DOMAIN = re.compile(r"^[a-z0-9.\-_]+$")


class AgentConfigError(ValueError):
    pass


def parse_duration(text: str) -> float:
    """Seconds from a Go-style duration (``24h``, ``1h30m``, ``5s``, ``500ms``) or a plain number of seconds."""
    s = text.strip()
    try:
        return float(s)
    except ValueError:
        pass
    pos, total = 0, 0.0
    for match in _DURATION.finditer(s):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(s) or not s:
        raise AgentConfigError(f"invalid duration {text!r} (examples: 24h, 90m, 5s)")
    return total


@dataclass(frozen=True, slots=True)
class AgentOptions:
    ca_host: str
    ca_port: int
    token_path: str
    namespace: str
    service_account: str
    trust_domain: str = DEFAULT_TRUST_DOMAIN
    ca_root: str | None = None  # verify the CA's TLS certificate with this bundle; None = plain gRPC (15010)
    ttl: float = DEFAULT_TTL
    key_algorithm: KeyAlgorithm = "rsa"
    cluster_id: str = ""  # sent as the ``ClusterID`` metadata, as istio-agent does
    secret_dir: str | None = None  # parent of the private directory (default: /dev/shm when usable, else TMPDIR)
    request_timeout: float = 10.0  # one CreateCertificate call, connection included

    @property
    def spiffe_id(self) -> str:
        return f"spiffe://{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    @property
    def ca_address(self) -> str:
        return f"[{self.ca_host}]:{self.ca_port}" if ":" in self.ca_host else f"{self.ca_host}:{self.ca_port}"

    @classmethod
    def build(cls, *, ca_address: str, token_path: str | None, node: NodeInfo, ca_root: str | None = None,
              ttl: str = "24h", key_algorithm: str = "rsa", trust_domain: str = DEFAULT_TRUST_DOMAIN,
              namespace: str | None = None, service_account: str | None = None,
              secret_dir: str | None = None) -> AgentOptions:
        """Check the flags against each other and the bootstrap's node; raises AgentConfigError."""
        host, sep, port = ca_address.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise AgentConfigError(f"--ca-address {ca_address!r}: expected HOST:PORT")
        if not token_path:
            raise AgentConfigError("--ca-address needs --token-path (the workload's bootstrap token)")
        ns = namespace or _text(node.meta("NAMESPACE"))
        sa = service_account or _text(node.meta("SERVICE_ACCOUNT"))
        if not ns or not sa:
            raise AgentConfigError("the workload identity is unknown: set the bootstrap's node.metadata NAMESPACE "
                                   "and SERVICE_ACCOUNT, or --namespace and --service-account")
        for what, value in (("namespace", ns), ("service account", sa)):
            if not _NAME.match(value):
                raise AgentConfigError(f"{what} {value!r} is not a valid name for a SPIFFE ID")
        if not _TRUST_DOMAIN.match(trust_domain):
            raise AgentConfigError(f"--trust-domain {trust_domain!r} is not a valid trust domain")
        seconds = parse_duration(ttl)
        if not MIN_TTL <= seconds <= MAX_TTL:
            raise AgentConfigError(f"--cert-ttl {ttl}: must be between 1s and 90 days (2160h)")
        if key_algorithm not in ("rsa", "ecdsa"):
            raise AgentConfigError(f"--key-algorithm {key_algorithm!r}: rsa or ecdsa")
        algorithm: KeyAlgorithm = "ecdsa" if key_algorithm == "ecdsa" else "rsa"
        if ca_root is not None:
            _check_bundle(ca_root)
        return cls(ca_host=host, ca_port=int(port), token_path=token_path, namespace=ns, service_account=sa,
                   trust_domain=trust_domain, ca_root=ca_root, ttl=seconds, key_algorithm=algorithm,
                   cluster_id=_text(node.meta("CLUSTER_ID")), secret_dir=secret_dir)


def _check_bundle(path: str) -> None:
    from cryptography import x509

    try:
        with open(path, "rb") as f:
            x509.load_pem_x509_certificates(f.read())
    except (OSError, ValueError) as e:
        raise AgentConfigError(f"--ca-root {path}: not a readable PEM certificate bundle ({e})") from None


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""

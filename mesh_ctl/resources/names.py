"""Names, hosts, labels and durations, checked the way Kubernetes and Istio check them.

Sources: Kubernetes ``apimachinery/pkg/util/validation`` (RFC 1123 names, qualified label keys) and Istio
``pkg/config/labels`` + ``pkg/config/validation/agent`` (hosts with wildcards, label instances,
``ValidateDuration``). Each check returns ``None`` when the value is fine, else a one-line reason.
"""

from __future__ import annotations

import re

DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253

_K8S_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
_K8S_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
# Istio's labels package allows upper case in DNS labels (dns1123LabelFmt = "[a-zA-Z0-9](?:[-a-zA-Z0-9]*...").
_ISTIO_LABEL = re.compile(r"[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?\Z")
_ISTIO_WILDCARD_LABEL = re.compile(r"(\*|(\*|\*-)?[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?)\Z")
_QUALIFIED_NAME = re.compile(r"(?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]\Z")
_LABEL_VALUE = re.compile(r"((?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?\Z")


# ------------------------------------------------------------------------------------ Kubernetes metadata


def k8s_name_problem(name: str) -> str | None:
    """metadata.name of a custom resource: an RFC 1123 subdomain (lower case, digits, '-', '.'; <= 253)."""
    if not name:
        return "name is required"
    if len(name) > DNS1123_SUBDOMAIN_MAX:
        return f"must be no more than {DNS1123_SUBDOMAIN_MAX} characters"
    if not _K8S_SUBDOMAIN.match(name):
        return (
            f"invalid name {name!r}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
            "characters, '-' or '.', and must start and end with an alphanumeric character"
        )
    return None


def k8s_namespace_problem(namespace: str) -> str | None:
    """metadata.namespace: an RFC 1123 label (lower case, digits, '-'; <= 63)."""
    if len(namespace) > DNS1123_LABEL_MAX:
        return f"must be no more than {DNS1123_LABEL_MAX} characters"
    if not _K8S_LABEL.match(namespace):
        return (
            f"invalid namespace {namespace!r}: a lowercase RFC 1123 label must consist of lower case "
            "alphanumeric characters or '-', and must start and end with an alphanumeric character"
        )
    return None


def k8s_label_key_problem(key: str) -> str | None:
    """A label or annotation key: ``[prefix/]name``, prefix an RFC 1123 subdomain, name a qualified name."""
    prefix, slash, name = key.rpartition("/")
    if not slash:
        name = key
    if slash and (not prefix or len(prefix) > DNS1123_SUBDOMAIN_MAX or not _K8S_SUBDOMAIN.match(prefix)):
        return f"invalid key {key!r}: the prefix must be a lowercase RFC 1123 subdomain"
    if not name or len(name) > DNS1123_LABEL_MAX or not _QUALIFIED_NAME.match(name):
        return (
            f"invalid key {key!r}: name part must be 63 characters or less, consist of alphanumeric "
            "characters, '-', '_' or '.', and start and end with an alphanumeric character"
        )
    return None


def k8s_label_value_problem(value: str) -> str | None:
    if len(value) > DNS1123_LABEL_MAX or not _LABEL_VALUE.match(value):
        return (
            f"invalid label value {value!r}: must be 63 characters or less, empty or alphanumeric with "
            "'-', '_' or '.' inside"
        )
    return None


# ------------------------------------------------------------------------------------------ Istio names


def is_dns1123_label(value: str) -> bool:
    """Istio's ``labels.IsDNS1123Label`` (upper case allowed)."""
    return len(value) <= DNS1123_LABEL_MAX and _ISTIO_LABEL.match(value) is not None


def _dns1123_labels_problem(domain: str) -> str | None:
    parts = domain.split(".")
    if parts[-1].isdigit():
        return f"domain name {domain!r} invalid (top level domain {parts[-1]!r} cannot be all-numeric)"
    for i, label in enumerate(parts):
        if i == len(parts) - 1 and label == "":  # "istio.io." is unambiguous
            return None
        if not is_dns1123_label(label):
            return f"domain name {domain!r} invalid (label {label!r} invalid)"
    return None


def wildcard_domain_problem(domain: str) -> str | None:
    """Istio ``ValidateWildcardDomain``: an FQDN or short name, ``*`` allowed only as the first label."""
    if len(domain) > 255:
        return f"domain name {domain!r} too long (max 255)"
    if not domain:
        return "empty domain name not allowed"
    first, dot, rest = domain.partition(".")
    if len(first) > DNS1123_LABEL_MAX or not _ISTIO_WILDCARD_LABEL.match(first):
        return f"domain name {domain!r} invalid (label {first!r} invalid)"
    return _dns1123_labels_problem(rest) if dot else None


def fqdn_problem(fqdn: str) -> str | None:
    if len(fqdn) > 255:
        return f"domain name {fqdn!r} too long (max 255)"
    if not fqdn:
        return "empty domain name not allowed"
    return _dns1123_labels_problem(fqdn)


def istio_labels_problem(labels: dict[str, str]) -> str | None:
    """Istio ``labels.Instance.Validate``: keys are qualified names with an optional DNS prefix."""
    for key, value in labels.items():
        prefix, slash, name = key.rpartition("/")
        if not slash:
            name = key
        ok = bool(name) and _QUALIFIED_NAME.match(name) is not None
        if slash:
            ok = ok and all(is_dns1123_label(p) for p in prefix.split("."))
            if ok and len(prefix) > DNS1123_SUBDOMAIN_MAX:
                return f"invalid tag key: {key!r} (DNS prefix is too long)"
        if not ok:
            return f"invalid tag key: {key!r}"
        if len(name) > DNS1123_LABEL_MAX:
            return f"invalid tag key: {key!r} (name is too long)"
        if not _LABEL_VALUE.match(value):
            return f"invalid tag value: {value!r}"
    return None


def resolve_host(host: str, namespace: str, domain: str = "cluster.local") -> str:
    """Istio ``ResolveShortnameToFQDN``: a name without dots is ``<name>.<ns>.svc.<domain>``; others stay."""
    if host == "*" or "." in host or ":" in host:
        return host
    return f"{host}.{namespace}.svc.{domain}"


def host_matches(pattern: str, host: str) -> bool:
    """Istio ``host.Name.Matches`` for one wildcard side: ``*.example.com`` covers ``a.example.com``."""
    if pattern in (host, "*"):
        return True
    if pattern.startswith("*"):
        return host.endswith(pattern[1:])
    return False


# --------------------------------------------------------------------------------------------- durations

# Go's time.ParseDuration, which both Kubernetes CEL's duration() and Istio's YAML decoding accept:
# "300ms", "1.5h", "2h45m", "-1.5s"; a bare "0" is allowed. Units: ns, us (µs, μs), ms, s, m, h.
_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
}
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
MAX_DURATION_NS = 2**63 - 1


def parse_duration_ns(text: str) -> int | None:
    """A Go duration string -> nanoseconds, or None if it is not one."""
    s = text
    sign = 1
    if s[:1] in "+-" and s:
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        return None
    total = 0
    pos = 0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if m is None:
            return None
        number, unit = m.group(1), m.group(2)
        whole, _, frac = number.partition(".")
        scale = _UNITS_NS[unit]
        total += int(whole or "0") * scale
        if frac:
            total += int(frac) * scale // 10 ** len(frac)
        pos = m.end()
    if total > MAX_DURATION_NS:
        return None
    return sign * total


def parse_duration(text: str) -> float | None:
    """A Go duration string -> seconds (float), or None if it is not one. ``"1m30s"`` -> 90.0."""
    ns = parse_duration_ns(text)
    return None if ns is None else ns / 1e9


def istio_duration_problem(text: str) -> str | None:
    """Istio ``agent.ValidateDuration``: >= 1ms and a whole number of milliseconds."""
    ns = parse_duration_ns(text)
    if ns is None:
        return f"invalid duration {text!r} (examples: 100ms, 1.5s, 2m, 1h30m)"
    if ns < 1_000_000:
        return "duration must be greater than 1ms"
    if ns % 1_000_000:
        return "only durations to ms precision are supported"
    return None

"""A proxy's live configuration, like `istioctl proxy-config`: read from the sidecar's admin API.

    mesh_ctl proxy-config listeners|routes|clusters|endpoints|secret|all WORKLOAD [-o table|short|json|yaml]
                          [--admin HOST:PORT] [--from proxy|control-plane]
    mesh_ctl proxy-config endpoints WORKLOAD [--cluster NAME] [--address IP] [--port N] [--status HEALTHY|...]

WORKLOAD names a sidecar (``client`` or ``client.default``). Its admin address comes from --admin, else the
run dir's state (`mesh_ctl up`), else the control plane's registry; an unknown name is an error that lists
the known ones (exit 1). Listeners, routes and clusters come from the sidecar's ``/config_dump`` (static and
dynamic, inline route configurations included), endpoints from ``/clusters?format=json``. ``-o json`` (or
``yaml``) prints those resources raw; ``-o short`` is the same as the default table except for endpoints.

``endpoints`` shows istioctl's columns (ENDPOINT, STATUS, OUTLIER CHECK, CLUSTER) and minimesh's: requests
in flight, until when and why outlier detection ejected an endpoint, and its cluster's circuit breakers
(``rq 3/3 OPEN``); ``-o short`` prints istioctl's four columns alone, ``-o json`` istioctl's JSON (the
ClusterStatus of every cluster with a matching endpoint, with pyproxy's extension fields). --cluster,
--address, --port and --status filter the endpoints, as istioctl's flags do. See ``_endpoints.py``.

``secret`` shows the certificates the sidecar uses, from its ``/certs`` (Envoy's shape), like `istioctl
proxy-config secret` (RESOURCE NAME, TYPE, STATUS, VALID CERT, SERIAL NUMBER, NOT AFTER, NOT BEFORE, + DAYS LEFT
and SPIFFE ID): a row for its own certificate (``default``, type ``Cert Chain``) and one per root of its trust
bundle (``ROOTCA``, type ``CA``; two during a root rotation), then the roots' SHA-256 fingerprints (compare
them with `mesh_ctl ca status`). ``-o json``: the same rows, and /certs itself.

``--from control-plane`` shows instead what the control plane computed for a connected proxy (its
`proxy-status` NAME or node id): the only view of a proxyless gRPC client, which has no admin API (and no
secrets: a proxy's certificate never leaves it).
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import yaml

from mesh_ctl import client
from mesh_ctl.commands import _endpoints
from mesh_ctl.runtime.state import RunDir, StateError, read_state, resolve_run_dir

Doc = Mapping[str, Any]
SECTIONS = ("listeners", "routes", "clusters", "endpoints")
CHOICES = (*SECTIONS, "secret", "all", "listener", "route", "cluster", "endpoint", "secrets")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("section", choices=CHOICES, metavar="listeners|routes|clusters|endpoints|secret|all")
    p.add_argument("workload", metavar="WORKLOAD", help="the sidecar's workload (client, client.default)")
    p.add_argument("-o", "--output", choices=("table", "short", "json", "yaml"), default="table",
                   help="table (default); short: for endpoints, istioctl's four columns only; json or yaml: raw")
    p.add_argument("--admin", metavar="HOST:PORT", help="the sidecar's admin address (default: looked up)")
    p.add_argument("--from", dest="source", choices=("proxy", "control-plane"), default="proxy",
                   help="proxy: its live config (default); control-plane: what the control plane computed")
    ep = p.add_argument_group("endpoints", "filters, as istioctl's (exact, case-insensitive)")
    ep.add_argument("--cluster", default="", help="only the endpoints of this cluster")
    ep.add_argument("--address", default="", help="only endpoints with this address")
    ep.add_argument("--port", type=int, default=0, help="only endpoints with this port")
    ep.add_argument("--status", default="", metavar="STATUS",
                    help="only endpoints with this EDS health: HEALTHY, UNHEALTHY, DRAINING, TIMEOUT, DEGRADED")
    client.add_arguments(p)


def get(doc: object, *keys: str, default: Any = None) -> Any:
    """``doc[key]`` for the first key present (snake_case and camelCase spellings of a field)."""
    if isinstance(doc, Mapping):
        for key in keys:
            if key in doc:
                return doc[key]
    return default


# ------------------------------------------------------------------------------------ finding the admin


def admin_address(args: argparse.Namespace) -> str:
    if args.admin:
        return str(args.admin)
    name, _, namespace = args.workload.partition(".")
    try:
        state = read_state(RunDir(resolve_run_dir(args.run_dir)))
    except StateError:
        state = None
    known: list[str] = []  # the sidecars we know of, for the error
    if state is not None:
        for p in state.processes:
            if p.role == "sidecar" and "admin" in p.addresses:
                if p.workload == name:
                    return p.addresses["admin"]
                known.append(p.workload)
    try:
        workloads = client.from_args(args).workloads()["workloads"]
    except client.ControlPlaneError as e:
        if known:  # the run dir's mesh has no such sidecar: say which it has
            raise LookupError(f"no sidecar named {args.workload!r} in this mesh (known: {', '.join(known)}); "
                              "give its admin address with --admin HOST:PORT") from None
        then = f"{e.hint}, or give" if e.hint else "give"
        raise LookupError(f"cannot find the admin address of {args.workload!r}: {e.brief}; {then} it with "
                          "--admin HOST:PORT") from None
    for w in workloads:
        if w["name"] == name and (not namespace or w["namespace"] == namespace) and w.get("admin_address"):
            return str(w["admin_address"])
    known += [str(w["name"]) for w in workloads if w["name"] not in known]
    raise LookupError(f"no sidecar named {args.workload!r} (known: {', '.join(known) or 'none'}); "
                      "give its admin address with --admin HOST:PORT")


def fetch(address: str, path: str) -> Any:
    host, _, port = address.rpartition(":")
    conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
    except OSError as e:
        raise LookupError(f"cannot reach the admin API at {address}: {e}") from None
    finally:
        conn.close()
    if response.status != 200:
        raise LookupError(f"{address}{path} answered {response.status}: {body[:200]!r}")
    return json.loads(body)


# ------------------------------------------------------------------------------------ reading a dump


def from_config_dump(dump: Doc) -> dict[str, list[Any]]:
    """Listeners, route configurations, clusters and cluster load assignments of an Envoy ConfigDump."""
    out: dict[str, list[Any]] = {s: [] for s in SECTIONS}
    for cfg in get(dump, "configs", default=[]):
        kind = str(get(cfg, "@type", default="")).rsplit(".", 1)[-1]
        if kind == "ListenersConfigDump":
            out["listeners"] += [get(x, "listener") for x in get(cfg, "static_listeners", "staticListeners",
                                                                  default=[])]
            out["listeners"] += [get(get(x, "active_state", "activeState"), "listener")
                                 for x in get(cfg, "dynamic_listeners", "dynamicListeners", default=[])
                                 if get(x, "active_state", "activeState")]
        elif kind == "RoutesConfigDump":
            for key in ("static_route_configs", "staticRouteConfigs", "dynamic_route_configs",
                        "dynamicRouteConfigs"):
                out["routes"] += [get(x, "route_config", "routeConfig") for x in get(cfg, key, default=[])]
        elif kind == "ClustersConfigDump":
            for key in ("static_clusters", "staticClusters", "dynamic_active_clusters", "dynamicActiveClusters"):
                out["clusters"] += [get(x, "cluster") for x in get(cfg, key, default=[])]
        elif kind == "EndpointsConfigDump":
            for key in ("static_endpoint_configs", "staticEndpointConfigs", "dynamic_endpoint_configs",
                        "dynamicEndpointConfigs"):
                out["endpoints"] += [get(x, "endpoint_config", "endpointConfig") for x in get(cfg, key, default=[])]
    for listener in out["listeners"]:  # inline route configurations count as routes (istioctl shows them)
        for hcm in _hcms(listener):
            inline = get(hcm, "route_config", "routeConfig")
            if inline:
                out["routes"].append(inline)
    return {k: [x for x in v if x] for k, v in out.items()}


def from_control_plane(answer: Doc) -> dict[str, list[Any]]:
    types = get(answer, "types", default={})
    return {"listeners": get(types.get("LDS"), "resources", default=[]),
            "routes": get(types.get("RDS"), "resources", default=[]),
            "clusters": get(types.get("CDS"), "resources", default=[]),
            "endpoints": get(types.get("EDS"), "resources", default=[])}


def _hcms(listener: Doc) -> list[Doc]:
    found = []
    api = get(listener, "api_listener", "apiListener")
    if api:
        found.append(get(api, "api_listener", "apiListener", default={}))
    for chain in get(listener, "filter_chains", "filterChains", default=[]):
        for f in get(chain, "filters", default=[]):
            if "http_connection_manager" in str(get(f, "name", default="")):
                found.append(get(f, "typed_config", "typedConfig", default={}))
    return found


# ------------------------------------------------------------------------------------ tables


def render(head: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return ["   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [head, *rows]]


def listener_rows(listeners: list[Doc]) -> list[list[str]]:
    rows = []
    for li in listeners:
        sock = get(get(li, "address", default={}), "socket_address", "socketAddress", default={})
        address = str(get(sock, "address", default="-")) if sock else "-"
        port = str(get(sock, "port_value", "portValue", default="-")) if sock else "-"
        dests = []
        for hcm in _hcms(li):
            rds = get(hcm, "rds")
            inline = get(hcm, "route_config", "routeConfig")
            if rds:
                dests.append(f"Route: {get(rds, 'route_config_name', 'routeConfigName')}")
            elif inline:
                dests.append(f"Inline Route: {get(inline, 'name', default='')}")
        rows.append([str(get(li, "name", default="")), address, port, ", ".join(dests) or "-"])
    return rows


def _match(route: Doc) -> str:
    m = get(route, "match", default={})
    for key in ("path", "prefix"):
        if key in m:
            text = f"{m[key]}" if key == "path" else f"{m[key]}*"
            break
    else:
        regex = get(get(m, "safe_regex", "safeRegex", default={}), "regex")
        text = f"~{regex}" if regex else "/*"
    headers = get(m, "headers", default=[])
    return text + (f" +{len(headers)} header(s)" if headers else "")


def _destination(route: Doc) -> str:
    action = get(route, "route")
    if not action:
        if get(route, "direct_response", "directResponse"):
            return "direct response"
        return "redirect" if get(route, "redirect") else "-"
    weighted = get(action, "weighted_clusters", "weightedClusters")
    if weighted:
        return ", ".join(f"{_subset(get(c, 'name', default=''))}:{get(c, 'weight', default=0)}"
                         for c in get(weighted, "clusters", default=[]))
    return str(get(action, "cluster", default="-"))


def _subset(cluster: str) -> str:
    parts = cluster.split("|")
    return parts[2] or parts[3] if len(parts) == 4 else cluster


def _config_of(doc: Doc) -> str:
    meta = get(get(get(doc, "metadata", default={}), "filter_metadata", "filterMetadata", default={}), "istio",
               default={})
    path = str(get(meta, "config", default=""))
    parts = path.strip("/").split("/")  # /apis/networking.istio.io/v1/namespaces/<ns>/<kind>/<name>
    return f"{parts[-1]}.{parts[-3]}" if len(parts) >= 3 and "namespaces" in parts else "-"


def route_rows(routes: list[Doc]) -> list[list[str]]:
    rows = []
    for rc in routes:
        for vh in get(rc, "virtual_hosts", "virtualHosts", default=[]):
            domains = [str(d) for d in get(vh, "domains", default=[])]
            shown = domains[0] + (f" +{len(domains) - 1} more" if len(domains) > 1 else "") if domains else "-"
            for route in get(vh, "routes", default=[]):
                rows.append([str(get(rc, "name", default="")), str(get(vh, "name", default="")), shown,
                             _match(route), _destination(route), _config_of(route)])
    return rows


def cluster_rows(clusters: list[Doc]) -> list[list[str]]:
    rows = []
    for c in clusters:
        name = str(get(c, "name", default=""))
        parts = name.split("|")
        if len(parts) == 4:
            direction, port, subset, fqdn = parts
        else:
            direction, port, subset, fqdn = "-", "-", "-", name
        kind = str(get(c, "type", default="")) or ("EDS" if get(c, "eds_cluster_config", "edsClusterConfig")
                                                   else "STATIC")
        rows.append([fqdn or "-", port or "-", subset or "-", direction.upper(), kind, _config_of(c)])
    return rows


def endpoints_of(clusters_json: Doc | None, assignments: Sequence[Doc]) -> list[_endpoints.Endpoint]:
    """From the proxy's /clusters when we have it, else the control plane's ClusterLoadAssignments."""
    if clusters_json is not None:
        return _endpoints.from_clusters(clusters_json)
    return _endpoints.from_assignments(assignments)


def endpoint_rows(clusters_json: Doc | None, assignments: Sequence[Doc],
                  flt: _endpoints.Filter | None = None, wide: bool = False) -> list[list[str]]:
    """istioctl's rows (``wide``: with minimesh's columns, :data:`_endpoints.WIDE_HEAD`), in istioctl's order."""
    chosen = _endpoints.select(endpoints_of(clusters_json, assignments), flt or _endpoints.Filter())
    return [_endpoints.wide_row(e) if wide else _endpoints.short_row(e) for e in chosen]


# ------------------------------------------------------------------------------------ secrets (/certs)

SECRET_HEAD = ["RESOURCE NAME", "TYPE", "STATUS", "VALID CERT", "SERIAL NUMBER", "NOT AFTER", "NOT BEFORE",
               "DAYS LEFT", "SPIFFE ID"]


def _epoch(rfc3339: object) -> float | None:
    try:
        return datetime.strptime(str(rfc3339), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def _secret_row(name: str, kind: str, cert: Doc, now: float, fingerprint: str | None = None) -> dict[str, Any]:
    not_before, not_after = get(cert, "valid_from", "validFrom"), get(cert, "expiration_time", "expirationTime")
    start, end = _epoch(not_before), _epoch(not_after)
    sans = get(cert, "subject_alt_names", "subjectAltNames", default=[])
    return {
        "name": name, "type": kind, "status": "ACTIVE",
        "valid": start is not None and end is not None and start <= now <= end,
        "serial_number": str(get(cert, "serial_number", "serialNumber", default="")),
        "spiffe_ids": [str(san["uri"]) for san in sans if isinstance(san, Mapping) and "uri" in san],
        "not_before": not_before, "not_after": not_after,
        "days_left": int(get(cert, "days_until_expiration", "daysUntilExpiration", default=0) or 0),
        "seconds_left": None if end is None else round(max(0.0, end - now), 1),
        "fingerprint_sha256": fingerprint, "path": get(cert, "path"),
    }


def secret_view(certs: Doc, now: float | None = None) -> dict[str, Any]:
    """Envoy's /certs (+ pyproxy's ``secret_names`` and ``root_fingerprints_sha256``) -> one row per
    certificate in use: the workload's own (``default``: its leaf) and each root of the trust bundle
    (``ROOTCA``), each listed once however many TLS contexts share it."""
    now = time.time() if now is None else now
    rows: list[dict[str, Any]] = []
    roots: list[str] = []
    seen: set[tuple[str, str, str]] = set()
    for entry in get(certs, "certificates", default=[]):
        names = [str(n) for n in get(entry, "secret_names", "secretNames", default=[])]
        chain = get(entry, "cert_chain", "certChain", default=[])
        cas = get(entry, "ca_cert", "caCert", default=[])
        fingerprints = [str(f) for f in get(entry, "root_fingerprints_sha256", default=[])]
        found: list[dict[str, Any]] = []
        if chain:
            own = next((n for n in names if n != "ROOTCA"), str(get(chain[0], "path", default="-")))
            found.append(_secret_row(own, "Cert Chain", chain[0], now))
        ca_name = "ROOTCA" if "ROOTCA" in names or not names else names[-1]
        for i, ca in enumerate(cas):
            found.append(_secret_row(ca_name, "CA", ca, now, fingerprints[i] if i < len(fingerprints) else None))
        for row in found:
            key = (row["name"], row["type"], row["serial_number"])
            if key not in seen:
                seen.add(key)
                rows.append(row)
        roots += [f for f in fingerprints if f not in roots]
    return {"secrets": rows, "root_fingerprints_sha256": roots, "certificates": get(certs, "certificates",
                                                                                      default=[])}


def _left(row: Mapping[str, Any]) -> str:
    days, seconds = row["days_left"], row["seconds_left"]
    if days or seconds is None:
        return str(days)
    s = int(seconds)
    return f"0 ({s // 3600}h{s % 3600 // 60:02d}m)" if s >= 3600 else f"0 ({s // 60}m{s % 60:02d}s)" if s >= 60 \
        else f"0 ({s}s)"


def secret_lines(view: Mapping[str, Any]) -> list[str]:
    rows = [[r["name"], r["type"], r["status"], str(r["valid"]).lower(), r["serial_number"] or "-",
             str(r["not_after"] or "-"), str(r["not_before"] or "-"), _left(r), ", ".join(r["spiffe_ids"]) or "-"]
            for r in view["secrets"]]
    if not rows:
        return ["no certificates in use (no TLS context has a certificate or a trust bundle yet)"]
    roots = view["root_fingerprints_sha256"]
    out = [*render(SECRET_HEAD, rows), ""]
    out.append(f"ROOTCA: trust bundle of {len(roots)} root{'s' if len(roots) != 1 else ''}, SHA-256 fingerprints:")
    out += [f"  {f}" for f in roots]
    return out


HEADS = {
    "listeners": ["NAME", "ADDRESS", "PORT", "DESTINATION"],
    "routes": ["NAME", "VHOST NAME", "DOMAINS", "MATCH", "DESTINATION", "VIRTUAL SERVICE"],
    "clusters": ["SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE", "DESTINATION RULE"],
    "endpoints": ["ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER"],
}


def run_secret(args: argparse.Namespace) -> int:
    """`proxy-config secret`: the sidecar's /certs as a table (or JSON)."""
    if args.source == "control-plane":
        print("error: secrets come from the proxy itself (its /certs): the control plane never sees a proxy's "
              "certificate; drop --from control-plane", file=sys.stderr)
        return 2
    try:
        address = admin_address(args)
        view = secret_view(fetch(address, "/certs"))
    except client.ControlPlaneError as e:
        client.print_error(e)
        return 1
    except LookupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.output in ("json", "yaml"):
        print(_dump({"workload": args.workload, "admin": address, **view}, args.output))
    else:
        print("\n".join(secret_lines(view)))
    return 0


def _dump(doc: Any, output: str) -> str:
    if output == "yaml":
        return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False).rstrip("\n")
    return json.dumps(doc, indent=2)


def run(args: argparse.Namespace) -> int:
    if args.section in ("secret", "secrets"):
        return run_secret(args)
    section = args.section if args.section == "all" or args.section.endswith("s") else f"{args.section}s"
    wanted = list(SECTIONS) if section == "all" else [section]
    flt = _endpoints.Filter(args.cluster, args.address, args.port, args.status)
    if flt != _endpoints.Filter() and "endpoints" not in wanted:
        print(f"error: --cluster, --address, --port and --status filter endpoints, not {section}", file=sys.stderr)
        return 2
    clusters_json: Doc | None = None
    try:
        if args.source == "control-plane":
            api = client.from_args(args)
            try:
                answer = api.proxy_config(args.workload)
            except client.ControlPlaneError as e:
                if e.status != 404 or "." in args.workload:
                    raise
                answer = api.proxy_config(f"{args.workload}.default")
            config = from_control_plane(answer)
        else:
            address = admin_address(args)
            config = from_config_dump(fetch(address, "/config_dump"))
            if "endpoints" in wanted:
                clusters_json = fetch(address, "/clusters?format=json")
    except client.ControlPlaneError as e:
        client.print_error(e)
        return 1
    except LookupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.output in ("json", "yaml"):
        raw: dict[str, Any] = {s: config[s] for s in wanted}
        if clusters_json is not None:
            raw["endpoints"] = _endpoints.matching_clusters(clusters_json, flt)  # istioctl's -o json
        elif flt != _endpoints.Filter():
            names = {e.cluster for e in _endpoints.select(_endpoints.from_assignments(config["endpoints"]), flt)}
            raw["endpoints"] = [c for c in config["endpoints"]
                                if get(c, "cluster_name", "clusterName", default="") in names]
        print(_dump(raw[wanted[0]] if len(wanted) == 1 else raw, args.output))
        return 0
    wide = args.output == "table"
    rows_of = {"listeners": lambda: listener_rows(config["listeners"]),
               "routes": lambda: route_rows(config["routes"]),
               "clusters": lambda: cluster_rows(config["clusters"]),
               "endpoints": lambda: endpoint_rows(clusters_json, config["endpoints"], flt, wide)}
    heads = {**HEADS, "endpoints": _endpoints.WIDE_HEAD if wide else _endpoints.SHORT_HEAD}
    blocks = ["\n".join(render(heads[s], rows_of[s]())) for s in wanted]
    print("\n\n".join(blocks))
    return 0

"""`mesh_ctl proxy-config secret`: a sidecar's /certs (Envoy's shape + pyproxy's extensions) -> istioctl's table."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from mesh_ctl.commands.proxy_config import secret_lines, secret_view

NOW = datetime(2026, 11, 25, 19, 41, 40, tzinfo=UTC).timestamp()
OLD, NEW = "aa" * 32, "bb" * 32


def cert(serial: str, valid_from: str, expiration: str, days: str, uri: str | None = None) -> dict[str, Any]:
    return {"path": f"/dev/shm/pyproxy-agent-x/{serial}.pem", "serial_number": serial,
            "subject_alt_names": [{"uri": uri}] if uri else [], "days_until_expiration": days,
            "valid_from": valid_from, "expiration_time": expiration}


LEAF = cert("0f3a", "2026-11-25T19:39:38Z", "2026-11-25T19:41:44Z", "0", "spiffe://cluster.local/ns/default/sa/payment")
ROOT_OLD = cert("01", "2026-11-25T19:00:00Z", "2036-11-22T19:00:00Z", "3649")
ROOT_NEW = cert("02", "2026-11-25T19:40:00Z", "2036-11-22T19:40:00Z", "3649")
CERTS = {"certificates": [
    # the inbound listener's context and every outbound cluster's name the same files: one entry ...
    {"ca_cert": [ROOT_OLD, ROOT_NEW], "cert_chain": [LEAF, ROOT_OLD], "root_fingerprints_sha256": [OLD, NEW],
     "secret_names": ["ROOTCA", "default"]},
    # ... and were they listed twice (another file of the same certificate), the rows would not repeat.
    {"ca_cert": [ROOT_NEW], "cert_chain": [dict(LEAF, path="/elsewhere.pem")], "root_fingerprints_sha256": [NEW],
     "secret_names": ["ROOTCA", "default"]},
]}


def test_one_row_per_certificate_with_its_identity_validity_and_fingerprint() -> None:
    view = secret_view(CERTS, now=NOW)
    assert [(r["name"], r["type"], r["serial_number"]) for r in view["secrets"]] == [
        ("default", "Cert Chain", "0f3a"), ("ROOTCA", "CA", "01"), ("ROOTCA", "CA", "02")]
    own, old, new = view["secrets"]
    assert own["spiffe_ids"] == ["spiffe://cluster.local/ns/default/sa/payment"] and own["fingerprint_sha256"] is None
    assert (own["valid"], own["days_left"], own["seconds_left"]) == (True, 0, 4.0)
    assert (old["fingerprint_sha256"], new["fingerprint_sha256"]) == (OLD, NEW)
    assert view["root_fingerprints_sha256"] == [OLD, NEW]  # a rotation in progress: both trusted
    assert view["certificates"] == CERTS["certificates"]  # -o json keeps /certs itself too
    expired = secret_view(CERTS, now=NOW + 10)["secrets"][0]
    assert (expired["valid"], expired["seconds_left"]) == (False, 0.0)


def test_the_table_reads_like_istioctls() -> None:
    lines = secret_lines(secret_view(CERTS, now=NOW))
    assert lines[0].split() == ["RESOURCE", "NAME", "TYPE", "STATUS", "VALID", "CERT", "SERIAL", "NUMBER", "NOT",
                                "AFTER", "NOT", "BEFORE", "DAYS", "LEFT", "SPIFFE", "ID"]
    assert lines[1].split() == ["default", "Cert", "Chain", "ACTIVE", "true", "0f3a", "2026-11-25T19:41:44Z",
                                "2026-11-25T19:39:38Z", "0", "(4s)", "spiffe://cluster.local/ns/default/sa/payment"]
    assert lines[2].split() == ["ROOTCA", "CA", "ACTIVE", "true", "01", "2036-11-22T19:00:00Z",
                                "2026-11-25T19:00:00Z", "3649", "-"]
    assert lines[4:] == ["", "ROOTCA: trust bundle of 2 roots, SHA-256 fingerprints:", f"  {OLD}", f"  {NEW}"]
    day = secret_view({"certificates": [{"cert_chain": [dict(LEAF, expiration_time="2026-11-26T19:41:40Z")],
                                         "ca_cert": [], "secret_names": ["default"]}]}, now=NOW)
    assert secret_lines(day)[1].split()[8:10] == ["0", "(24h00m)"]
    assert secret_lines({"secrets": [], "root_fingerprints_sha256": []}) == [
        "no certificates in use (no TLS context has a certificate or a trust bundle yet)"]

"""Write the seed corpora: ``python -m fuzz.make_corpus DIR`` (one subdirectory per target).

Seeds are real inputs: h2 byte streams from the ``h2`` library (a client's requests for the server side, a
server's responses for the client side) and operation sequences, RFC 7541 Appendix C blocks and ``hpack``
output, the repository's bootstraps (YAML, JSON, binary and text proto), xDS resources taken from them,
``examples/`` Istio YAML, and CSRs made with ``cryptography``. The committed corpus is these seeds plus what
the long runs found, minimized with libFuzzer's ``-set_cover_merge=1 -use_counters=0`` (README).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import hpack
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from envoy.config.bootstrap.v3 import bootstrap_pb2
from google.protobuf import json_format, text_format

from fuzz import h2_connection_fuzz as h2f
from fuzz import xds_resource_fuzz as xdsf
from fuzz._input import Writer
from pyproxy.config import xds_resources as xr
from pyproxy.http2 import frames as fr
from pyproxy.http2.connection import H2Connection

ROOT = Path(__file__).resolve().parent.parent
BOOTSTRAPS = sorted([*ROOT.glob("tests/unit/config/bootstraps/*"), *ROOT.glob("tests/integration/bootstraps/*"),
                     *ROOT.glob("tests/interop/bootstraps/*")])
REQUEST = [(":method", "POST"), (":scheme", "http"), (":path", "/payment.PaymentService/Charge"),
           (":authority", "payment:8080"), ("content-type", "application/grpc"), ("te", "trailers")]


def _save(out: Path, target: str, data: bytes) -> None:
    d = out / target
    d.mkdir(parents=True, exist_ok=True)
    (d / f"seed-{hashlib.sha1(data).hexdigest()[:16]}").write_bytes(data)


def _h2_client_bytes() -> bytes:
    """What an h2 client sends a server (after the preface): requests, data, ping, reset, priority."""
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    c.initiate_connection()
    c.send_headers(1, REQUEST)
    c.send_data(1, b"\0\0\0\0\x05hello")
    c.end_stream(1)
    c.send_headers(3, REQUEST, end_stream=False)
    c.reset_stream(3)
    c.send_headers(5, [*REQUEST, ("content-length", "5")])
    c.send_data(5, b"abcde", end_stream=True)
    c.ping(b"12345678")
    c.increment_flow_control_window(1000)
    c.prioritize(7, depends_on=1)
    return c.data_to_send()[len(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"):]


def _h2_server_bytes() -> bytes:
    """What an h2 server answers our client's request: SETTINGS, a response, data, trailers, GOAWAY."""
    ours = H2Connection(client_side=True)
    ours.initiate_connection()
    ours.send_headers(1, [(n.encode(), v.encode()) for n, v in REQUEST], end_stream=True)
    s = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
    s.initiate_connection()
    s.receive_data(ours.data_to_send())
    s.send_headers(1, [(":status", "200"), ("content-type", "application/grpc")])
    s.send_data(1, b"\0\0\0\0\x02ok")
    s.send_headers(1, [("grpc-status", "0")], end_stream=True)
    s.ping(b"abcdefgh")
    s.close_connection()
    return s.data_to_send()


def h2_seeds(out: Path) -> None:
    client, server = _h2_client_bytes(), _h2_server_bytes()
    for variant in range(4):
        _save(out, "h2_connection", bytes((variant << 2, 0)) + client)  # server side, raw, in one call
        _save(out, "h2_connection", bytes((variant << 2 | 1, 6)) + server)  # client side, 7-byte chunks
    enc = hpack.Encoder()
    # Operations, server side: a request with a body, our response, flow control, trailers, reset, GOAWAY.
    w = Writer().byte(2 | 32)
    w.byte(h2f.OP_FRAME).byte(h2f.STRUCTURED | 1).byte(4).byte(2).byte(0).byte(0)  # HEADERS request, stream 1
    w.byte(h2f.OP_FRAME).byte(h2f.STRUCTURED | 0).byte(0).byte(1).uint(100, 2)  # DATA 100 bytes on stream 1
    w.byte(h2f.OP_ACK).byte(0).uint(100, 3).byte(1)
    w.byte(h2f.OP_SEND_HEADERS).byte(4).byte(0).byte(0).byte(1)  # response headers
    w.byte(h2f.OP_SEND_DATA).byte(1).uint(10, 2).byte(0)
    w.byte(h2f.OP_FRAME).byte(h2f.STRUCTURED | 1).byte(5).byte(1).byte(7).byte(0)  # trailers, END_STREAM
    w.byte(h2f.OP_SEND_HEADERS).byte(7).byte(1).byte(0).byte(1)  # our trailers, END_STREAM
    w.byte(h2f.OP_FRAME).byte(h2f.STRUCTURED | 1).byte(4).byte(2).byte(0).byte(0)  # stream 3
    w.byte(h2f.OP_RESET).byte(1).byte(8)
    w.byte(h2f.OP_FRAME).byte(h2f.STRUCTURED | 8).byte(0).byte(0).raw(b"\0\0\x10\0")  # WINDOW_UPDATE
    w.byte(h2f.OP_PING).raw(b"pingpong")
    w.byte(h2f.OP_GOAWAY).byte(0).byte(0)
    w.byte(h2f.OP_DRAIN)
    _save(out, "h2_connection", w.build())
    # Operations, client side: open a stream, the server's response, data, trailers.
    w = Writer().byte(1 | 2 | 32)
    w.byte(h2f.OP_SEND_HEADERS).byte(0).byte(0).byte(1)  # request, new stream 1
    w.byte(h2f.OP_SEND_DATA).byte(1).uint(5, 2).byte(1)
    w.byte(h2f.OP_FRAME).byte(h2f.STRUCTURED | 1).byte(4).byte(1).byte(4).byte(0)  # response
    w.byte(h2f.OP_FRAME).byte(h2f.STRUCTURED | 0).byte(0).byte(1).uint(7, 2)
    w.byte(h2f.OP_FRAME).byte(h2f.STRUCTURED | 1).byte(5).byte(1).byte(7).byte(0)  # trailers
    w.byte(h2f.OP_FRAME).byte(h2f.STRUCTURED | 7).byte(0).byte(0).raw(b"\0\0\0\1\0\0\0\0").blob(b"bye")
    _save(out, "h2_connection", w.build())
    # A raw request with a huge header block split in CONTINUATION frames (from the reference encoder).
    block = enc.encode([*REQUEST, ("x-big", "v" * 400)])
    frames = fr.settings_frame({}) + fr.headers_frames(1, block, True, 100)
    _save(out, "h2_connection", bytes((0, 13)) + frames)


def hpack_seeds(out: Path) -> None:
    from tests.unit.http2 import test_hpack as t  # the RFC 7541 Appendix C vectors

    for blocks in (t.C3, t.C4, t.C5, t.C6):
        w = Writer().byte(0).byte(4).byte(4)
        for block in blocks:
            w.blob(block, 2)
        _save(out, "hpack", w.build())
    ref = hpack.Encoder()
    w = Writer().byte(0).byte(4).byte(3)
    for huffman in (False, True):
        w.blob(bytes(ref.encode([*REQUEST, ("grpc-timeout", "1S")], huffman=huffman)), 2)
    _save(out, "hpack", w.build())
    for text in (b"www.example.com", b"no-cache", b"/payment.PaymentService/Charge", bytes(range(256))):
        _save(out, "hpack", b"\x01" + hpack.huffman.HuffmanEncoder(
            hpack.huffman_constants.REQUEST_CODES, hpack.huffman_constants.REQUEST_CODES_LENGTH).encode(text))
    w = Writer().byte(2)
    w.byte(3 << 2).byte(0).blob(b"ab").byte(2).blob(b"x-name").blob(b"value").byte(1)  # 3 fields
    w.byte(1 | (2 << 2)).byte(2).byte(0).blob(b"a").byte(1)  # table size 32, then 2 fields
    _save(out, "hpack", w.build())


def _load(path: Path) -> Any:
    """The document, or None for a template (``${PORT}`` placeholders) that is not YAML/JSON yet."""
    try:
        return json.loads(path.read_bytes()) if path.suffix == ".json" else yaml.safe_load(path.read_bytes())
    except (ValueError, yaml.YAMLError):
        return None


def _bootstrap_dicts() -> list[dict[str, Any]]:
    return [doc for doc in map(_load, BOOTSTRAPS) if isinstance(doc, dict)]


def bootstrap_seeds(out: Path) -> None:
    for path in BOOTSTRAPS:
        raw = path.read_bytes()
        _save(out, "bootstrap", b"\x00" + raw if path.suffix != ".json" else b"\x01" + raw)
        doc = _load(path)
        if not isinstance(doc, dict):
            continue
        _save(out, "bootstrap", b"\x05" + json.dumps(doc).encode() + b"\0")
        try:
            proto = json_format.ParseDict(doc, bootstrap_pb2.Bootstrap())
        except json_format.ParseError:
            continue
        _save(out, "bootstrap", b"\x02" + proto.SerializeToString())
        _save(out, "bootstrap", b"\x03" + text_format.MessageToString(proto).encode())
    overlay = b"node: {id: overlay}\nadmin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}\n"
    base = BOOTSTRAPS[0].read_bytes()
    _save(out, "bootstrap", Writer().byte(4).blob(base, 2).raw(overlay).build())


def xds_seeds(out: Path) -> None:
    kinds = {"listeners": xdsf.TYPES.index(xr.LISTENER), "clusters": xdsf.TYPES.index(xr.CLUSTER)}
    for doc in _bootstrap_dicts():
        static = doc.get("static_resources") or {}
        for key, index in kinds.items():
            for resource in static.get(key, [])[:2]:
                _save(out, "xds_resource", bytes((index | 8,)) + json.dumps(resource).encode() + b"\0")
                try:
                    proto = json_format.ParseDict(resource, xdsf._MESSAGES[xdsf.TYPES[index]]())
                except json_format.ParseError:
                    continue
                _save(out, "xds_resource", bytes((index,)) + proto.SerializeToString())
            for resource in static.get("secrets", [])[:1]:
                _save(out, "xds_resource", b"\x0c" + json.dumps(resource).encode() + b"\0")
        for listener in static.get("listeners", []):
            for chain in listener.get("filter_chains", []):
                for f in chain.get("filters", []):
                    rc = (f.get("typed_config") or {}).get("route_config")
                    if rc:
                        _save(out, "xds_resource", b"\x09" + json.dumps(rc).encode() + b"\0")
        for cluster in static.get("clusters", []):
            if cluster.get("load_assignment"):
                _save(out, "xds_resource", b"\x0b" + json.dumps(cluster["load_assignment"]).encode() + b"\0")


def istio_seeds(out: Path) -> None:
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        raw = path.read_bytes()
        _save(out, "istio_yaml", b"\x00" + raw)
        doc = yaml.safe_load(raw)
        _save(out, "istio_yaml", b"\x01" + json.dumps(doc).encode() + b"\0")
    joined = b"\n---\n".join(p.read_bytes() for p in sorted((ROOT / "examples").glob("*.yaml")))
    _save(out, "istio_yaml", b"\x00" + joined)


def csr_seeds(out: Path) -> None:
    keys: list[ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey] = [ec.generate_private_key(ec.SECP256R1()),
                                                                  rsa.generate_private_key(65537, 2048)]
    for key, uri in ((keys[0], "spiffe://cluster.local/ns/default/sa/payment"),
                     (keys[1], "spiffe://cluster.local/ns/default/sa/payment"),
                     (keys[0], "spiffe://cluster.local/ns/default/sa/client")):
        csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
               .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=True)
               .sign(key, hashes.SHA256()))
        _save(out, "ca_csr", b"\x00" + csr.public_bytes(serialization.Encoding.PEM))
        _save(out, "ca_csr", b"\x01" + csr.public_bytes(serialization.Encoding.DER))
    # Built CSRs: key, flags, subject, SANs, hash (see ca_csr_fuzz._built).
    for key_index in range(5):
        for flags in (0, 2, 4 | 8, 16 | 32, 64, 1):
            w = Writer().byte(2).byte(key_index).byte(flags).blob(b"workload").byte(0).byte(0).byte(0)
            _save(out, "ca_csr", w.build())
    _save(out, "ca_csr", Writer().byte(3).byte(1).byte(0).blob(b"w").byte(0).byte(0).byte(0).byte(0)
          .uint(0, 2).byte(3).build())


def main(argv: list[str]) -> None:
    out = Path(argv[1] if len(argv) > 1 else ROOT / "fuzz" / "corpus")
    h2_seeds(out)
    hpack_seeds(out)
    bootstrap_seeds(out)
    xds_seeds(out)
    istio_seeds(out)
    csr_seeds(out)


if __name__ == "__main__":
    main(sys.argv)

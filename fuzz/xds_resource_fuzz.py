"""xDS resources (:mod:`pyproxy.config.xds_resources`) as the ADS client receives them.

Mode byte: bits 0-2 pick the resource type (Listener, RouteConfiguration, Cluster, ClusterLoadAssignment,
Secret; 5-7 a type the ``Any`` does not match, or an unsupported type URL). Bit 3 clear: the rest is the
``Any``'s serialized value, decoded (:func:`decode_resource`) and translated (:func:`translate_resource`).
Bit 3 set: the rest is a JSON resource (up to a NUL byte, usually a real one) with structure-aware edits
(:mod:`fuzz._mutate`); what protobuf's JSON parser accepts is packed into an ``Any`` and goes the same way.

Contract: every failure is a :class:`~pyproxy.config.errors.ConfigError`; a resource that translates gives
the same model object again, its reference helpers (``referenced_*``, ``eds_name``) work on it, and the
identical bytes decode to an equal proto.
"""

from __future__ import annotations

import json

from google.protobuf import json_format
from google.protobuf.any_pb2 import Any as AnyProto

from fuzz._input import Input
from fuzz._mutate import mutate
from pyproxy.config import model as m
from pyproxy.config import xds_resources as xr
from pyproxy.config.errors import ConfigError

TYPES = (xr.LISTENER, xr.ROUTE, xr.CLUSTER, xr.ENDPOINT, xr.SECRET)
_MESSAGES = {t: xr._MESSAGES[t] for t in TYPES}


def _check_model(type_url: str, model: object) -> None:
    if isinstance(model, m.Listener):
        xr.referenced_clusters(model)
        xr.referenced_routes(model)
        xr.referenced_secrets(model)
    elif isinstance(model, m.RouteConfiguration):
        xr.referenced_clusters(model)
    elif isinstance(model, m.Cluster):
        xr.referenced_secrets(model)
        xr.eds_name(model)


def run(data: bytes) -> None:
    inp = Input(data)
    mode = inp.byte()
    pick = mode & 7
    type_url = TYPES[pick % len(TYPES)]
    packed_as = type_url if pick < len(TYPES) else (TYPES[(pick + 1) % len(TYPES)] if pick < 7 else "x/y")
    if mode & 8:
        text, _, edits = inp.rest().partition(b"\0")
        try:
            doc = mutate(json.loads(text), Input(edits))
            proto = json_format.ParseDict(doc, _MESSAGES[type_url](), ignore_unknown_fields=bool(mode & 16))
        except (ValueError, TypeError, AttributeError, RecursionError, SystemError, json_format.ParseError):
            # protobuf's JSON parser refused it. AttributeError, SystemError: its bugs with a non-mapping Any
            # and with a key holding a lone surrogate (pyproxy's own JSON parser, protojson, now avoids the latter)
            return
        value = proto.SerializeToString()
    else:
        value = inp.rest()
    any_msg = AnyProto(type_url=packed_as, value=value)
    try:
        proto = xr.decode_resource(type_url, any_msg)
        name, model = xr.translate_resource(type_url, proto, warnings=[])
    except ConfigError:
        return
    assert name == xr.resource_name(type_url, proto)
    _check_model(type_url, model)
    again = xr.translate_resource(type_url, xr.decode_resource(type_url, any_msg), warnings=[])
    assert again == (name, model), "the same resource translated twice gave different models"

"""VirtualService ``headers`` -> Envoy header mutations (Istio's ``TranslateHeadersOperations``).

``set`` -> ``OVERWRITE_IF_EXISTS_OR_ADD``, ``add`` -> ``APPEND_IF_EXISTS_OR_ADD`` (each sorted by name, set
first), ``remove`` -> ``*_headers_to_remove``. Pseudo-headers and ``host`` are never mutated: a request
``:authority``/``host`` value becomes the route's host rewrite instead (``set`` wins over ``add``).
"""

from __future__ import annotations

from mesh_ctl.translate.errors import TranslationError
from mesh_ctl.translate.values import ANY_KEY, Json, array, join, obj, string


def header_operations(value: object, path: str) -> tuple[Json, str]:
    """Istio's ``TranslateHeadersOperations``: (route header mutations, authority to rewrite to)."""
    h = obj(value, path, {"request", "response"})
    out: Json = {}
    authority = ""
    for side in ("request", "response"):
        if side not in h:
            continue
        spath = join(path, side)
        ops = obj(h[side], spath, {"set", "add", "remove"})
        adds: list[Json] = []
        for op, action in (("set", "OVERWRITE_IF_EXISTS_OR_ADD"), ("add", "APPEND_IF_EXISTS_OR_ADD")):
            opath = join(spath, op)
            values = obj(ops.get(op), opath, ANY_KEY)
            found = ""
            for key in sorted(values):
                vpath = join(opath, str(key))
                text = _literal(string(values[key], vpath), vpath)
                lower = str(key).lower()
                if lower in (":authority", "host"):
                    found = text  # Istio turns it into a host rewrite
                if lower.startswith(":") or lower == "host":
                    continue
                adds.append({"header": {"key": str(key), "value": text}, "append_action": action})
            if side == "request" and found and (op == "set" or not authority):
                authority = found
        if adds:
            out[f"{side}_headers_to_add"] = adds
        removes = [string(k, join(join(spath, "remove"), i))
                   for i, k in enumerate(array(ops.get("remove"), join(spath, "remove")))]
        removes = [k for k in removes if not k.startswith(":") and k.lower() != "host"]
        if removes:
            out[f"{side}_headers_to_remove"] = removes
    return out, authority


def _literal(value: str, path: str) -> str:
    """Envoy reads ``%...%`` in header values as formatter commands; pyproxy only takes literals (``%%``)."""
    i = 0
    while i < len(value):
        if value[i] == "%":
            if value[i + 1:i + 2] == "%":
                i += 2
                continue
            raise TranslationError(path, f"{value!r}: '%' formatter commands are not supported by pyproxy "
                                   "(only literal values; write %% for a literal %)")
        i += 1
    return value

"""Fill in the placeholders of the bootstrap and nginx templates; load bootstraps the way Envoy does.

Placeholders follow ``envsubst``: ``${A_LISTENER_PORT}`` (upper case, braces required). Unlike envsubst,
a placeholder without a value is an error rather than an empty string, so a renamed or misspelt
placeholder cannot slip through. nginx's own ``$variables`` (no braces) are left alone.

:func:`parse_bootstrap` loads a rendered YAML or JSON bootstrap into ``envoy.config.bootstrap.v3.Bootstrap``
the way Envoy does (JSON mapping, unknown fields rejected, ``typed_config`` resolved by type URL), which
proves the files are ordinary Envoy configuration and not something only pyproxy understands.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

import yaml

# The extension modules are imported for their side effect: registering the typed_config types.
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.extensions.access_loggers.stream.v3 import stream_pb2  # noqa: F401
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2  # noqa: F401
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2  # noqa: F401
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from google.protobuf import json_format

HERE = Path(__file__).resolve().parent
BOOTSTRAPS = HERE / "bootstraps"
NGINX = HERE / "nginx"
PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")


def placeholders(text: str) -> set[str]:
    return set(PLACEHOLDER.findall(text))


def render_text(text: str, values: Mapping[str, object]) -> str:
    missing = placeholders(text) - values.keys()
    if missing:
        raise KeyError(f"template placeholders without a value: {sorted(missing)}")
    return PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), text)


def render(template: Path, values: Mapping[str, object], out_dir: Path) -> Path:
    """Render ``template`` into ``out_dir`` under the same file name (Envoy picks the format by extension)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / template.name
    out.write_text(render_text(template.read_text(), values))
    return out


def parse_bootstrap(path: Path) -> bootstrap_pb2.Bootstrap:
    """Load a rendered ``.yaml``/``.json`` bootstrap like ``envoy -c`` does (ParseError on any bad field)."""
    text = path.read_text()
    data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    bootstrap = bootstrap_pb2.Bootstrap()
    json_format.ParseDict(data, bootstrap)
    return bootstrap

"""HTTP/2 conformance and hostile-peer suite (placeholder docstring, replaced below)."""

"""pyproxy's admin API: its changing endpoints need the owner's credential when --admin-token-file is given
(issue 9.2: any local user could POST /quitquitquit and stop a sidecar for good); browsers are always refused."""

from __future__ import annotations

from typing import Any

from pyproxy.admin.server import AdminServer, _headers

TOKEN = "c0ffee" * 8


def server(token: str | None) -> tuple[AdminServer, list[bool]]:
    quits: list[bool] = []
    runtime: Any = None  # refuse() never looks at the runtime
    return AdminServer(runtime, 0.0, lambda: quits.append(True), token), quits


def test_posts_need_the_credential() -> None:
    admin, _ = server(TOKEN)
    assert admin.refuse("POST", {})[0] == 401  # type: ignore[index]
    assert admin.refuse("POST", {"authorization": "Bearer nope"})[0] == 401  # type: ignore[index]
    assert admin.refuse("POST", {"authorization": f"Basic {TOKEN}"})[0] == 401  # type: ignore[index]
    assert admin.refuse("POST", {"authorization": f"Bearer {TOKEN}"}) is None
    assert admin.refuse("GET", {}) is None  # reading stays open, like Istio's 15090


def test_browsers_are_refused_even_without_a_credential_configured() -> None:
    admin, _ = server(None)
    assert admin.refuse("POST", {}) is None  # Envoy's behaviour without the flag
    assert admin.refuse("POST", {"origin": "https://evil.example"})[0] == 403  # type: ignore[index]


def test_header_parsing() -> None:
    head = "POST /quitquitquit HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer abc\r\nOrigin: null"
    assert _headers(head) == {"host": "x", "authorization": "Bearer abc", "origin": "null"}

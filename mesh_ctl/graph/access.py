"""How a browser opens the graph without the API credential (a navigation cannot send ``Authorization``).

1. The CLI (`mesh_ctl dashboard`), with the owner's credential, asks ``POST /v1/ui/login-code``: a random
   one-time code, valid :data:`CODE_TTL` seconds.
2. The browser opens ``/ui/login?code=...``: the code is spent (a second use, or a late one, is refused) and
   exchanged for a session: a random id kept here with its expiry (:data:`SESSION_TTL`), sent as an
   ``HttpOnly; SameSite=Strict; Path=/ui`` cookie; the answer redirects to the graph, so the URL left in the
   history opens nothing.
3. The cookie opens only the UI's read-only paths (GET/HEAD under ``/ui/``): :class:`mesh_ctl.xds.web.Guard`
   never takes it for the API.

Everything is in memory: a restarted control plane forgets its sessions (run `mesh_ctl dashboard` again).
Bounded: at most :data:`MAX_CODES` codes and :data:`MAX_SESSIONS` sessions (the oldest go first).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable

CODE_TTL = 60.0
SESSION_TTL = 12 * 3600.0
MAX_CODES = 32
MAX_SESSIONS = 64
COOKIE = "minimesh_ui"


class Access:
    def __init__(self, clock: Callable[[], float] = time.monotonic, code_ttl: float = CODE_TTL,
                 session_ttl: float = SESSION_TTL) -> None:
        self.clock = clock
        self.code_ttl = code_ttl
        self.session_ttl = session_ttl
        self._codes: OrderedDict[str, float] = OrderedDict()  # code -> expiry
        self._sessions: OrderedDict[str, float] = OrderedDict()  # session id -> expiry

    def new_code(self) -> str:
        code = secrets.token_urlsafe(24)
        self._codes[code] = self.clock() + self.code_ttl
        while len(self._codes) > MAX_CODES:
            self._codes.popitem(last=False)
        return code

    def redeem(self, code: str) -> str | None:
        """A new session id for a valid, unused, unexpired code (spent either way); None otherwise."""
        match = next((c for c in self._codes if hmac.compare_digest(c.encode(), code.encode())), None)
        if match is None:
            return None
        expiry = self._codes.pop(match)
        if self.clock() > expiry:
            return None
        session = secrets.token_urlsafe(32)
        self._sessions[session] = self.clock() + self.session_ttl
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session

    def valid(self, session: str | None) -> bool:
        if not session:
            return False
        match = next((s for s in self._sessions if hmac.compare_digest(s.encode(), session.encode())), None)
        if match is None:
            return False
        if self.clock() > self._sessions[match]:
            del self._sessions[match]
            return False
        return True

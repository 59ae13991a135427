"""Who is using the console: sign-in with an API key, a cookie session, and what each role may see.

The console never keeps the API key: signing in checks it once and opens a session
(a random token in an HttpOnly, SameSite=Strict cookie scoped to ``/console``; only
its SHA-256 is held, in memory). Every request re-checks that the key behind the
session is not revoked, and every change needs the session's CSRF token in a
header. Sessions end after ``TTL_S``, at sign-out, or when the gateway restarts.

Sign-in with the company's IdP (:mod:`carafe.gateway.console.idp`) opens the same
kind of session, ending no later than the ID token, and re-checked against the
SCIM directory: it ends when the user is deactivated or their groups change (the
roles they gave are then decided again at the next sign-in).

Roles (from the key, or the IdP token as the gateway's OIDC support maps them):
``admin`` sees and does everything; ``auditor`` reads the audit and guards pages;
``viewer`` reads adapters, tuning runs, activity and the index status. A page or
JSON endpoint outside a role answers 403.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from fastapi import Request
from opentelemetry import trace

from carafe.errors import Forbidden, Unauthenticated
from carafe.gateway.auth import Principal
from carafe.gateway.deps import get_state
from carafe.gateway.telemetry.attributes import CARAFE_PRINCIPAL

COOKIE = "carafe_console"
CSRF_HEADER = "x-carafe-csrf"
TTL_S = 8 * 3600
Area = Literal[
    "adapters",
    "adapters.change",
    "tuning",
    "index",
    "index.documents",
    "activity",
    "audit",
    "guards",
    "guards.test",
    "keys",
]
# which console roles may use each area; admin may use all of them
AREAS: dict[Area, frozenset[str]] = {
    "adapters": frozenset({"admin", "viewer"}),
    "adapters.change": frozenset({"admin"}),
    "tuning": frozenset({"admin", "viewer"}),
    "index": frozenset({"admin", "viewer"}),
    "index.documents": frozenset({"admin"}),
    "activity": frozenset({"admin", "viewer"}),
    "audit": frozenset({"admin", "auditor"}),
    "guards": frozenset({"admin", "auditor"}),
    "guards.test": frozenset({"admin"}),
    "keys": frozenset({"admin"}),
}
CONSOLE_ROLES = frozenset({"admin", "auditor", "viewer"})
PAGES: tuple[Area, ...] = ("adapters", "tuning", "index", "activity", "audit", "guards", "keys")


@dataclass(frozen=True, slots=True)
class Session:
    principal: Principal
    csrf: str
    expires_at: float

    @property
    def roles(self) -> frozenset[str]:
        return frozenset(self.principal.roles) & CONSOLE_ROLES

    def may(self, area: Area) -> bool:
        return bool(self.roles & AREAS[area])

    def pages(self) -> list[Area]:
        return [p for p in PAGES if self.may(p)]


def safe_next(target: str | None) -> str:
    """Only a console path: never an open redirect to another site."""
    parts = urlsplit(target or "")
    if parts.scheme or parts.netloc or not parts.path.startswith("/console"):
        return "/console"
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Sessions:
    """Open console sessions, by the SHA-256 of their cookie token."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[str, Session] = {}

    def open(self, principal: Principal, *, until: float | None = None) -> tuple[str, Session]:
        """A new session for ``principal``, ending after ``TTL_S`` or at ``until`` if sooner
        (an IdP sign-in lasts no longer than its ID token)."""
        token = secrets.token_urlsafe(32)
        ends = min(time.time() + TTL_S, until if until is not None else float("inf"))
        session = Session(principal, secrets.token_urlsafe(24), ends)
        with self._lock:
            now = time.time()
            self._open = {k: s for k, s in self._open.items() if s.expires_at > now}
            self._open[_digest(token)] = session
        return token, session

    def get(self, token: str) -> Session | None:
        with self._lock:
            session = self._open.get(_digest(token))
        return session if session is not None and session.expires_at > time.time() else None

    def close(self, token: str) -> None:
        with self._lock:
            self._open.pop(_digest(token), None)


def sessions_of(request: Request) -> Sessions:
    app_state = request.app.state
    if getattr(app_state, "console_sessions", None) is None:
        app_state.console_sessions = Sessions()
    sessions: Sessions = app_state.console_sessions
    return sessions


def authenticate_key(request: Request, key: str) -> Principal:
    """The principal of an API key, if it has a console role (401 unknown, 403 no role)."""
    state = get_state(request)
    principal = None
    bootstrap = state.config.auth.admin_bootstrap_key
    if bootstrap is not None and hmac.compare_digest(key.encode(), bootstrap.get_secret_value().encode()):
        principal = Principal(user="bootstrap-admin", roles=("admin",), key_id="bootstrap")
    principal = principal or state.keys.authenticate(key.strip())
    if principal is None:
        raise Unauthenticated("this API key is unknown or revoked", code="invalid_api_key")
    if not set(principal.roles) & CONSOLE_ROLES:
        raise Forbidden(
            "this key has no console role (admin, auditor or viewer); ask an admin for one",
            code="insufficient_permissions",
        )
    return principal


def _still_valid(request: Request, principal: Principal) -> bool:
    """The credential behind a session still stands: the bootstrap key is still set, an API
    key is not revoked, an IdP user is not deprovisioned (SCIM) nor OIDC switched off."""
    state = get_state(request)
    if principal.key_id == "bootstrap":
        return state.config.auth.admin_bootstrap_key is not None
    if principal.key_id.startswith("oidc:"):  # the directory's groups at sign-in must still hold
        person = state.keys.person(principal.user)
        unchanged = person is None or (person.active and tuple(person.groups) == principal.groups)
        return state.oidc is not None and unchanged
    record = state.keys.keys.get(principal.key_id)
    return record is not None and not record.revoked


def current_session(request: Request) -> Session | None:
    """The signed-in session of this request, or None (no cookie, expired, key revoked)."""
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    sessions = sessions_of(request)
    session = sessions.get(token)
    if session is None or not _still_valid(request, session.principal):
        sessions.close(token)
        return None
    trace.get_current_span().set_attribute(CARAFE_PRINCIPAL, session.principal.user)  # console reads are audited
    return session


def require(request: Request, area: Area, *, change: bool = False) -> Session:
    """The session, allowed ``area`` (401 signed out, 403 role); a change also needs the CSRF header."""
    session = current_session(request)
    if session is None:
        raise Unauthenticated("sign in to the console first: /console/login", code="console_signed_out")
    if not session.may(area):
        raise Forbidden(f"your role may not use the console's {area} pages", code="insufficient_permissions")
    if change and not hmac.compare_digest(request.headers.get(CSRF_HEADER, ""), session.csrf):
        raise Forbidden(f"missing or wrong {CSRF_HEADER} header (reload the page)", code="csrf_failed")
    return session

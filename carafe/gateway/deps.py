"""FastAPI dependencies: the app state, the calling principal, admin checks."""

from __future__ import annotations

import hmac

from fastapi import Request

from carafe.errors import Forbidden, Unauthenticated
from carafe.gateway.auth import Principal
from carafe.gateway.state import AppState


def get_state(request: Request) -> AppState:
    return request.app.state.carafe


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def get_principal(request: Request) -> Principal:
    """Authenticate the bearer key (401) and count it against its rate limit (429)."""
    cached = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    state = get_state(request)
    key = _bearer(request)
    if key is None:
        raise Unauthenticated("missing API key: send 'Authorization: Bearer <key>'", code="invalid_api_key")
    principal = None
    bootstrap = state.config.auth.admin_bootstrap_key
    if bootstrap is not None and key == bootstrap.get_secret_value():
        principal = Principal(user="bootstrap-admin", roles=("admin",), key_id="bootstrap")
    if principal is None:
        principal = state.keys.authenticate(key)
    if principal is None:
        raise Unauthenticated("invalid API key", code="invalid_api_key")
    state.limiter.check(principal.key_id, principal.rpm)
    request.state.principal = principal
    return principal


def require_metrics_reader(request: Request) -> None:
    """``/metrics`` names adapters and versions: the scraper's ``telemetry.metrics_token`` or an admin key (401/403)."""
    token = get_state(request).config.telemetry.metrics_token
    key = _bearer(request)
    if token is not None and key is not None and hmac.compare_digest(key, token.get_secret_value()):
        return
    require_admin(request)


def require_admin(request: Request) -> Principal:
    """Like :func:`get_principal`, and the principal must have the ``admin`` role (403)."""
    principal = get_principal(request)
    if not principal.is_admin:
        raise Forbidden("this endpoint needs the admin role", code="insufficient_permissions")
    return principal

"""FastAPI dependencies: the app state, the calling principal, admin checks."""

from __future__ import annotations

import asyncio

from fastapi import Request

from carafe.errors import Forbidden, Unauthenticated
from carafe.gateway.auth import Principal, bootstrap_matches
from carafe.gateway.oidc import looks_like_jwt
from carafe.gateway.state import AppState


def get_state(request: Request) -> AppState:
    return request.app.state.carafe


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def resolve(state: AppState, token: str) -> Principal | None:
    """The principal for a bearer token: the bootstrap key, an API key or an IdP token
    (blocking: the database or the IdP may be asked; run off the event loop)."""
    bootstrap = state.config.auth.admin_bootstrap_key
    if bootstrap_matches(token, bootstrap.get_secret_value() if bootstrap else None):
        return Principal(user="bootstrap-admin", roles=("admin",), key_id="bootstrap")
    if state.oidc is not None and looks_like_jwt(token):
        return state.oidc.principal(token, state.keys.person)
    return state.keys.authenticate(token)


async def get_principal(request: Request) -> Principal:
    """Authenticate the bearer credential (401) and count it against its rate limit (429)."""
    cached = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    state = get_state(request)
    token = bearer(request)
    if token is None:
        raise Unauthenticated("missing API key: send 'Authorization: Bearer <key>'", code="invalid_api_key")
    principal = await asyncio.to_thread(resolve, state, token)
    if principal is None:
        raise Unauthenticated("invalid API key or token (unknown, revoked or deprovisioned)", code="invalid_api_key")
    await state.limits.admit(principal)
    request.state.principal = principal
    return principal


async def require_admin(request: Request) -> Principal:
    """Like :func:`get_principal`, and the principal must have the ``admin`` role (403)."""
    principal = await get_principal(request)
    if not principal.is_admin:
        raise Forbidden("this endpoint needs the admin role", code="insufficient_permissions")
    return principal

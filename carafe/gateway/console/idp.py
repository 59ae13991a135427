"""Sign-in to the console with the company's IdP: the OpenID Connect authorization code
flow with PKCE (S256), for the client ``auth.oidc.console_client_id``.

``/console/login/idp`` sends the browser to the IdP with a fresh ``state``, ``nonce``
and code challenge, all kept on the server (a sign-in started ten minutes ago or in
another browser is refused: the ``state`` is also bound to this browser by a short
cookie). ``/console/login/callback`` trades the code for tokens over the back channel,
checks the ID token with the gateway's own OIDC verifier (signature from the JWKS,
issuer, audience = the console client, expiry) and its nonce, and maps its claims to
a principal exactly as bearer tokens are mapped (groups claim, roles claim,
``auth.oidc.role_groups``; a user SCIM deactivated is refused).

The callback answers a page that moves on by itself (a meta refresh) rather than a
redirect: the session cookie is SameSite=Strict, and a browser withholds it on a
redirect chain that began at the IdP.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from carafe.errors import CarafeError, Forbidden, InvalidInput, NotFound, Unauthenticated
from carafe.gateway.config import OidcConfig
from carafe.gateway.console.render import page
from carafe.gateway.console.session import CONSOLE_ROLES, COOKIE, TTL_S, safe_next, sessions_of
from carafe.gateway.deps import get_state
from carafe.gateway.oidc import OidcVerifier
from carafe.state import StateUnavailable

router = APIRouter(include_in_schema=False)
PENDING_COOKIE = "carafe_console_signin"
PENDING_TTL_S = 600.0


@dataclass(frozen=True, slots=True)
class Pending:
    """A sign-in sent to the IdP and not back yet."""

    verifier: str
    nonce: str
    next: str
    redirect_uri: str
    started: float


class IdpSignIn:
    """The console's OIDC client: discovery, pending sign-ins, the code exchange."""

    def __init__(self, config: OidcConfig, *, default_rpm: int, default_tpm: int | None) -> None:
        if not config.issuer or not config.console_client_id:
            raise NotFound("sign-in with the IdP is not configured (auth.oidc.issuer and console_client_id)")
        self.config = config
        self.client_id = config.console_client_id
        # the console's ID tokens name the console client as their audience
        self.verifier = OidcVerifier(
            config.model_copy(update={"audience": self.client_id}), default_rpm=default_rpm, default_tpm=default_tpm
        )
        self._discovery: dict[str, Any] | None = None
        self._pending: dict[str, Pending] = {}
        self._lock = threading.Lock()

    def discovery(self) -> dict[str, Any]:
        if self._discovery is None:
            url = f"{self.verifier.issuer}/.well-known/openid-configuration"
            try:
                doc = httpx.get(url, timeout=5.0).raise_for_status().json()
            except (httpx.HTTPError, ValueError) as exc:
                raise StateUnavailable(f"the IdP's discovery document {url} cannot be read: {exc}") from exc
            if not doc.get("authorization_endpoint") or not doc.get("token_endpoint"):
                raise StateUnavailable(f"the discovery document at {url} names no authorization or token endpoint")
            self._discovery = doc
        return self._discovery

    def start(self, next_path: str, redirect_uri: str) -> tuple[str, str]:
        """The IdP URL to send the browser to, and the ``state`` naming this sign-in."""
        state, verifier, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(48), secrets.token_urlsafe(16)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        with self._lock:
            now = time.time()
            self._pending = {k: p for k, p in self._pending.items() if now - p.started < PENDING_TTL_S}
            self._pending[state] = Pending(verifier, nonce, next_path, redirect_uri, now)
        query = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": redirect_uri,
            "scope": " ".join(self.config.console_scopes),
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        return f"{self.discovery()['authorization_endpoint']}?{urlencode(query)}", state

    def take(self, state: str) -> Pending:
        """The pending sign-in ``state`` names, once (401 when unknown or stale)."""
        with self._lock:
            pending = self._pending.pop(state, None)
        if pending is None or time.time() - pending.started > PENDING_TTL_S:
            raise Unauthenticated("this sign-in expired or was not started here; sign in again", code="signin_expired")
        return pending

    def exchange(self, code: str, pending: Pending) -> str:
        """The ID token for ``code`` (the back channel, with the PKCE verifier)."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": pending.redirect_uri,
            "client_id": self.client_id,
            "code_verifier": pending.verifier,
        }
        secret = self.config.console_client_secret
        auth = (self.client_id, secret.get_secret_value()) if secret else None
        try:
            r = httpx.post(self.discovery()["token_endpoint"], data=form, auth=auth, timeout=10.0)
        except httpx.HTTPError as exc:
            raise StateUnavailable(f"the IdP's token endpoint cannot be reached: {exc}") from exc
        body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
        if r.status_code != 200 or not body.get("id_token"):
            why = body.get("error_description") or body.get("error") or f"status {r.status_code}"
            raise Unauthenticated(f"the IdP refused the sign-in: {why}", code="signin_refused")
        return str(body["id_token"])


def sign_in_of(request: Request) -> IdpSignIn | None:
    """The console's IdP client, or None when the gateway has no console client configured."""
    state = get_state(request)
    config = state.config.auth.oidc
    if not config.enabled or not config.console_client_id or state.oidc is None:
        return None
    app_state = request.app.state
    if getattr(app_state, "console_idp", None) is None:
        auth = state.config.auth
        app_state.console_idp = IdpSignIn(config, default_rpm=auth.default_rpm, default_tpm=auth.default_tpm)
    client: IdpSignIn = app_state.console_idp
    return client


def _redirect_uri(request: Request, client: IdpSignIn) -> str:
    return client.config.console_redirect_uri or str(request.url_for("idp_callback"))


@router.get("/console/login/idp")
async def idp_start(request: Request, next: str | None = None) -> Response:
    client = sign_in_of(request)
    if client is None:
        raise NotFound("sign-in with the IdP is not configured (auth.oidc.issuer and auth.oidc.console_client_id)")
    url, state = await _run(client.start, safe_next(next), _redirect_uri(request, client))
    response = RedirectResponse(url, status_code=303)
    # Lax: the IdP's redirect back is a cross-site navigation, which a Strict cookie would miss
    response.set_cookie(
        PENDING_COOKIE, state, max_age=int(PENDING_TTL_S), path="/console/login", httponly=True, samesite="lax"
    )
    return response


def _principal(client: IdpSignIn, request: Request, id_token: str, nonce: str) -> tuple[Any, float]:
    claims = client.verifier.claims(id_token)
    if not secrets.compare_digest(str(claims.get("nonce", "")), nonce):
        raise Unauthenticated("the ID token's nonce does not match this sign-in", code="invalid_token")
    principal = client.verifier.principal(id_token, get_state(request).keys.person)
    if principal is None:
        raise Forbidden("your account is deactivated in the directory", code="deprovisioned")
    if not set(principal.roles) & CONSOLE_ROLES:
        raise Forbidden(
            f"{principal.user} has no console role (admin, auditor or viewer) at the IdP; ask an admin for one",
            code="insufficient_permissions",
        )
    return principal, float(claims["exp"])


@router.get("/console/login/callback", name="idp_callback")
async def idp_callback(request: Request) -> Response:
    client = sign_in_of(request)
    params = request.query_params
    try:
        if client is None:
            raise NotFound("sign-in with the IdP is not configured")
        if params.get("error"):
            raise Unauthenticated(f"the IdP refused: {params.get('error_description') or params['error']}")
        state, code = params.get("state", ""), params.get("code", "")
        if not state or not code or state != request.cookies.get(PENDING_COOKIE):
            raise InvalidInput("this sign-in was not started in this browser; sign in again", param="state")
        pending = client.take(state)
        id_token = await _run(client.exchange, code, pending)
        principal, expires = await _run(_principal, client, request, id_token, pending.nonce)
    except CarafeError as exc:
        status = 403 if isinstance(exc, Forbidden) else 503 if isinstance(exc, StateUnavailable) else 401
        return page(request, "login.html", None, status=status, next="/console", error=exc.message, idp=True)
    token, _ = sessions_of(request).open(principal, until=expires)
    response = page(request, "signed_in.html", None, next=pending.next, user=principal.user)
    response.set_cookie(
        COOKIE, token, max_age=TTL_S, path="/console", httponly=True, samesite="strict",
        secure=request.url.scheme == "https",
    )  # fmt: skip
    response.delete_cookie(PENDING_COOKIE, path="/console/login")
    return response


async def _run(fn: Any, *args: Any) -> Any:
    """Blocking IdP calls (discovery, token endpoint, JWKS) off the event loop."""
    return await asyncio.to_thread(fn, *args)

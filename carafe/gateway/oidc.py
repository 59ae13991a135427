"""Bearer tokens from the company's IdP: a JWT is accepted only when its signature
verifies against a key from the issuer's JWKS (found through the discovery
document) and its issuer, audience and expiry are right. The groups claim becomes
the principal's groups — and so decides which documents it may read — and roles
come from a roles claim or from group membership (``auth.oidc.role_groups``).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt

from carafe.errors import Unauthenticated
from carafe.gateway.auth import Principal
from carafe.gateway.config import OidcConfig
from carafe.state import Person, StateUnavailable

ROLES = ("admin", "auditor", "viewer")


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("ey")


class OidcVerifier:
    """Checks IdP tokens; discovery and JWKS are fetched lazily and cached."""

    def __init__(self, config: OidcConfig, *, default_rpm: int, default_tpm: int | None) -> None:
        if not config.issuer:
            raise ValueError("auth.oidc.issuer is not set")
        self.config = config
        self.issuer = config.issuer.rstrip("/")
        self.rpm = config.rpm or default_rpm
        self.tpm = config.tpm or default_tpm
        self._jwks: jwt.PyJWKClient | None = None
        self._lock = threading.Lock()
        self._verified: dict[str, tuple[float, dict[str, Any]]] = {}

    def _keys(self) -> jwt.PyJWKClient:
        with self._lock:
            if self._jwks is None:
                url = f"{self.issuer}/.well-known/openid-configuration"
                try:
                    doc = httpx.get(url, timeout=5.0).raise_for_status().json()
                except (httpx.HTTPError, ValueError) as exc:
                    raise StateUnavailable(f"the IdP's discovery document {url} cannot be read: {exc}") from exc
                if doc.get("issuer", "").rstrip("/") != self.issuer or not doc.get("jwks_uri"):
                    raise StateUnavailable(f"the discovery document at {url} names another issuer or no jwks_uri")
                self._jwks = jwt.PyJWKClient(doc["jwks_uri"], lifespan=self.config.jwks_cache_s, timeout=5)
            return self._jwks

    def claims(self, token: str) -> dict[str, Any]:
        """The token's verified claims (401 naming what was wrong)."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        hit = self._verified.get(digest)
        if hit is not None and hit[0] > time.time():
            return hit[1]
        try:
            key = self._keys().get_signing_key_from_jwt(token)
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=self.config.algorithms,
                audience=self.config.audience,
                issuer=self.issuer,
                leeway=self.config.leeway_s,
                options={"require": ["exp", "iss", "aud", "sub"], "verify_aud": self.config.audience is not None},
            )
        except jwt.PyJWKClientConnectionError as exc:
            raise StateUnavailable(f"the IdP's signing keys cannot be fetched: {exc}") from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"invalid IdP token: {exc}", code="invalid_token") from exc
        if len(self._verified) > 10_000:
            self._verified.clear()
        self._verified[digest] = (min(float(claims["exp"]), time.time() + 60.0), claims)
        return claims

    def principal(self, token: str, person: Callable[[str], Person | None]) -> Principal | None:
        """The caller a valid token names; None when the SCIM directory has deprovisioned
        them. A provisioned user's groups are the directory's (they change at once), not
        the token's (which last until it expires)."""
        claims = self.claims(token)
        sub = str(claims["sub"])
        user = str(claims.get(self.config.user_claim) or sub)
        groups = _strings(claims.get(self.config.groups_claim))
        known = person(user)
        if known is not None and not known.active:
            return None
        if known is not None:
            groups = known.groups
        return Principal(
            user=user,
            groups=groups,
            roles=self.roles(claims, groups),
            rpm=self.rpm,
            tpm=self.tpm,
            key_id=f"oidc:{sub}" if user == sub else f"oidc:{sub}:{user}",
        )

    def roles(self, claims: dict[str, Any], groups: tuple[str, ...]) -> tuple[str, ...]:
        found = set(_strings(claims.get(self.config.roles_claim))) if self.config.roles_claim else set()
        for role, members in self.config.role_groups.items():
            if set(members) & set(groups):
                found.add(role)
        return tuple(sorted(r for r in found if r in ROLES))


def _strings(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list | tuple):
        return tuple(str(v) for v in value)
    return ()

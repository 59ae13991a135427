"""The gateway's own sections of ``carafe.yaml``: ``server`` and ``auth`` (API keys, the IdP, SCIM)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class ServerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="Address to listen on")
    port: int = Field(8000, ge=1, le=65535, description="Port to listen on")
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="Largest accepted request body (413 beyond)")
    max_tokens_limit: int = Field(
        4096,
        ge=1,
        description="Largest accepted max_tokens (400 naming max_tokens beyond); prompt + max_tokens must also fit "
        "the model length",
    )
    default_max_tokens: int = Field(256, ge=1, description="max_tokens when a request sets none")
    max_n: int = Field(8, ge=1, description="Largest accepted `n` (choices per request)")
    max_generations_per_request: int = Field(
        16, ge=1, description="Most engine generations one request may start: prompts × `n` (400 naming `n` beyond)"
    )
    max_prompt_chars: int = Field(
        200_000,
        ge=1,
        description="Most characters of messages / prompt / input in one request, checked before any templating or "
        "tokenizing (413 naming the field beyond)",
    )
    max_messages: int = Field(1000, ge=1, description="Most messages (or input items) in one request (400 beyond)")
    max_embedding_inputs: int = Field(256, ge=1, description="Most inputs in one /v1/embeddings request (400 beyond)")
    max_embedding_chars: int = Field(
        200_000, ge=1, description="Most characters of all inputs of one /v1/embeddings request together (413 beyond)"
    )
    max_inflight_per_key: int = Field(
        32,
        ge=1,
        description="Most generations one API key may run at once (429 with Retry-After beyond); `n` choices count "
        "one each",
    )
    max_concurrent_generations: int = Field(
        256, ge=1, description="Most generations the gateway runs at once for all keys (503 with Retry-After beyond)"
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="A connection that has not sent a request's complete headers this long after it opened (or "
        "after its previous response) is closed (slow-header clients)",
    )
    body_timeout_s: float = Field(
        30.0, gt=0, description="A request body not complete this long after its headers is refused with 408"
    )
    max_connections: int = Field(
        2048,
        ge=1,
        description="Most open connections (uvicorn's limit_concurrency); beyond, new requests get 503 at once",
    )
    responses_retention_s: float = Field(
        3600.0,
        ge=0,
        description="How long /v1/responses keeps a response (state database) for previous_response_id (0: not at all)",
    )
    responses_max_stored: int = Field(
        10_000, ge=0, description="Most responses kept for previous_response_id (oldest go first)"
    )


class OidcConfig(BaseModel):
    """Bearer tokens from the company's IdP (Entra ID, Okta, Keycloak...): JWTs checked
    against the issuer's discovery document and JWKS."""

    model_config = ConfigDict(extra="forbid")

    issuer: str | None = Field(
        None, description="The IdP's issuer URL (its /.well-known/openid-configuration is read); unset: no OIDC"
    )
    audience: str | None = Field(None, description="The audience tokens must name (the gateway's client or API id)")
    groups_claim: str = Field("groups", description="Claim holding the user's groups (document ACLs match these)")
    user_claim: str = Field("preferred_username", description="Claim naming the user (falls back to sub)")
    roles_claim: str | None = Field("roles", description="Claim holding roles (admin, auditor, viewer)")
    role_groups: dict[str, list[str]] = Field(
        default_factory=dict, description="Roles granted by group membership, e.g. {admin: [carafe-admins]}"
    )
    algorithms: list[str] = Field(
        default_factory=lambda: ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"],
        description="Signature algorithms accepted (never none or HS*)",
    )
    leeway_s: float = Field(30.0, ge=0, le=300, description="Clock skew allowed on exp/nbf/iat")
    jwks_cache_s: float = Field(300.0, ge=1, description="How long the issuer's signing keys are cached")
    rpm: int | None = Field(None, ge=1, description="Requests per minute per IdP user (default: auth.default_rpm)")
    tpm: int | None = Field(None, ge=1, description="Tokens per minute per IdP user (default: auth.default_tpm)")
    console_client_id: str | None = Field(
        None,
        description="The console's client id at the IdP: people sign in to /console with the authorization code "
        "flow and PKCE (unset: the console signs in with API keys only)",
    )
    console_client_secret: SecretStr | None = Field(
        None, description="The console client's secret, when the IdP registers it as a confidential client"
    )
    console_redirect_uri: str | None = Field(
        None,
        description="The redirect URI registered for the console client (default: this gateway's "
        "/console/login/callback as the browser reached it)",
    )
    console_scopes: list[str] = Field(
        default_factory=lambda: ["openid", "profile"],
        description="Scopes the console asks for; the ID token must carry the user, groups and roles claims",
    )

    @property
    def enabled(self) -> bool:
        return bool(self.issuer)


class AuthConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keys_file: Path | None = Field(
        None,
        description="A legacy keys.json imported once into the state database; default <data_dir>/keys.json",
    )
    default_rpm: int = Field(600, ge=1, description="Requests per minute for keys created without --rpm")
    default_tpm: int | None = Field(
        None,
        ge=1,
        description="Tokens (prompt + generated; max completion reserved while generating) per minute for keys "
        "created without --tpm",
    )
    admin_bootstrap_key: SecretStr | None = Field(
        None, description="A key accepted as admin without a keys file entry (for first set-up; keep secret)"
    )
    oidc: OidcConfig = Field(default_factory=OidcConfig)
    scim_token: SecretStr | None = Field(
        None, description="Bearer token the IdP sends to /scim/v2 (unset: SCIM is off)"
    )

"""Config of routing: aliases, `auto` routing, canary stickiness, per-route policies.

```yaml
routing:
  aliases:
    hr-assistant:
      adapter: hr-style          # name (stable/canary), name@version, or null = base model
      retrieval: {enabled: true, top_k: 6}
      guard_policy: strict
  auto: {enabled: true, threshold: 0.35}
```
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RetrievalPolicyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="Retrieve permitted passages from the index for this route")
    top_k: int = Field(4, ge=1, le=50, description="Passages added to the prompt")


class RouteAlias(BaseModel):
    """A name applications send as `model`, mapped to an adapter and policies."""

    model_config = ConfigDict(extra="forbid")

    adapter: str | None = Field(
        None, description="Adapter name (its channels), `name@version`, or null for the base model"
    )
    retrieval: RetrievalPolicyConfig = Field(default_factory=RetrievalPolicyConfig)
    guard_policy: str | None = Field(None, description="Guardrail policy name (null: guards.default_policy)")
    record_content: bool = Field(False, description="Record prompt/answer text in the audit trace (else hashes only)")
    description: str = Field("", description="Shown in /v1/models")


class AutoRoutingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Accept `model: auto`")
    name: str = Field("auto", description="The model name that triggers auto routing")
    threshold: float = Field(
        0.35,
        ge=-1.0,
        le=1.0,
        description="Least cosine similarity between query and an adapter's description; below it the base model "
        "answers",
    )
    retrieval: RetrievalPolicyConfig = Field(default_factory=RetrievalPolicyConfig)


class RoutingConfig(BaseModel):
    """How a request's `model` becomes an adapter version plus policies."""

    model_config = ConfigDict(extra="forbid")

    aliases: dict[str, RouteAlias] = Field(
        default_factory=dict, description="Route aliases: name -> adapter + retrieval/guard policy"
    )
    auto: AutoRoutingConfig = Field(default_factory=AutoRoutingConfig)
    retrieval: RetrievalPolicyConfig = Field(
        default_factory=RetrievalPolicyConfig, description="Retrieval for plain adapter/base requests"
    )
    record_content: bool = Field(False, description="Default of record_content for plain adapter/base requests")
    canary_sticky: bool = Field(
        True, description="A user always lands on the same side of a canary split (hash of user + adapter)"
    )

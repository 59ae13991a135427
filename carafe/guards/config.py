"""Config of the guardrails: named policies → checks, thresholds and actions.

A policy lists, per stage (input / output), the checks it runs with an action
(``block``, ``redact`` or ``log`` = record only) and a threshold on the check's
score. Routes name a policy; routes that name none get ``default_policy``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

PolicyAction = Literal["block", "redact", "log"]
OnError = Literal["block", "allow"]
PiiMode = Literal["mask", "hash", "tag"]

BUILTIN_INPUT = "injection, indirect, pii, toxicity, topics, guardian"  # (help text; the registry is the truth)
BUILTIN_OUTPUT = "pii, toxicity, grounding, leak, guardian"


class CheckSettings(BaseModel):
    """How one check behaves inside a policy."""

    model_config = ConfigDict(extra="forbid")

    action: PolicyAction = Field(
        "block", description="What a hit does: block the request/answer, redact the span, or log only"
    )
    threshold: float = Field(
        0.5, description="Score at or above which the check fires (grounding: score BELOW which it fires)"
    )
    enabled: bool = Field(True, description="Turn the check off without deleting its settings")
    on_error: OnError | None = Field(
        None,
        description="When the check itself fails (raises, its index cannot open): block the text, or allow it. "
        "Default: block for the checks that protect data (injection, indirect, leak), allow for the others. "
        "Either way the failure is recorded as an error verdict in the trace",
    )


def _default_input() -> dict[str, CheckSettings]:
    return {
        # Kind and threshold chosen by leaving each training corpus out in turn (bench/guard_select.py).
        "injection": CheckSettings(action="block", threshold=0.7),
        # instructions addressed to the model inside content (tool results, pasted documents); rules only
        "indirect": CheckSettings(action="block", threshold=0.5),
        "pii": CheckSettings(action="redact", threshold=0.5),
        "toxicity": CheckSettings(action="block", threshold=0.8),
        "topics": CheckSettings(action="block", threshold=0.45),
    }


def _default_output() -> dict[str, CheckSettings]:
    return {
        "pii": CheckSettings(action="redact", threshold=0.5),
        "toxicity": CheckSettings(action="block", threshold=0.8),
        # support below 0.6 is flagged: on the shipped eval set, 0.65 recall at 0 false positives (0.5: 0.40)
        "grounding": CheckSettings(action="log", threshold=0.6),
        "leak": CheckSettings(action="redact", threshold=0.9),
    }


class PolicyConfig(BaseModel):
    """One named policy."""

    model_config = ConfigDict(extra="forbid")

    input: dict[str, CheckSettings] = Field(
        default_factory=_default_input, description=f"Input checks by name ({BUILTIN_INPUT}, or a plugin)"
    )
    output: dict[str, CheckSettings] = Field(
        default_factory=_default_output, description=f"Output checks by name ({BUILTIN_OUTPUT}, or a plugin)"
    )
    deny_topics: list[str] = Field(
        default_factory=list, description="Names of topics (from guards.topics) this policy refuses"
    )
    pii_mode: PiiMode | None = Field(None, description="Override of guards.pii_mode for this policy")


class TopicConfig(BaseModel):
    """A topic a policy can deny: keyword phrases plus descriptions for embedding similarity."""

    model_config = ConfigDict(extra="forbid")

    phrases: list[str] = Field(
        default_factory=list, description="Words/phrases that mark the topic (case-insensitive, whole words)"
    )
    descriptions: list[str] = Field(
        default_factory=list, description="Sentences describing the topic; texts close to one (cosine) are on-topic"
    )


def _default_topics() -> dict[str, TopicConfig]:
    # Short questions as descriptions: MiniLM matches question to question best.
    return {
        "medical_advice": TopicConfig(
            phrases=["dosage", "diagnose me", "prescription", "dose of"],
            descriptions=[
                "what medication should I take",
                "how much of this medicine should I take for my pain",
                "diagnose my symptoms",
                "is this symptom serious, do I need treatment",
            ],
        ),
        "legal_advice": TopicConfig(
            phrases=["sue my employer", "file a lawsuit"],
            descriptions=[
                "can I sue someone",
                "should I take legal action against my employer or landlord",
                "legal advice about a lawsuit or court case",
            ],
        ),
        "investment_advice": TopicConfig(
            phrases=["which stocks should i buy", "crypto tips"],
            descriptions=[
                "should I invest my money in stocks or crypto",
                "which shares or cryptocurrency should I buy",
                "investment advice for my savings",
                "is it a good time to buy bitcoin",
            ],
        ),
    }


def _default_policies() -> dict[str, PolicyConfig]:
    log_only = {k: CheckSettings(action="log", threshold=v.threshold) for k, v in _default_input().items()}
    log_out = {k: CheckSettings(action="log", threshold=v.threshold) for k, v in _default_output().items()}
    return {
        "default": PolicyConfig(),
        "strict": PolicyConfig(
            deny_topics=["medical_advice", "legal_advice", "investment_advice"],
            # blocking costs the user an answer: a lower bar than the default policy's logging
            output={
                **_default_output(),
                "grounding": CheckSettings(action="block", threshold=0.5),
                "leak": CheckSettings(action="block", threshold=0.85),
            },
        ),
        "log_only": PolicyConfig(input=log_only, output=log_out),
    }


class GuardianConfig(BaseModel):
    """A guardian model behind an OpenAI-compatible endpoint (off by default)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="Call the guardian model (needs base_url and model)")
    base_url: str = Field(
        "http://127.0.0.1:8001/v1", description="OpenAI-compatible base URL of the server hosting the guardian"
    )
    model: str = Field("ibm-granite/granite-guardian-3.2-3b-a800m", description="Model name on that server")
    api_key: str = Field("none", description="Bearer token for the endpoint")
    prompt_format: Literal["granite_guardian", "llama_guard"] = Field(
        "granite_guardian", description="Prompt/answer format the model speaks"
    )
    risk: str = Field(
        "harm", description="Granite Guardian risk name to ask about (harm, jailbreak, social_bias, groundedness...)"
    )
    timeout_s: float = Field(5.0, description="Per-call timeout; a timeout or error yields an unavailable verdict")
    fail_closed: bool = Field(
        False, description="Block when the guardian cannot be reached (default: allow and record the error)"
    )


class PluginConfig(BaseModel):
    """A check from outside Carafe, by import path (see :mod:`carafe.guards.registry`)."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="Import path of the check's builder, 'package.module:build'")
    stages: list[Literal["input", "output"]] = Field(["input"], description="Stages it can run on")
    options: dict[str, Any] = Field(default_factory=dict, description="Passed to the builder as CheckContext.options")


class GuardsConfig(BaseModel):
    """The ``guards`` section of carafe.yaml."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Run the guardrails at all")
    default_policy: str = Field("default", description="Policy for routes that name none")
    policies: dict[str, PolicyConfig] = Field(default_factory=_default_policies, description="Named policies")
    topics: dict[str, TopicConfig] = Field(
        default_factory=_default_topics, description="Topics that policies may deny by name"
    )
    pii_mode: PiiMode = Field(
        "tag", description="PII redaction: mask (****), hash (<EMAIL:1a2b3c4d>), or tag (<EMAIL>)"
    )
    pii_entities: list[str] = Field(
        default_factory=lambda: [
            "EMAIL",
            "PHONE",
            "CREDIT_CARD",
            "IBAN",
            "US_SSN",
            "UK_NINO",
            "DE_TAX_ID",
            "ES_NIF",
            "FR_NIR",
            "IP_ADDRESS",
        ],
        description="PII types to detect",
    )
    pii_hash_salt: str = Field("carafe", description="Salt for the hash redaction mode (same value → same hash)")
    max_check_chars: int = Field(
        8000,
        description="Window of the PII scan: longer texts are scanned in overlapping windows over their whole "
        "length (the injection checks read every text whole, in 1,000-character windows, after whitespace "
        "runs are collapsed)",
    )
    verdict_cache_size: int = Field(
        4096, description="Input verdicts kept per text (repeated conversation history is not checked again)"
    )
    min_grounding_words: int = Field(4, description="Sentences shorter than this are not scored for grounding")
    stream_max_pending_chars: int = Field(
        400, description="A streamed piece without sentence end is checked and released at this length"
    )
    injection_model: str | None = Field(
        None,
        description="A fitted injection classifier (.json.gz with its .sha256 beside it, made by "
        "scripts/fit_injection_classifier.py); default: the one shipped in the package",
    )
    guardian: GuardianConfig = Field(default_factory=GuardianConfig)
    plugins: dict[str, PluginConfig] = Field(
        default_factory=dict, description="Extra checks by name, from an import path"
    )

    @model_validator(mode="after")
    def _refs(self) -> GuardsConfig:
        from carafe.guards.registry import available

        specs = available(self)
        for name, pol in self.policies.items():
            for stage, given in (("input", pol.input), ("output", pol.output)):
                known = sorted(n for n, spec in specs.items() if stage in spec.stages)
                unknown = sorted(set(given) - set(known))
                if unknown:
                    raise ValueError(f"policy {name!r}: unknown {stage} check(s) {unknown}; known: {', '.join(known)}")
        if self.default_policy not in self.policies:
            raise ValueError(
                f"guards.default_policy {self.default_policy!r} is not among guards.policies "
                f"({', '.join(self.policies)})"
            )
        for name, pol in self.policies.items():
            missing = [t for t in pol.deny_topics if t not in self.topics]
            if missing:
                raise ValueError(f"policy {name!r} denies unknown topic(s) {missing}; define them under guards.topics")
        return self

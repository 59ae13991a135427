"""From an OpenAI/vLLM request to the engine's :class:`SamplingParams`."""

from __future__ import annotations

from carafe.adapters.engine import OutputConstraint, SamplingParams
from carafe.errors import InvalidInput
from carafe.gateway.config import ServerConfig
from carafe.gateway.protocol import SamplingFields


def logprobs_count(req: SamplingFields) -> int | None:
    """None (off), or how many alternatives to report per token (chat: top_logprobs)."""
    if req.logprobs is None or req.logprobs is False:
        return None
    if req.logprobs is True:
        return req.top_logprobs or 0
    return int(req.logprobs)


def sampling_params(
    req: SamplingFields, server: ServerConfig, *, choice: int = 0, constraint: OutputConstraint | None = None
) -> SamplingParams:
    """Engine params for choice number ``choice`` of ``req``.

    With a seed, choice *i* uses ``seed + i``: the choices differ from each other
    and each is reproducible. Limits are checked here so that the error names the
    field the caller sent.
    """
    if req.n > server.max_n:
        raise InvalidInput(f"n={req.n} exceeds this gateway's limit of {server.max_n}", param="n")
    max_tokens = req.max_tokens if req.max_tokens is not None else server.default_max_tokens
    if max_tokens > server.max_tokens_limit:
        raise InvalidInput(
            f"max_tokens={max_tokens} exceeds this gateway's limit of {server.max_tokens_limit}",
            param="max_tokens",
            code="max_tokens_too_large",
        )
    if req.min_tokens > max_tokens:
        raise InvalidInput(
            f"min_tokens ({req.min_tokens}) must not exceed max_tokens ({max_tokens})", param="min_tokens"
        )
    if req.top_k is not None and req.top_k == 0:
        raise InvalidInput("top_k must be -1 (off) or at least 1", param="top_k")
    seed = req.seed + choice if req.seed is not None else None
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        top_k=-1 if req.top_k is None else req.top_k,
        min_p=req.min_p or 0.0,
        seed=seed,
        stop=req.stop_list(),
        stop_token_ids=list(req.stop_token_ids or []),
        ignore_eos=req.ignore_eos,
        min_tokens=req.min_tokens,
        repetition_penalty=req.repetition_penalty or 1.0,
        presence_penalty=req.presence_penalty or 0.0,
        frequency_penalty=req.frequency_penalty or 0.0,
        constraint=constraint,
        logprobs=logprobs_count(req),
    )

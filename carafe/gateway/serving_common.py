"""Pieces shared by the chat and completion endpoints."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator

from opentelemetry import trace

from carafe.adapters.engine import ChatMessage, GenerationChunk, OutputConstraint, SamplingParams
from carafe.gateway.chat_output import ChoiceOutput
from carafe.gateway.pipeline import Prepared
from carafe.gateway.state import AppState
from carafe.gateway.streams import merge
from carafe.gateway.telemetry import attributes as attr
from carafe.gateway.telemetry import metrics
from carafe.gateway.tools import ToolPlan

OVERHEAD_HEADER = "x-carafe-overhead-duration-ms"
ADAPTER_HEADER = "x-carafe-adapter"
ROUTE_HEADER = "x-carafe-route"


class GenerationMeter:
    """Times a request so the gateway's own overhead can be told apart from the engine's."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.engine_start: float | None = None
        self.first_token: float | None = None
        self.end: float | None = None

    def started(self) -> None:
        self.engine_start = time.perf_counter()

    def first(self) -> None:
        if self.first_token is None:
            self.first_token = time.perf_counter()

    def done(self) -> None:
        if self.end is None:
            self.end = time.perf_counter()

    def overhead_ms(self) -> float:
        """Wall time spent in the gateway, engine time excluded, so far."""
        now = time.perf_counter()
        start = self.engine_start or now
        engine_until = self.end or self.first_token or start
        return max(0.0, ((now - self.t0) - (engine_until - start)) * 1000.0)

    def record(
        self,
        state: AppState,
        prep: Prepared,
        prompt_tokens: int,
        completion_tokens: int,
        reasons: list[str | None],
        text: str,
    ) -> None:
        """The generation span's GenAI attributes, output-guard verdicts and metrics."""
        span = trace.get_current_span()
        decision = prep.decision
        ttft = (self.first_token - self.engine_start) if self.first_token and self.engine_start else None
        span.set_attribute(attr.GEN_AI_RESPONSE_MODEL, decision.served_model)
        span.set_attribute(attr.GEN_AI_USAGE_INPUT_TOKENS, prompt_tokens)
        span.set_attribute(attr.GEN_AI_USAGE_OUTPUT_TOKENS, completion_tokens)
        span.set_attribute(attr.GEN_AI_RESPONSE_FINISH_REASONS, [r or "abort" for r in reasons])
        span.set_attributes(
            attr.content_attributes(
                text, decision.record_content or state.config.telemetry.record_content, kind="completion"
            )
        )
        span.set_attribute(attr.GEN_AI_PROVIDER_NAME, provider_name(state))
        if ttft is not None:
            span.set_attribute(attr.CARAFE_TTFT_MS, ttft * 1000.0)
        for guard in prep.output_guards:
            for v in guard.verdicts:
                span.set_attributes(v.to_attributes())
                metrics.record_guard(v.check, v.action)
        metrics.on_generation(
            decision.served_model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, ttft_s=ttft
        )


def caller_content(messages: list[ChatMessage], prep: Prepared) -> str:
    """What the caller sent, as the input guards left it, without the retrieved passages: the
    text a route's ``record_content`` may record (its system turns, then the conversation)."""
    system = [m.content for m in messages if m.role in ("system", "developer")]
    rest = [m.content for m in prep.messages if m.role not in ("system", "developer")]
    return "\n".join(system + rest)


def record_request(
    state: AppState,
    prep: Prepared,
    prompt_text: str,
    *,
    plan: ToolPlan | None = None,
    constraint: OutputConstraint | None = None,
    api: str | None = None,
) -> None:
    """The request span's attributes for a chat-shaped generation (chat completions, responses)."""
    span = trace.get_current_span()
    span.set_attribute(attr.GEN_AI_OPERATION_NAME, "chat")
    span.set_attribute(attr.CARAFE_PRINCIPAL, prep.principal.user)
    if api is not None:
        span.set_attribute(attr.CARAFE_API, api)
    span.set_attributes(
        attr.content_attributes(prompt_text, prep.decision.record_content or state.config.telemetry.record_content)
    )
    if plan is not None and plan.active:
        span.set_attribute(attr.GEN_AI_REQUEST_TOOLS, [t.function.name for t in plan.tools])
        span.set_attribute(attr.CARAFE_TOOL_CHOICE, plan.function or plan.mode)
    if constraint is not None:
        span.set_attribute(attr.CARAFE_OUTPUT_CONSTRAINT, constraint.kind)


def record_tool_calls(outputs: list[ChoiceOutput]) -> None:
    """The names of the tools the model called, on the request span (the audit record)."""
    names = [c.function.name for o in outputs for c in o.tool_calls]
    if names:
        trace.get_current_span().set_attribute(attr.CARAFE_TOOL_CALLS, names)


async def replay(
    streams: list[AsyncIterator[GenerationChunk]], firsts: list[GenerationChunk]
) -> AsyncIterator[tuple[int, GenerationChunk]]:
    """The first chunk of each stream (already awaited), then the rest merged."""
    live = []
    for i, first in enumerate(firsts):
        yield i, first
        if first.finish_reason is None:
            live.append((i, streams[i]))
    if not live:
        return
    async for j, chunk in merge([s for _, s in live]):
        yield live[j][0], chunk


def provider_name(state: AppState) -> str:
    """``gen_ai.provider.name``: who actually generated (the in-process engine or vLLM)."""
    return "vllm" if state.config.adapters.engine.backend == "vllm" else "carafe"


def caller_texts(prep: Prepared, params: SamplingParams) -> tuple[str, ...]:
    """What the caller's own request holds: its messages or prompt, and the literal text of a
    forced output (``guided_choice`` options, a regex or grammar). None of it can be a leak."""
    constraint = params.constraint
    forced = str(constraint.spec) if constraint is not None and constraint.kind in ("regex", "grammar") else ""
    return (*prep.request_texts, re.sub(r"\\(.)", r"\1", forced)) if forced else prep.request_texts


def response_headers(prep: Prepared, overhead_ms: float, extra: dict[str, str] | None = None) -> dict[str, str]:
    headers = {
        OVERHEAD_HEADER: f"{overhead_ms:.3f}",
        ADAPTER_HEADER: prep.decision.served_model,
        ROUTE_HEADER: prep.decision.route,
    }
    if extra:
        headers.update(extra)
    return headers

"""Pieces shared by the chat and completion endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from opentelemetry import trace

from carafe.adapters.engine import GenerationChunk, SamplingParams
from carafe.gateway.pipeline import sha256_text
from carafe.gateway.state import AppState
from carafe.gateway.streams import guarded

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

    def record(self, state: AppState, prep: Any, prompt_tokens: int, completion_tokens: int,
               reasons: list[str | None], text: str) -> None:
        span = trace.get_current_span()
        decision = prep.decision
        span.set_attribute("gen_ai.response.model", decision.served_model)
        span.set_attribute("gen_ai.usage.input_tokens", prompt_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", completion_tokens)
        span.set_attribute("gen_ai.response.finish_reasons", [r or "abort" for r in reasons])
        span.set_attribute("carafe.completion.sha256", sha256_text(text))
        if decision.record_content or state.config.telemetry.record_content:
            span.set_attribute("carafe.completion.content", text)
        span.set_attribute("gen_ai.provider.name", provider_name(state))
        if self.first_token is not None and self.engine_start is not None:
            span.set_attribute("carafe.ttft_ms", (self.first_token - self.engine_start) * 1000.0)
        metrics = state.extras.get("metrics")
        for guard in getattr(prep, "output_guards", []):
            for v in guard.verdicts:
                for k, val in v.to_attributes().items():
                    span.set_attribute(k, val)
                if metrics is not None:
                    metrics.record_guard(v.check, v.action)
        hook = state.extras.get("on_generation")
        if hook is not None:
            with contextlib.suppress(Exception):
                hook(decision=decision, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                     ttft_s=(self.first_token - self.engine_start) if self.first_token and self.engine_start else None,
                     reasons=reasons)


def provider_name(state: AppState) -> str:
    """``gen_ai.provider.name``: who actually generated (the in-process engine or vLLM)."""
    return "vllm" if state.config.adapters.engine.backend == "vllm" else "carafe"


def start_streams(
    state: AppState, prep: Any, params: list[SamplingParams],
    call: Callable[[SamplingParams], AsyncIterator[GenerationChunk]],
) -> list[AsyncIterator[GenerationChunk]]:
    """One engine stream per choice, each behind its own output guard."""
    out = []
    for p in params:
        guard = None
        if state.guards is not None:
            guard = state.guards.output_stream(
                policy=prep.decision.guard_policy, principal=prep.principal, passages=prep.passages
            )
            prep.output_guards.append(guard)
        out.append(guarded(call(p), guard))
    return out


async def first_chunks(streams: list[AsyncIterator[GenerationChunk]], meter: GenerationMeter) -> list[GenerationChunk]:
    """Await every choice's first chunk, so that errors (prompt too long, engine
    down, unknown adapter) become a proper HTTP error before any byte is sent."""
    meter.started()
    with trace.get_tracer("carafe.gateway").start_as_current_span("carafe.generate.first_token"):
        try:
            firsts = await asyncio.gather(*(anext(s) for s in streams))
        except BaseException:
            for s in streams:
                with contextlib.suppress(Exception):
                    await s.aclose()  # type: ignore[attr-defined]
            raise
    meter.first()
    return list(firsts)


def response_headers(prep: Any, overhead_ms: float, extra: dict[str, str] | None = None) -> dict[str, str]:
    headers = {
        OVERHEAD_HEADER: f"{overhead_ms:.3f}",
        ADAPTER_HEADER: prep.decision.served_model,
        ROUTE_HEADER: prep.decision.route,
    }
    if extra:
        headers.update(extra)
    return headers

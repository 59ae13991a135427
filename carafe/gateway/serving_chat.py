"""``POST /v1/chat/completions``: streaming and not, n choices, guards, citations,
structured outputs, tool calls and logprobs."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse
from opentelemetry import trace

from carafe.adapters.engine import GenerationChunk
from carafe.gateway.auth import Principal
from carafe.gateway.deps import get_principal, get_state
from carafe.gateway.pipeline import Prepared, prepare_chat, sha256_text
from carafe.gateway.protocol import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    DeltaMessage,
    Usage,
)
from carafe.gateway.chat_output import ChoiceOutput
from carafe.gateway.constraints import request_constraint
from carafe.gateway.sampling import sampling_params
from carafe.gateway.serving_common import (
    GenerationMeter,
    first_chunks,
    response_headers,
    start_streams,
)
from carafe.gateway.state import AppState
from carafe.gateway.streams import SSE_DONE, merge, sse
from carafe.gateway.tools import ToolPlan, plan_tools, render_messages

router = APIRouter()
tracer = trace.get_tracer("carafe.gateway")


@router.post("/v1/chat/completions", response_model=ChatCompletionResponse)
async def create_chat_completion(
    body: ChatCompletionRequest, request: Request, principal: Principal = Depends(get_principal)
) -> Any:
    state = get_state(request)
    t0 = request.scope.get("carafe.t0", time.perf_counter())
    plan = plan_tools(body.tools, body.tool_choice)
    messages = render_messages(body.messages, plan)
    constraint = plan.constraint or request_constraint(body)
    params = [sampling_params(body, state.config.server, choice=i, constraint=constraint) for i in range(body.n)]
    prep = await prepare_chat(state, principal, body.model, messages)
    span = trace.get_current_span()
    span.set_attribute("gen_ai.operation.name", "chat")
    if plan.active:
        span.set_attribute("gen_ai.request.tools", [t.function.name for t in plan.tools])
        span.set_attribute("carafe.tool_choice", plan.function or plan.mode)
    if constraint is not None:
        span.set_attribute("carafe.output_constraint", constraint.kind)
    span.set_attribute("carafe.principal", principal.user)
    prompt_text = "\n".join(m.content for m in messages)
    span.set_attribute("carafe.prompt.sha256", sha256_text(prompt_text))
    if prep.decision.record_content or state.config.telemetry.record_content:
        span.set_attribute("carafe.prompt.content", prompt_text)

    meter = GenerationMeter(t0)
    streams = start_streams(
        state, prep, params,
        lambda p: state.engine.chat(prep.messages, p, adapter=prep.decision.adapter),
    )
    firsts = await first_chunks(streams, meter)
    outputs = [ChoiceOutput(plan, want_logprobs=bool(body.logprobs)) for _ in range(body.n)]
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            _stream(state, body, prep, streams, firsts, include_usage, meter, outputs),
            media_type="text/event-stream",
            headers=response_headers(prep, meter.overhead_ms(), extra={"Cache-Control": "no-cache"}),
        )
    prompt_tokens = completion_tokens = 0
    async for i, chunk in _replay(streams, firsts):
        outputs[i].step(chunk)
        if chunk.finish_reason is not None:
            prompt_tokens = chunk.prompt_tokens
            completion_tokens += chunk.completion_tokens
    meter.done()
    reasons = [o.finish_reason for o in outputs]
    record_tool_calls(outputs)
    resp = ChatCompletionResponse(
        model=prep.decision.served_model,
        choices=[
            ChatChoice(index=i, message=o.message(), finish_reason=o.finish_reason, logprobs=o.choice_logprobs())
            for i, o in enumerate(outputs)
        ],
        usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                    total_tokens=prompt_tokens + completion_tokens),
        citations=prep.citations,
        adapter=prep.decision.served_model,
    )
    meter.record(state, prep, prompt_tokens, completion_tokens, reasons, "".join(o.raw for o in outputs))
    data = resp.model_dump(exclude_none=False)
    for choice in data["choices"]:
        if choice["message"]["tool_calls"] is None:
            del choice["message"]["tool_calls"]
    return JSONResponse(data, headers=response_headers(prep, meter.overhead_ms()))


def record_tool_calls(outputs: list[ChoiceOutput]) -> None:
    """The names of the tools the model called, on the request span (the audit record)."""
    names = [c.function.name for o in outputs for c in o.tool_calls]
    if names:
        trace.get_current_span().set_attribute("carafe.tool_calls", names)


async def _replay(
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


async def _stream(
    state: AppState,
    body: ChatCompletionRequest,
    prep: Prepared,
    streams: list[AsyncIterator[GenerationChunk]],
    firsts: list[GenerationChunk],
    include_usage: bool,
    meter: GenerationMeter,
    outputs: list[ChoiceOutput],
) -> AsyncIterator[str]:
    rid = ChatCompletionResponse.model_fields["id"].default_factory()  # type: ignore[misc]
    created = int(time.time())
    model = prep.decision.served_model

    def chunk(choices: list[ChatChunkChoice], usage: Usage | None = None, **extra: Any) -> str:
        c = ChatCompletionChunk(id=rid, created=created, model=model, choices=choices, usage=usage,
                                adapter=model, **extra)
        data = c.model_dump(exclude_none=True)
        if include_usage and "usage" not in data:
            data["usage"] = None
        return sse(data)

    yield chunk([ChatChunkChoice(index=i, delta=DeltaMessage(role="assistant", content=""))
                 for i in range(body.n)], citations=prep.citations)
    prompt_tokens = completion_tokens = 0
    try:
        async for i, c in _replay(streams, firsts):
            out = outputs[i]
            deltas = out.step(c)
            lps = out.chunk_logprobs(len(c.logprobs or []))
            for k, delta in enumerate(deltas):
                last = c.finish_reason is not None and k == len(deltas) - 1
                yield chunk([ChatChunkChoice(index=i, delta=delta, logprobs=lps if k == 0 else None,
                                             finish_reason=out.finish_reason if last else None)])
            if c.finish_reason is None:
                if not deltas and lps is not None:
                    yield chunk([ChatChunkChoice(index=i, delta=DeltaMessage(), logprobs=lps)])
                continue
            prompt_tokens = c.prompt_tokens
            completion_tokens += c.completion_tokens
            if not deltas:
                yield chunk([ChatChunkChoice(index=i, delta=DeltaMessage(), finish_reason=out.finish_reason)])
        meter.done()
        record_tool_calls(outputs)
        if include_usage:
            yield chunk([], usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                                        total_tokens=prompt_tokens + completion_tokens))
        yield SSE_DONE
    finally:
        for s in streams:
            await s.aclose()  # type: ignore[attr-defined]
        meter.record(state, prep, prompt_tokens, completion_tokens, [o.finish_reason for o in outputs],
                     "".join(o.raw for o in outputs))

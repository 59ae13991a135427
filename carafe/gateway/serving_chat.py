"""``POST /v1/chat/completions``: streaming and not, n choices, guards, citations."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse
from opentelemetry import trace

from carafe.adapters.engine import ChatMessage, GenerationChunk
from carafe.gateway.auth import Principal
from carafe.gateway.deps import get_principal, get_state
from carafe.gateway.pipeline import Prepared, prepare_chat
from carafe.gateway.protocol import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessageOut,
    DeltaMessage,
    Usage,
)
from carafe.gateway.sampling import sampling_params
from carafe.gateway.serving_common import (
    GenerationMeter,
    first_chunks,
    response_headers,
    start_streams,
)
from carafe.gateway.state import AppState
from carafe.gateway.streams import SSE_DONE, merge, sse
from carafe.gateway.telemetry import attributes as attr

router = APIRouter()
tracer = trace.get_tracer("carafe.gateway")


@router.post("/v1/chat/completions", response_model=ChatCompletionResponse)
async def create_chat_completion(
    body: ChatCompletionRequest, request: Request, principal: Principal = Depends(get_principal)
) -> Any:
    state = get_state(request)
    t0 = request.scope.get("carafe.t0", time.perf_counter())
    messages = [ChatMessage(role=_role(m.role), content=m.text()) for m in body.messages]
    params = [sampling_params(body, state.config.server, choice=i) for i in range(body.n)]
    prep = await prepare_chat(state, principal, body.model, messages)
    span = trace.get_current_span()
    span.set_attribute(attr.GEN_AI_OPERATION_NAME, "chat")
    span.set_attribute(attr.CARAFE_PRINCIPAL, principal.user)
    span.set_attributes(attr.content_attributes(
        "\n".join(m.content for m in messages), prep.decision.record_content or state.config.telemetry.record_content))

    meter = GenerationMeter(t0)
    streams = start_streams(
        state, prep, params,
        lambda p: state.engine.chat(prep.messages, p, adapter=prep.decision.adapter),
    )
    firsts = await first_chunks(streams, meter)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            _stream(state, body, prep, streams, firsts, include_usage, meter),
            media_type="text/event-stream",
            headers=response_headers(prep, meter.overhead_ms(), extra={"Cache-Control": "no-cache"}),
        )
    texts = [""] * body.n
    reasons: list[str | None] = [None] * body.n
    prompt_tokens = completion_tokens = 0
    async for i, chunk in _replay(streams, firsts):
        texts[i] += chunk.text
        if chunk.finish_reason is not None:
            reasons[i] = chunk.finish_reason
            prompt_tokens = chunk.prompt_tokens
            completion_tokens += chunk.completion_tokens
    meter.done()
    resp = ChatCompletionResponse(
        model=prep.decision.served_model,
        choices=[
            ChatChoice(index=i, message=ChatMessageOut(content=texts[i]), finish_reason=reasons[i])
            for i in range(body.n)
        ],
        usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                    total_tokens=prompt_tokens + completion_tokens),
        citations=prep.citations,
        adapter=prep.decision.served_model,
    )
    meter.record(state, prep, prompt_tokens, completion_tokens, reasons, "".join(texts))
    return JSONResponse(resp.model_dump(exclude_none=False), headers=response_headers(prep, meter.overhead_ms()))


def _role(role: str) -> str:
    return "system" if role == "developer" else role


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
    reasons: list[str | None] = [None] * body.n
    text_parts: list[str] = []
    try:
        async for i, c in _replay(streams, firsts):
            if c.text:
                text_parts.append(c.text)
            if c.finish_reason is None:
                if c.text:
                    yield chunk([ChatChunkChoice(index=i, delta=DeltaMessage(content=c.text))])
                continue
            reasons[i] = c.finish_reason
            prompt_tokens = c.prompt_tokens
            completion_tokens += c.completion_tokens
            yield chunk([ChatChunkChoice(index=i, delta=DeltaMessage(content=c.text or None),
                                         finish_reason=c.finish_reason)])
        meter.done()
        if include_usage:
            yield chunk([], usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                                        total_tokens=prompt_tokens + completion_tokens))
        yield SSE_DONE
    finally:
        for s in streams:
            await s.aclose()  # type: ignore[attr-defined]
        meter.record(state, prep, prompt_tokens, completion_tokens, reasons, "".join(text_parts))

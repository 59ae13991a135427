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
from carafe.gateway.chat_output import ChoiceOutput
from carafe.gateway.constraints import request_constraint
from carafe.gateway.deps import get_principal, get_state
from carafe.gateway.pipeline import Prepared, prepare_chat
from carafe.gateway.protocol import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    DeltaMessage,
    Usage,
    new_id,
)
from carafe.gateway.ratelimit import charge_work
from carafe.gateway.sampling import sampling_params
from carafe.gateway.serving_common import (
    GenerationMeter,
    first_chunks,
    record_request,
    record_tool_calls,
    replay,
    response_headers,
    start_streams,
)
from carafe.gateway.state import AppState
from carafe.gateway.streams import SSE_DONE, sse
from carafe.gateway.tools import plan_tools, render_messages

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
    record_request(state, prep, "\n".join(m.content for m in messages), plan=plan, constraint=constraint)

    prompt = "\n".join(m.content for m in prep.messages)
    await charge_work(state.limits, principal, state.engine.count_tokens, [prompt], [p.max_tokens for p in params])
    meter = GenerationMeter(t0)
    streams = start_streams(
        state,
        prep,
        params,
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
    async for i, chunk in replay(streams, firsts):
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
        usage=Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        ),
        citations=prep.citations,
        adapter=prep.decision.served_model,
    )
    meter.record(state, prep, prompt_tokens, completion_tokens, reasons, "".join(o.raw for o in outputs))
    data = resp.model_dump(exclude_none=False)
    for choice in data["choices"]:
        if choice["message"]["tool_calls"] is None:
            del choice["message"]["tool_calls"]
    return JSONResponse(data, headers=response_headers(prep, meter.overhead_ms()))


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
    rid = new_id("chatcmpl")
    created = int(time.time())
    model = prep.decision.served_model

    def chunk(choices: list[ChatChunkChoice], usage: Usage | None = None, **extra: Any) -> str:
        c = ChatCompletionChunk(
            id=rid, created=created, model=model, choices=choices, usage=usage, adapter=model, **extra
        )
        data = c.model_dump(exclude_none=True)
        if include_usage and "usage" not in data:
            data["usage"] = None
        return sse(data)

    yield chunk(
        [ChatChunkChoice(index=i, delta=DeltaMessage(role="assistant", content="")) for i in range(body.n)],
        citations=prep.citations,
    )
    prompt_tokens = completion_tokens = 0
    try:
        async for i, c in replay(streams, firsts):
            out = outputs[i]
            deltas = out.step(c)
            lps = out.chunk_logprobs(len(c.logprobs or []))
            for k, delta in enumerate(deltas):
                last = c.finish_reason is not None and k == len(deltas) - 1
                yield chunk(
                    [
                        ChatChunkChoice(
                            index=i,
                            delta=delta,
                            logprobs=lps if k == 0 else None,
                            finish_reason=out.finish_reason if last else None,
                        )
                    ]
                )
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
            yield chunk(
                [],
                usage=Usage(
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                    total_tokens=prompt_tokens + completion_tokens,
                ),
            )
        yield SSE_DONE
    finally:
        for s in streams:
            await s.aclose()  # type: ignore[attr-defined]
        meter.record(
            state,
            prep,
            prompt_tokens,
            completion_tokens,
            [o.finish_reason for o in outputs],
            "".join(o.raw for o in outputs),
        )

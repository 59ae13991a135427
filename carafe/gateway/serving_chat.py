"""``POST /v1/chat/completions``: streaming and not, n choices, guards, citations,
structured outputs, tool calls and logprobs."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from opentelemetry import trace

from carafe.adapters.engine import GenerationChunk
from carafe.gateway.admission import check_generations, check_messages
from carafe.gateway.auth import Principal
from carafe.gateway.chat_output import ChoiceOutput
from carafe.gateway.constraints import request_constraint
from carafe.gateway.deps import get_principal, get_state
from carafe.gateway.generation import GenerationRun, check_prompt_fits, until_disconnected, within_run
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
    caller_content,
    record_request,
    record_tool_calls,
    replay,
    response_headers,
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
    server = state.config.server
    check_messages(body.messages, server)  # before any templating or tokenizing
    lease = state.slots.acquire(principal.key_id, check_generations(1, body.n, server))
    return await within_run(state, request, lease, lambda run: _complete(state, body, request, principal, run))


async def _complete(
    state: AppState, body: ChatCompletionRequest, request: Request, principal: Principal, run: GenerationRun
) -> Any:
    plan = plan_tools(body.tools, body.tool_choice)
    messages = render_messages(body.messages, plan)
    constraint = plan.constraint or request_constraint(body)
    params = [sampling_params(body, state.config.server, choice=i, constraint=constraint) for i in range(body.n)]
    prep = await prepare_chat(state, principal, body.model, messages)
    record_request(state, prep, caller_content(messages, prep), plan=plan, constraint=constraint)

    engine = state.engine
    await check_prompt_fits(state, lambda: engine.count_tokens(engine.chat_prompt(prep.messages)), param="messages")
    prompt = "\n".join(m.content for m in prep.messages)
    run.reservation = await charge_work(
        state.limits,
        principal,
        engine.count_tokens,
        [prompt],
        [p.max_tokens for p in params],
        model=prep.decision.served_model,
    )
    meter = run.meter
    streams = run.start(prep, params, lambda p: engine.chat(prep.messages, p, adapter=prep.decision.adapter))
    firsts = await run.first_chunks(request)
    outputs = [ChoiceOutput(plan, want_logprobs=bool(body.logprobs)) for _ in range(body.n)]
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return run.response(
            _stream(run, body, prep, streams, firsts, include_usage, outputs),
            headers=response_headers(prep, meter.overhead_ms(), extra={"Cache-Control": "no-cache"}),
        )
    usage = await until_disconnected(request, _collect(streams, firsts, outputs))
    meter.done()
    record_tool_calls(outputs)
    resp = ChatCompletionResponse(
        model=prep.decision.served_model,
        choices=[
            ChatChoice(index=i, message=o.message(), finish_reason=o.finish_reason, logprobs=o.choice_logprobs())
            for i, o in enumerate(outputs)
        ],
        usage=usage,
        citations=prep.citations,
        adapter=prep.decision.served_model,
    )
    run.record(usage.prompt_tokens, usage.completion_tokens, [o.finish_reason for o in outputs], _raw(outputs))
    data = resp.model_dump(exclude_none=False)
    for choice in data["choices"]:
        if choice["message"]["tool_calls"] is None:
            del choice["message"]["tool_calls"]
    return JSONResponse(data, headers=response_headers(prep, meter.overhead_ms()))


def _raw(outputs: list[ChoiceOutput]) -> str:
    return "".join(o.raw for o in outputs)


async def _collect(
    streams: list[AsyncIterator[GenerationChunk]], firsts: list[GenerationChunk], outputs: list[ChoiceOutput]
) -> Usage:
    prompt_tokens = completion_tokens = 0
    async for i, chunk in replay(streams, firsts):
        outputs[i].step(chunk)
        if chunk.finish_reason is not None:
            prompt_tokens = chunk.prompt_tokens
            completion_tokens += chunk.completion_tokens
    return Usage(
        prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, total_tokens=prompt_tokens + completion_tokens
    )


async def _stream(
    run: GenerationRun,
    body: ChatCompletionRequest,
    prep: Prepared,
    streams: list[AsyncIterator[GenerationChunk]],
    firsts: list[GenerationChunk],
    include_usage: bool,
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
        run.meter.done()
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
        run.record(prompt_tokens, completion_tokens, [o.finish_reason for o in outputs], _raw(outputs))

"""``POST /v1/completions``: raw-text continuation, streaming and not."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from carafe.adapters.engine import TokenLogprob
from carafe.gateway.admission import check_chars, check_generations
from carafe.gateway.auth import Principal
from carafe.gateway.constraints import request_constraint
from carafe.gateway.deps import get_principal, get_state
from carafe.gateway.generation import GenerationRun, check_prompt_fits, until_disconnected, within_run
from carafe.gateway.pipeline import Prepared, guard_input, resolve_route
from carafe.gateway.protocol import (
    CompletionChoice,
    CompletionChunk,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    Usage,
    new_id,
)
from carafe.gateway.ratelimit import charge_work
from carafe.gateway.sampling import logprobs_count, sampling_params
from carafe.gateway.serving_common import replay, response_headers
from carafe.gateway.state import AppState
from carafe.gateway.streams import SSE_DONE, sse

router = APIRouter()


@router.post("/v1/completions", response_model=CompletionResponse)
async def create_completion(
    body: CompletionRequest, request: Request, principal: Principal = Depends(get_principal)
) -> Any:
    state = get_state(request)
    server = state.config.server
    prompts = body.prompts()
    check_chars(prompts, param="prompt", server=server)  # before any tokenizing
    lease = state.slots.acquire(principal.key_id, check_generations(len(prompts), body.n, server))
    return await within_run(state, request, lease, lambda run: _complete(state, body, request, principal, run))


async def _complete(
    state: AppState, body: CompletionRequest, request: Request, principal: Principal, run: GenerationRun
) -> Any:
    prompts = body.prompts()
    decision = await resolve_route(state, body.model, principal, prompts[0])
    guarded_prompts = []
    for p in prompts:
        text, _ = await guard_input(state, p, decision, principal)
        guarded_prompts.append(text)
    engine = state.engine
    await check_prompt_fits(state, lambda: max(engine.count_tokens(p) for p in guarded_prompts), param="prompt")
    prep = Prepared(decision, [], principal, request_texts=tuple(prompts))
    constraint = request_constraint(body)
    jobs = [
        (p, sampling_params(body, state.config.server, choice=i, constraint=constraint))
        for p in guarded_prompts
        for i in range(body.n)
    ]
    want_logprobs = logprobs_count(body) is not None
    work = ([p for p, _ in jobs], [sp.max_tokens for _, sp in jobs])
    run.reservation = await charge_work(
        state.limits, principal, state.engine.count_tokens, *work, model=decision.served_model
    )
    meter = run.meter
    streams = []
    for prompt, params in jobs:
        streams += run.start(
            prep,
            [params],
            lambda sp, prompt=prompt: state.engine.complete(prompt, sp, adapter=decision.adapter),  # type: ignore[misc]
        )
    firsts = await run.first_chunks(request)
    n_choices = len(jobs)
    echo = [jobs[i][0] if body.echo else "" for i in range(n_choices)]
    offsets = [len(e) for e in echo]

    def logprobs(i: int, items: list[TokenLogprob] | None) -> CompletionLogprobs | None:
        if not want_logprobs:
            return None
        lp, offsets[i] = completion_logprobs(items or [], offsets[i])
        return lp

    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        async def gen() -> AsyncIterator[str]:
            rid = new_id("cmpl")
            created = int(time.time())
            usage_p = [0] * len(prompts)
            usage_c = 0
            reasons: list[str | None] = [None] * n_choices
            sent_echo = [False] * n_choices

            def chunk(choices: list[CompletionChoice], usage: Usage | None = None) -> str:
                data = CompletionChunk(
                    id=rid, created=created, model=decision.served_model, choices=choices, usage=usage
                ).model_dump()
                if not include_usage:
                    del data["usage"]
                return sse(data)

            try:
                async for i, c in replay(streams, firsts):
                    text = c.text
                    if echo[i] and not sent_echo[i]:
                        text, sent_echo[i] = echo[i] + text, True
                    if c.finish_reason is not None:
                        reasons[i] = c.finish_reason
                        usage_p[i // body.n] = c.prompt_tokens
                        usage_c += c.completion_tokens
                    if not text and c.finish_reason is None and not c.logprobs:
                        continue
                    yield chunk(
                        [
                            CompletionChoice(
                                index=i, text=text, finish_reason=c.finish_reason, logprobs=logprobs(i, c.logprobs)
                            )
                        ]
                    )
                meter.done()
                if include_usage:
                    pt = sum(usage_p)
                    yield chunk([], Usage(prompt_tokens=pt, completion_tokens=usage_c, total_tokens=pt + usage_c))
                yield SSE_DONE
            finally:
                run.record(sum(usage_p), usage_c, reasons, "")

        return run.response(
            gen(), headers=response_headers(prep, meter.overhead_ms(), extra={"Cache-Control": "no-cache"})
        )

    texts = list(echo)
    reasons: list[str | None] = [None] * n_choices
    usage_p = [0] * len(prompts)
    usage_c = 0
    token_lps: list[list[TokenLogprob]] = [[] for _ in range(n_choices)]

    async def collect() -> None:
        nonlocal usage_c
        async for i, c in replay(streams, firsts):
            texts[i] += c.text
            token_lps[i] += c.logprobs or []
            if c.finish_reason is not None:
                reasons[i] = c.finish_reason
                usage_p[i // body.n] = c.prompt_tokens
                usage_c += c.completion_tokens

    await until_disconnected(request, collect())
    meter.done()
    pt = sum(usage_p)
    resp = CompletionResponse(
        model=decision.served_model,
        choices=[
            CompletionChoice(index=i, text=texts[i], finish_reason=reasons[i], logprobs=logprobs(i, token_lps[i]))
            for i in range(n_choices)
        ],
        usage=Usage(prompt_tokens=pt, completion_tokens=usage_c, total_tokens=pt + usage_c),
        adapter=decision.served_model,
    )
    run.record(pt, usage_c, reasons, "".join(texts))
    return JSONResponse(resp.model_dump(), headers=response_headers(prep, meter.overhead_ms()))


def completion_logprobs(items: list[TokenLogprob], offset: int) -> tuple[CompletionLogprobs, int]:
    """The legacy completions logprobs shape, and the text offset after these tokens."""
    out = CompletionLogprobs()
    for t in items:
        out.tokens.append(t.token)
        out.token_logprobs.append(t.logprob)
        out.top_logprobs.append({a.token: a.logprob for a in t.top})
        out.text_offset.append(offset)
        offset += len(t.token)
    return out, offset

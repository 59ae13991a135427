"""``POST /v1/responses``: OpenAI's Responses API over the chat path.

A request becomes the equivalent chat request (instructions, the stored
conversation of ``previous_response_id``, input items), so it gets the same auth,
routing, retrieval with citations, guards, constrained decoding, tools and
traces. Streaming sends the typed events (``response.created`` ...
``response.completed``) that OpenAI's SDK reads.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from opentelemetry import trace

from carafe.adapters.engine import GenerationChunk
from carafe.gateway.admission import check_chars, check_messages
from carafe.gateway.auth import Principal
from carafe.gateway.chat_output import ChoiceOutput
from carafe.gateway.constraints import response_format_constraint
from carafe.gateway.deps import get_principal, get_state
from carafe.gateway.generation import GenerationRun, check_prompt_fits, until_disconnected, within_run
from carafe.gateway.pipeline import prepare_chat
from carafe.gateway.protocol import ChatMessageIn
from carafe.gateway.protocol_responses import (
    OutputFunctionCall,
    OutputMessage,
    OutputText,
    ResponseObject,
    ResponsesRequest,
    ResponseUsage,
)
from carafe.gateway.ratelimit import charge_work
from carafe.gateway.response_store import ResponseStore
from carafe.gateway.sampling import sampling_params
from carafe.gateway.serving_common import (
    caller_content,
    record_request,
    record_tool_calls,
    replay,
    response_headers,
)
from carafe.gateway.state import AppState
from carafe.gateway.telemetry import attributes as attr
from carafe.gateway.tools import plan_tools, render_messages

router = APIRouter()
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


@router.post("/v1/responses", response_model=None)
async def create_response(
    body: ResponsesRequest, request: Request, principal: Principal = Depends(get_principal)
) -> Any:
    state = get_state(request)
    server = state.config.server
    if isinstance(body.input, list):
        check_messages(body.input, server, param="input")
    check_chars([body.input, body.instructions, body.tools], param="input", server=server)  # before templating
    lease = state.slots.acquire(principal.key_id, 1)
    return await within_run(state, request, lease, lambda run: _respond(state, body, request, principal, run))


async def _respond(
    state: AppState, body: ResponsesRequest, request: Request, principal: Principal, run: GenerationRun
) -> Any:
    store = state.responses
    history = await store.conversation(body.previous_response_id, principal.owner) if body.previous_response_id else []
    chat = body.to_chat(history)
    plan = plan_tools(chat.tools, chat.tool_choice)
    constraint = plan.constraint or response_format_constraint(body.text.format if body.text else None, "text.format")
    params = sampling_params(chat, state.config.server, constraint=constraint)
    messages = render_messages(chat.messages, plan)
    prep = await prepare_chat(state, principal, chat.model, messages)
    # the caller's own content only: prep.messages also holds the retrieved passages, which are never recorded
    record_request(state, prep, caller_content(messages, prep), plan=plan, constraint=constraint, api="responses")
    if body.previous_response_id:
        trace.get_current_span().set_attribute(attr.CARAFE_PREVIOUS_RESPONSE_ID, body.previous_response_id)

    engine = state.engine
    await check_prompt_fits(state, lambda: engine.count_tokens(engine.chat_prompt(prep.messages)), param="input")
    prompt = "\n".join(m.content for m in prep.messages)
    run.reservation = await charge_work(
        state.limits, principal, engine.count_tokens, [prompt], [params.max_tokens], model=prep.decision.served_model
    )
    meter = run.meter
    streams = run.start(prep, [params], lambda p: engine.chat(prep.messages, p, adapter=prep.decision.adapter))
    firsts = await run.first_chunks(request)
    out = ChoiceOutput(plan, want_logprobs=body.top_logprobs is not None)
    resp = ResponseObject(
        model=prep.decision.served_model,
        status="in_progress",
        instructions=body.instructions,
        max_output_tokens=body.max_output_tokens,
        previous_response_id=body.previous_response_id,
        temperature=body.temperature,
        top_p=body.top_p,
        tools=[t.model_dump(exclude_none=True) for t in body.tools or []],
        tool_choice=body.tool_choice or "auto",
        parallel_tool_calls=bool(body.parallel_tool_calls),
        text={"format": (body.text.format if body.text and body.text.format else {"type": "text"})},
        metadata=body.metadata or {},
        citations=prep.citations,
        adapter=prep.decision.served_model,
    )
    conversation = [m for m in chat.messages if not (body.instructions and m is chat.messages[0])]
    finish = _Finisher(store, resp, out, conversation, principal, run, body.store)
    if body.stream:
        return run.response(
            _events(streams, firsts, finish),
            headers=response_headers(prep, meter.overhead_ms(), extra={"Cache-Control": "no-cache"}),
        )

    async def collect() -> None:
        async for _, chunk in replay(streams, firsts):
            out.step(chunk)
            finish.count(chunk)

    await until_disconnected(request, collect())
    await finish.done()
    return JSONResponse(resp.model_dump(mode="json"), headers=response_headers(prep, meter.overhead_ms()))


class _Finisher:
    """Completes the response object once the output ended: items, status, usage,
    the stored conversation and the trace."""

    def __init__(
        self,
        store: ResponseStore,
        resp: ResponseObject,
        out: ChoiceOutput,
        conversation: list[ChatMessageIn],
        principal: Principal,
        run: GenerationRun,
        keep: bool,
    ) -> None:
        self.store, self.resp, self.out = store, resp, out
        self.conversation, self.principal, self.run, self.keep = conversation, principal, run, keep
        self.prompt_tokens = self.completion_tokens = 0
        self.message = OutputMessage(status="in_progress")

    def count(self, chunk: GenerationChunk) -> None:
        if chunk.finish_reason is not None:
            self.prompt_tokens, self.completion_tokens = chunk.prompt_tokens, chunk.completion_tokens

    def text_part(self) -> OutputText:
        lps = [t.model_dump() for t in self.out.logprobs] if self.out.want_logprobs else None
        return OutputText(text=self.out.content, logprobs=lps)

    def calls(self) -> list[OutputFunctionCall]:
        return [
            OutputFunctionCall(call_id=c.id, name=c.function.name, arguments=c.function.arguments)
            for c in self.out.tool_calls
        ]

    async def done(self) -> ResponseObject:
        self.run.meter.done()
        out, resp = self.out, self.resp
        reason = out.finish_reason or "stop"
        incomplete = _INCOMPLETE.get(reason)
        resp.status = "incomplete" if incomplete else "completed"
        resp.incomplete_details = {"reason": incomplete} if incomplete else None
        self.message.status = "incomplete" if incomplete else "completed"
        self.message.content = [self.text_part()]
        resp.output = ([self.message] if out.content or not out.tool_calls else []) + self.calls()
        resp.usage = ResponseUsage(
            input_tokens=self.prompt_tokens,
            output_tokens=self.completion_tokens,
            total_tokens=self.prompt_tokens + self.completion_tokens,
        )
        record_tool_calls([out])
        if self.keep:
            reply = ChatMessageIn(role="assistant", content=out.content or None, tool_calls=out.tool_calls or None)
            await self.store.put(resp.id, self.principal.owner, [*self.conversation, reply])
        self.run.record(self.prompt_tokens, self.completion_tokens, [reason], out.raw)
        return resp


def _event(seq: list[int], kind: str, **fields: Any) -> str:
    seq[0] += 1
    data = {"type": kind, "sequence_number": seq[0], **fields}
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def _events(
    streams: list[AsyncIterator[GenerationChunk]], firsts: list[GenerationChunk], finish: _Finisher
) -> AsyncIterator[str]:
    seq = [-1]
    out, resp, msg = finish.out, finish.resp, finish.message
    yield _event(seq, "response.created", response=resp.model_dump(mode="json"))
    yield _event(seq, "response.in_progress", response=resp.model_dump(mode="json"))
    ids = {"item_id": msg.id, "output_index": 0, "content_index": 0}
    opened = False
    try:
        async for _, chunk in replay(streams, firsts):
            before = len(out.content)
            out.step(chunk)
            finish.count(chunk)
            delta = out.content[before:]
            if delta and not opened:
                opened = True
                yield _event(seq, "response.output_item.added", output_index=0, item=msg.model_dump(mode="json"))
                yield _event(
                    seq,
                    "response.content_part.added",
                    item_id=msg.id,
                    output_index=0,
                    content_index=0,
                    part=OutputText(text="").model_dump(mode="json"),
                )
            if delta:
                lps = [t.model_dump() for t in out.logprobs[len(out.logprobs) - len(chunk.logprobs or []) :]]
                yield _event(
                    seq, "response.output_text.delta", **ids, delta=delta, logprobs=lps if out.want_logprobs else []
                )
        final = await finish.done()
        if opened:
            part = finish.text_part().model_dump(mode="json")
            yield _event(seq, "response.output_text.done", **ids, text=out.content, logprobs=part["logprobs"] or [])
            yield _event(seq, "response.content_part.done", item_id=msg.id, output_index=0, content_index=0, part=part)
            yield _event(seq, "response.output_item.done", output_index=0, item=msg.model_dump(mode="json"))
        first_call = 1 if opened else 0
        for k, call in enumerate(finish.calls()):
            index = first_call + k
            pending = call.model_copy(update={"status": "in_progress", "arguments": ""})
            yield _event(seq, "response.output_item.added", output_index=index, item=pending.model_dump(mode="json"))
            yield _event(
                seq, "response.function_call_arguments.delta", item_id=call.id, output_index=index, delta=call.arguments
            )
            yield _event(
                seq,
                "response.function_call_arguments.done",
                item_id=call.id,
                output_index=index,
                arguments=call.arguments,
                name=call.name,
            )
            yield _event(seq, "response.output_item.done", output_index=index, item=call.model_dump(mode="json"))
        kind = "response.completed" if final.status == "completed" else "response.incomplete"
        yield _event(seq, kind, response=final.model_dump(mode="json"))
    finally:
        finish.run.record(finish.prompt_tokens, finish.completion_tokens, [out.finish_reason], out.raw)

"""One request's engine work, from its first stream to its last: :class:`GenerationRun`.

Why: a client that leaves must not leave generations running for nobody, and
tokens it made the engine produce must still be metered (issue 29 M6 / L9, issue
25). Three ways to leave, one answer each:

- non-streaming, or a stream waiting for its first token: the handler races the
  work against ``http.disconnect`` (:func:`until_disconnected`) and cancels it;
- streaming after the first byte: :class:`EngineStreamResponse` listens for the
  disconnect beside the body and cancels the body at once, not at the next send;
- a stream whose body never started (the client left as the headers went out):
  the response closes the run itself, which closes every engine stream.

Every engine stream is *tallied* before its output guard, so the tokens counted
are the ones the engine produced, released to the client or not. The run holds
the request's generation-slot :class:`~carafe.gateway.admission.Lease` and gives
it back when it closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import StreamingResponse
from opentelemetry import trace
from starlette.types import Receive, Scope, Send

from carafe.adapters.engine import GenerationChunk, SamplingParams
from carafe.errors import TooLarge
from carafe.gateway.admission import Lease
from carafe.gateway.errors import ClientGone
from carafe.gateway.pipeline import Prepared
from carafe.gateway.ratelimit import Reservation
from carafe.gateway.serving_common import GenerationMeter, caller_texts
from carafe.gateway.state import AppState
from carafe.gateway.streams import guarded

T = TypeVar("T")


@dataclass
class Tally:
    """Tokens one engine stream produced so far (counts on each chunk are cumulative)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    def see(self, chunk: GenerationChunk) -> None:
        self.prompt_tokens = max(self.prompt_tokens, chunk.prompt_tokens)
        if chunk.completion_tokens:
            self.completion_tokens = max(self.completion_tokens, chunk.completion_tokens)
        else:  # a backend that counts only at the end (vLLM's stream): count the ids seen
            self.completion_tokens += len(chunk.token_ids)


async def tallied(chunks: AsyncIterator[GenerationChunk], tally: Tally) -> AsyncIterator[GenerationChunk]:
    try:
        async for chunk in chunks:
            tally.see(chunk)
            yield chunk
    finally:
        with contextlib.suppress(Exception):
            await chunks.aclose()  # type: ignore[attr-defined]


async def check_prompt_fits(state: AppState, count: Callable[[], int], *, param: str) -> None:
    """Template and tokenize the prompt off the event loop (a 2 MB prompt took ~3 s of CPU) and refuse
    one the model cannot hold (413), so the engine only ever tokenizes prompts that fit. Skipped for
    vLLM, which tokenizes on its side."""
    if state.config.adapters.engine.backend == "vllm":
        return
    tokens = await asyncio.to_thread(count)
    limit = state.engine.max_model_len
    if tokens >= limit:
        raise TooLarge(
            f"the prompt has {tokens} tokens; the model holds {limit} tokens (prompt + max_tokens): shorten {param}",
            param=param,
            code="context_length_exceeded",
        )


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def until_disconnected(request: Request, work: Awaitable[T]) -> T:
    """``work``'s result, or :class:`ClientGone` (``work`` cancelled) if the client leaves first."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnected(request.receive))
    gone = False
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done() and watch.exception() is not None:  # no disconnect signal here: just wait
            await asyncio.wait({task})
        gone = not task.done()
    finally:
        if not task.done():
            task.cancel()
        watch.cancel()
        await asyncio.gather(task, watch, return_exceptions=True)
    if gone:  # (a cancelled gather() ends with a CancelledError, not as cancelled: hence the flag)
        raise ClientGone("the client closed the connection")
    return task.result()


async def within_run(
    state: AppState, request: Request, lease: Lease, work: Callable[[GenerationRun], Awaitable[T]]
) -> T:
    """Run one request's ``work`` on a new :class:`GenerationRun` holding ``lease``, and close the
    run afterwards unless a streaming response took it over (it closes the run when it ends)."""
    run = GenerationRun(state, GenerationMeter(request.scope.get("carafe.t0", time.perf_counter())), lease)
    try:
        return await work(run)
    finally:
        if not run.handed_over:
            await run.close()


class GenerationRun:
    """The engine streams of one request, their tallies, its lease and its meter; closed once."""

    def __init__(self, state: AppState, meter: GenerationMeter, lease: Lease) -> None:
        self.state, self.meter, self.lease = state, meter, lease
        self.prep: Prepared | None = None
        self.streams: list[AsyncIterator[GenerationChunk]] = []
        self.tallies: list[Tally] = []
        self.handed_over = False  # a streaming response closes the run
        self.reservation: Reservation | None = None  # what the limits charged up front
        self._recorded = self._closed = False

    def start(
        self, prep: Prepared, params: list[SamplingParams], call: Callable[[SamplingParams], Any]
    ) -> list[AsyncIterator[GenerationChunk]]:
        """One engine stream per choice, tallied, then behind its own output guard."""
        self.prep = prep
        out = []
        for p in params:
            guard = None
            if self.state.guards is not None:
                guard = self.state.guards.output_stream(
                    policy=prep.decision.guard_policy,
                    principal=prep.principal,
                    passages=prep.passages,
                    caller_texts=caller_texts(prep, p),
                )
                prep.output_guards.append(guard)
            tally = Tally()
            self.tallies.append(tally)
            out.append(guarded(tallied(call(p), tally), guard))
        self.streams += out
        return out

    async def first_chunks(self, request: Request) -> list[GenerationChunk]:
        """Every choice's first chunk (errors become an HTTP error before any byte is sent);
        cancelled if the client leaves while the engine queues or prefills."""
        self.meter.started()
        with trace.get_tracer("carafe.gateway").start_as_current_span("carafe.generate.first_token"):
            firsts = await until_disconnected(request, asyncio.gather(*(anext(s) for s in self.streams)))
        self.meter.first()
        return list(firsts)

    def record(self, prompt_tokens: int, completion_tokens: int, reasons: list[str | None], text: str) -> None:
        """Meter the run once: what the handler counted, or what the engine produced if that is more."""
        if self._recorded or self.prep is None:
            return
        self._recorded = True
        produced = sum(t.completion_tokens for t in self.tallies)
        prompt = max([prompt_tokens, *(t.prompt_tokens for t in self.tallies)])
        self.meter.record(self.state, self.prep, prompt, max(completion_tokens, produced), reasons, text)

    async def close(self) -> None:
        """Close every engine stream (the engine frees their rows), give the slots back, meter,
        and refund the unused part of the request's token/cost reservation."""
        if self._closed:
            return
        self._closed = True
        try:
            for s in self.streams:
                with contextlib.suppress(Exception):
                    await s.aclose()  # type: ignore[attr-defined]
        finally:
            self.lease.release()
            self.meter.done()
            self.record(0, 0, [None] * len(self.streams), "")
            if self.reservation is not None:  # give back what was reserved but not generated
                await self.state.limits.settle(self.reservation, sum(t.completion_tokens for t in self.tallies))

    def response(self, body: AsyncIterator[str], headers: dict[str, str]) -> StreamingResponse:
        """The SSE response; from now on it closes the run."""
        self.handed_over = True
        return EngineStreamResponse(body, self, media_type="text/event-stream", headers=headers)


class EngineStreamResponse(StreamingResponse):
    """A streaming response that stops its body as soon as the client disconnects and
    always closes its :class:`GenerationRun`, even when the body never started."""

    def __init__(self, content: AsyncIterator[str], run: GenerationRun, **kw: Any) -> None:
        super().__init__(content, **kw)
        self.run = run

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            body = asyncio.ensure_future(self.stream_response(send))
            watch = asyncio.ensure_future(_disconnected(receive))
            await asyncio.wait({body, watch}, return_when=asyncio.FIRST_COMPLETED)
            for task in (body, watch):
                task.cancel()
            await asyncio.gather(body, watch, return_exceptions=True)
            if not body.cancelled() and isinstance(body.exception(), Exception):
                error = body.exception()
                if not isinstance(error, OSError):  # a send to a closed socket is a disconnect, not a fault
                    raise error  # type: ignore[misc]
        finally:
            with contextlib.suppress(Exception):
                await self.body_iterator.aclose()  # type: ignore[attr-defined]
            await self.run.close()

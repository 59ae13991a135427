"""Helpers for engine streams: output guarding, merging the ``n`` choices, SSE."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel

from carafe.adapters.engine import GenerationChunk

CONTENT_FILTER = "content_filter"


async def guarded(chunks: AsyncIterator[GenerationChunk], guard: Any | None) -> AsyncIterator[GenerationChunk]:
    """Pass engine chunks through an output guard stream.

    Text is released only after the guard passed it (sentence-sized pieces). On a
    block the upstream generation is closed and a final chunk with
    ``finish_reason="content_filter"`` ends the stream; nothing after the block
    is ever released.
    """
    if guard is None:
        async for chunk in chunks:
            yield chunk
        return
    held: list[Any] = []  # logprobs of tokens whose text the guard still holds
    try:
        async for chunk in chunks:
            held += chunk.logprobs or []
            release = await guard.feed(chunk.text) if chunk.text else None
            if release is not None and release.blocked is not None:
                yield GenerationChunk(
                    release.text,
                    finish_reason=CONTENT_FILTER,  # type: ignore[arg-type]
                    prompt_tokens=chunk.prompt_tokens,
                    completion_tokens=chunk.completion_tokens,
                )
                return
            text = release.text if release is not None else ""
            if chunk.finish_reason is None:
                if text:
                    yield GenerationChunk(text, logprobs=held or None)
                    held = []
                continue
            final = await guard.finish()
            reason = CONTENT_FILTER if final.blocked is not None else chunk.finish_reason
            tail = final.text
            yield GenerationChunk(
                text + tail,
                finish_reason=reason,  # type: ignore[arg-type]
                prompt_tokens=chunk.prompt_tokens,
                completion_tokens=chunk.completion_tokens,
                logprobs=held if final.blocked is None and held else None,
            )
            return
    finally:
        with contextlib.suppress(Exception):
            await chunks.aclose()  # type: ignore[attr-defined]


async def merge(streams: list[AsyncIterator[GenerationChunk]]) -> AsyncIterator[tuple[int, GenerationChunk]]:
    """Interleave several streams as ``(index, chunk)`` in arrival order.

    Closing the merged iterator (client gone) cancels and closes every stream,
    so their engine slots are freed at once.
    """
    if len(streams) == 1:
        try:
            async for chunk in streams[0]:
                yield 0, chunk
        finally:
            with contextlib.suppress(Exception):
                await streams[0].aclose()  # type: ignore[attr-defined]
        return
    queue: asyncio.Queue[tuple[int, GenerationChunk | BaseException | None]] = asyncio.Queue()

    async def pump(i: int, it: AsyncIterator[GenerationChunk]) -> None:
        try:
            async for chunk in it:
                await queue.put((i, chunk))
            await queue.put((i, None))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            await queue.put((i, exc))
        finally:
            with contextlib.suppress(Exception):
                await it.aclose()  # type: ignore[attr-defined]

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    remaining = len(tasks)
    try:
        while remaining:
            i, item = await queue.get()
            if item is None:
                remaining -= 1
                continue
            if isinstance(item, BaseException):
                raise item
            yield i, item
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def sse(payload: BaseModel | dict[str, Any]) -> str:
    if isinstance(payload, BaseModel):
        data = payload.model_dump_json(exclude_none=False)
    else:
        data = json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n"


SSE_DONE = "data: [DONE]\n\n"

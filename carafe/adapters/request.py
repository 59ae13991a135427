"""One generation as the worker sees it: its prompt, sampling state, text stream, and where its chunks go.

A request moves one token at a time (:meth:`Request.advance`): the token goes to its text stream, stop
tokens, stop strings and length limits end it, and the text is handed back to the event loop. A request
ends once, with a last chunk or an error (:meth:`Request.fail`), from whichever thread ends it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from carafe.adapters.engine import FinishReason, GenerationChunk, SamplingParams
from carafe.adapters.sampling import RowSampler
from carafe.adapters.textstream import TextStream
from carafe.errors import CarafeError

BASE = "__base__"  # PEFT's name for "no adapter" in a mixed batch


@dataclass(eq=False)
class Request:
    """One generation: its prompt, sampling state, text stream and where chunks go."""

    prompt_ids: list[int]
    params: SamplingParams
    sampler: RowSampler
    stream: TextStream
    emit: Callable[[GenerationChunk | BaseException], None]  # thread-safe hand-back
    adapter: str | None = None  # PEFT adapter name inside the model; None = base
    max_len: int = 2048
    cancelled: bool = False  # set from the event loop when the client goes away
    done: bool = False
    last_token: int = 0
    pending_ids: list[int] = field(default_factory=list)
    kv: Any = None  # the request's own KV (a native row, :class:`~carafe.adapters.kv_rows.RowKV`)
    solo: bool = False  # prefill it alone: a batch it was part of failed, and the fault is looked for

    def fail(self, exc: BaseException) -> None:
        """End the request with ``exc`` (from any thread; a finished or abandoned one is left alone)."""
        if not self.cancelled and not self.done:
            self.done = True
            self.emit(exc)

    def advance(self, token: int | CarafeError) -> bool:
        """Take the next token (or fail with why none could be drawn); True when this ended the request."""
        if self.cancelled or self.done:
            return False
        if not isinstance(token, int):
            self.fail(token)
            return False
        self.sampler.output_ids.append(token)
        self.pending_ids.append(token)
        self.last_token = token
        n = len(self.sampler.output_ids)
        finish: FinishReason | None = None
        if self.sampler.is_stop_token(token):
            finish, text = "stop", self.stream.finish()
        else:
            text = self.stream.push([token])
            if self.stream.stopped:
                finish = "stop"
            elif n >= self.params.max_tokens or len(self.prompt_ids) + n >= self.max_len:
                finish = "length"
                text += self.stream.finish()
        if not text and finish is None:
            return False
        chunk = GenerationChunk(text, self.pending_ids, finish, len(self.prompt_ids), n)
        self.pending_ids = []
        if finish is not None:
            self.done = True
        self.emit(chunk)
        return finish is not None

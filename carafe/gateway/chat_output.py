"""One chat choice's output as it streams: content, tool calls and logprobs.

The same :class:`ChoiceOutput` serves streaming (each :meth:`step` returns the
deltas to send) and non-streaming (the accumulated message at the end), so both
report the same content, calls and finish reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from carafe.adapters.engine import GenerationChunk, TokenLogprob
from carafe.gateway.protocol import (
    ChatMessageOut,
    ChoiceLogprobs,
    DeltaFunction,
    DeltaMessage,
    DeltaToolCall,
    TokenLogprobOut,
    ToolCall,
    TopLogprob,
)
from carafe.gateway.tools import ToolCallParser, ToolPlan, call_id, parse_constrained


def logprobs_out(items: list[TokenLogprob] | None) -> list[TokenLogprobOut]:
    return [
        TokenLogprobOut(
            token=t.token,
            logprob=t.logprob,
            bytes=t.bytes,
            top_logprobs=[TopLogprob(token=a.token, logprob=a.logprob, bytes=a.bytes) for a in t.top],
        )
        for t in items or []
    ]


def _call_deltas(calls: list[ToolCall], start: int = 0) -> DeltaMessage:
    return DeltaMessage(
        tool_calls=[
            DeltaToolCall(
                index=start + k,
                id=c.id,
                type="function",
                function=DeltaFunction(name=c.function.name, arguments=c.function.arguments),
            )
            for k, c in enumerate(calls)
        ]
    )


@dataclass
class ChoiceOutput:
    """Turns one choice's engine chunks into OpenAI deltas and a final message."""

    plan: ToolPlan
    want_logprobs: bool = False
    content: str = ""
    raw: str = ""  # everything the engine (after guards) produced
    tool_calls: list[ToolCall] = field(default_factory=list)
    logprobs: list[TokenLogprobOut] = field(default_factory=list)
    finish_reason: str | None = None
    _parser: ToolCallParser | None = None
    _named_id: str | None = None

    def __post_init__(self) -> None:
        if self.plan.mode == "auto":
            self._parser = ToolCallParser(self.plan)

    def step(self, chunk: GenerationChunk) -> list[DeltaMessage]:
        """The deltas to stream for ``chunk`` (the last one carries no finish reason;
        read :attr:`finish_reason` after the final chunk)."""
        self.raw += chunk.text
        lps = logprobs_out(chunk.logprobs) if self.want_logprobs else []
        self.logprobs += lps
        deltas: list[DeltaMessage] = []
        mode = self.plan.mode
        if mode in ("none", "auto"):
            text = self._parser.feed(chunk.text) if self._parser else chunk.text
            if text:
                deltas.append(self._content(text))
        elif mode == "named" and chunk.text:
            if self._named_id is None:
                self._named_id = call_id()
                deltas.append(
                    DeltaMessage(
                        tool_calls=[
                            DeltaToolCall(
                                index=0,
                                id=self._named_id,
                                type="function",
                                function=DeltaFunction(name=self.plan.function, arguments=""),
                            )
                        ]
                    )
                )
            deltas.append(
                DeltaMessage(tool_calls=[DeltaToolCall(index=0, function=DeltaFunction(arguments=chunk.text))])
            )
        if chunk.finish_reason is not None:
            deltas += self._finish(chunk.finish_reason)
        return deltas

    def _content(self, text: str) -> DeltaMessage:
        self.content += text
        return DeltaMessage(content=text)

    def _finish(self, reason: str) -> list[DeltaMessage]:
        deltas: list[DeltaMessage] = []
        mode = self.plan.mode
        if mode == "auto":
            assert self._parser is not None
            held, self.tool_calls = self._parser.finish()
            if held:
                deltas.append(self._content(held))
            if self.tool_calls:
                deltas.append(_call_deltas(self.tool_calls))
        elif mode == "required" and reason != "content_filter":
            self.tool_calls = parse_constrained(self.plan, self.raw)
            if self.tool_calls:
                deltas.append(_call_deltas(self.tool_calls))
        elif mode == "named" and reason != "content_filter":
            self.tool_calls = parse_constrained(self.plan, self.raw)
            if self._named_id is not None:
                self.tool_calls[0].id = self._named_id
        self.finish_reason = "tool_calls" if self.tool_calls and reason == "stop" else reason
        return deltas

    def chunk_logprobs(self, count: int) -> ChoiceLogprobs | None:
        """Logprobs of the last ``count`` tokens, for a streamed chunk."""
        if not self.want_logprobs or not count:
            return None
        return ChoiceLogprobs(content=self.logprobs[-count:])

    def message(self) -> ChatMessageOut:
        return ChatMessageOut(
            content=self.content if not self.tool_calls or self.content else None, tool_calls=self.tool_calls or None
        )

    def choice_logprobs(self) -> ChoiceLogprobs | None:
        return ChoiceLogprobs(content=self.logprobs) if self.want_logprobs else None

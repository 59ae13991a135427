"""Pydantic models of OpenAI's Responses API (``POST /v1/responses``).

Like :mod:`carafe.gateway.protocol`, requests forbid unknown fields; what a
request says is turned into the chat request the rest of the gateway serves
(:meth:`ResponsesRequest.to_chat`), so both endpoints share routing, retrieval,
guards, constrained decoding and traces.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from carafe.errors import InvalidInput
from carafe.gateway.protocol import (
    ChatCompletionRequest,
    ChatMessageIn,
    Citation,
    OpenAIModel,
    ToolCall,
    UnsupportedParameter,
)


def response_id() -> str:
    return f"resp_{uuid.uuid4().hex}"


def item_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class InputText(OpenAIModel):
    type: Literal["input_text", "output_text", "text"]
    text: str
    annotations: list[Any] | None = None
    logprobs: list[Any] | None = None


class MessageItem(OpenAIModel):
    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: str | list[InputText]
    id: str | None = None
    status: str | None = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class FunctionCallItem(OpenAIModel):
    type: Literal["function_call"]
    call_id: str = Field(..., min_length=1)
    name: str = Field(..., min_length=1)
    arguments: str = "{}"
    id: str | None = None
    status: str | None = None


class FunctionCallOutputItem(OpenAIModel):
    type: Literal["function_call_output"]
    call_id: str = Field(..., min_length=1)
    output: str
    id: str | None = None
    status: str | None = None


InputItem = MessageItem | FunctionCallItem | FunctionCallOutputItem


class FunctionTool(OpenAIModel):
    type: Literal["function"]
    name: str = Field(..., min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class TextConfig(OpenAIModel):
    format: dict[str, Any] | None = None
    verbosity: str | None = None


class ResponsesRequest(OpenAIModel):
    model: str = Field(..., min_length=1, max_length=512)
    input: str | list[InputItem] = Field(...)
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    stream: bool = False
    previous_response_id: str | None = None
    store: bool = True
    tools: list[FunctionTool] | None = Field(None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    metadata: dict[str, str] | None = None
    user: str | None = Field(None, max_length=256)
    seed: int | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    truncation: Literal["disabled"] | None = None

    @model_validator(mode="after")
    def _input(self) -> ResponsesRequest:
        if isinstance(self.input, list) and not self.input:
            raise UnsupportedParameter("input", "input must not be an empty list")
        if isinstance(self.tool_choice, dict) and (
            self.tool_choice.get("type") != "function" or not self.tool_choice.get("name")
        ):
            raise UnsupportedParameter(
                "tool_choice", "tool_choice must be none, auto, required or {'type': 'function', 'name': ...}"
            )
        return self

    def items(self) -> list[ChatMessageIn]:
        """This request's input as chat messages (instructions first)."""
        if isinstance(self.input, str):
            return [ChatMessageIn(role="user", content=self.input)]
        out: list[ChatMessageIn] = []
        for item in self.input:
            if isinstance(item, MessageItem):
                out.append(ChatMessageIn(role=item.role, content=item.text()))
            elif isinstance(item, FunctionCallItem):
                call = ToolCall(id=item.call_id, function={"name": item.name, "arguments": item.arguments})
                if out and out[-1].role == "assistant" and out[-1].tool_calls is not None:
                    out[-1].tool_calls.append(call)
                else:
                    out.append(ChatMessageIn(role="assistant", content=None, tool_calls=[call]))
            else:
                out.append(ChatMessageIn(role="tool", content=item.output, tool_call_id=item.call_id))
        return out

    def to_chat(self, history: list[ChatMessageIn]) -> ChatCompletionRequest:
        """The equivalent chat request, after the ``previous_response_id`` conversation."""
        messages = [ChatMessageIn(role="system", content=self.instructions)] if self.instructions else []
        messages += [*history, *self.items()]
        tool_choice: Any = self.tool_choice
        if isinstance(tool_choice, dict):
            tool_choice = {"type": "function", "function": {"name": tool_choice["name"]}}
        tools = [
            {"type": "function", "function": t.model_dump(exclude={"type"}, exclude_none=True)}
            for t in self.tools or []
        ]
        fmt = (self.text.format if self.text else None) or None
        if fmt and fmt.get("type") == "json_schema":
            fmt = {"type": "json_schema", "json_schema": {k: v for k, v in fmt.items() if k != "type"}}
        try:
            return ChatCompletionRequest(
                model=self.model,
                messages=messages,
                max_tokens=self.max_output_tokens,
                temperature=self.temperature,
                top_p=self.top_p,
                seed=self.seed,
                tools=tools or None,
                tool_choice=tool_choice,
                response_format=fmt,
                logprobs=True if self.top_logprobs is not None else None,
                top_logprobs=self.top_logprobs,
                user=self.user,
            )
        except ValidationError as exc:  # named by the Responses field it came from
            err = exc.errors()[0]
            cause = (err.get("ctx") or {}).get("error")
            if isinstance(cause, UnsupportedParameter):
                raise InvalidInput(cause.message, param=_CHAT_TO_RESPONSES.get(cause.param, cause.param)) from None
            field = str(err["loc"][0]) if err["loc"] else "input"
            raise InvalidInput(
                f"{err['msg']} ({'.'.join(map(str, err['loc']))})", param=_CHAT_TO_RESPONSES.get(field, field)
            ) from None


_CHAT_TO_RESPONSES = {"messages": "input", "max_tokens": "max_output_tokens", "response_format": "text.format"}


class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[dict[str, Any]] = Field(default_factory=list)
    logprobs: list[dict[str, Any]] | None = None


class OutputMessage(BaseModel):
    id: str = Field(default_factory=lambda: item_id("msg"))
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    status: Literal["in_progress", "completed", "incomplete"] = "completed"
    content: list[OutputText] = Field(default_factory=list)


class OutputFunctionCall(BaseModel):
    id: str = Field(default_factory=lambda: item_id("fc"))
    type: Literal["function_call"] = "function_call"
    status: Literal["in_progress", "completed", "incomplete"] = "completed"
    call_id: str
    name: str
    arguments: str


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: dict[str, int] = Field(default_factory=lambda: {"cached_tokens": 0})
    output_tokens: int
    output_tokens_details: dict[str, int] = Field(default_factory=lambda: {"reasoning_tokens": 0})
    total_tokens: int


class ResponseObject(BaseModel):
    id: str = Field(default_factory=response_id)
    object: Literal["response"] = "response"
    created_at: int = Field(default_factory=lambda: int(time.time()))
    status: Literal["in_progress", "completed", "incomplete", "failed"] = "completed"
    model: str
    output: list[OutputMessage | OutputFunctionCall] = Field(default_factory=list)
    instructions: str | None = None
    max_output_tokens: int | None = None
    previous_response_id: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    tools: list[dict[str, Any]] = Field(default_factory=list)
    tool_choice: Any = "auto"
    parallel_tool_calls: bool = False
    text: dict[str, Any] = Field(default_factory=lambda: {"format": {"type": "text"}})
    incomplete_details: dict[str, str] | None = None
    error: dict[str, str] | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    usage: ResponseUsage | None = None
    # Carafe extensions
    citations: list[Citation] | None = None
    adapter: str | None = None


def dump(obj: BaseModel) -> str:
    return json.dumps(obj.model_dump(mode="json"), separators=(",", ":"))

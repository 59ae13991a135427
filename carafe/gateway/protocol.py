"""Pydantic models that mirror the OpenAI API (as vLLM's ``protocol.py`` does),
kept apart from the serving logic.

Requests forbid unknown fields: a misspelt or unsupported parameter gets a 400
naming it rather than being silently ignored. vLLM's documented sampling extras
(``top_k``, ``min_p``, ``repetition_penalty``, ``min_tokens``, ``ignore_eos``,
``stop_token_ids``, ``structured_outputs``, ``guided_json``...) are accepted and
honoured; parameters Carafe cannot honour (``logit_bias``, beam search...) are
rejected with a message that says so.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


def new_id(prefix: str) -> str:
    """An OpenAI-style object id, e.g. ``chatcmpl-<hex>``."""
    return f"{prefix}-{uuid.uuid4().hex}"


_SURROGATE = re.compile("[\ud800-\udfff]")


def _lone_surrogate(value: Any) -> bool:
    """Whether a string anywhere in ``value`` holds a UTF-16 surrogate (``"\\ud800"`` in JSON):
    text that cannot be encoded, tokenized or embedded."""
    if isinstance(value, str):
        return not value.isascii() and _SURROGATE.search(value) is not None
    if isinstance(value, list | tuple):
        return any(_lone_surrogate(v) for v in value)
    if isinstance(value, dict):
        return any(_lone_surrogate(k) or _lone_surrogate(v) for k, v in value.items())
    return False


class OpenAIModel(BaseModel):
    """A request part: unknown fields refused, and no field may carry a lone surrogate."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _valid_unicode(cls, value: Any) -> Any:
        if _lone_surrogate(value):
            raise ValueError("contains a lone UTF-16 surrogate (e.g. \\ud800), which is not valid Unicode text")
        return value


# --- errors -------------------------------------------------------------------


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorInfo


# --- shared request parts --------------------------------------------------------


class StreamOptions(OpenAIModel):
    include_usage: bool = False
    continuous_usage_stats: bool = False


class SamplingFields(OpenAIModel):
    """Sampling parameters shared by chat and completions (OpenAI + vLLM extras)."""

    max_tokens: int | None = Field(None, ge=1, description="Most tokens to generate")
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, description="Choices to generate")
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**63), lt=2**63)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=256)
    # vLLM extras that Carafe honours
    top_k: int | None = Field(None, ge=-1)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    repetition_penalty: float | None = Field(None, gt=0.0, le=10.0)
    min_tokens: int = Field(0, ge=0)
    ignore_eos: bool = False
    stop_token_ids: list[int] | None = None
    skip_special_tokens: bool = True
    logprobs: bool | int | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    # vLLM's structured-output extras (the newer object and the older guided_* fields)
    structured_outputs: dict[str, Any] | None = None
    guided_json: dict[str, Any] | str | None = None
    guided_regex: str | None = None
    guided_choice: list[str] | None = None
    guided_grammar: str | None = None
    # accepted only at their no-op values, rejected otherwise
    logit_bias: dict[str, float] | None = None
    best_of: int | None = None
    use_beam_search: bool = False
    include_stop_str_in_output: bool = False

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: str | list[str] | None) -> list[str] | str | None:
        if isinstance(v, list):
            if len(v) > 16:
                raise ValueError("at most 16 stop sequences")
            if any(not s for s in v):
                raise ValueError("stop sequences must be non-empty strings")
        elif isinstance(v, str) and not v:
            raise ValueError("stop must be a non-empty string")
        return v

    @model_validator(mode="after")
    def _unsupported(self) -> SamplingFields:
        def no(field: str, why: str) -> None:
            raise UnsupportedParameter(field, why)

        if self.logit_bias:
            no("logit_bias", "logit_bias is not supported by this gateway")
        if self.best_of not in (None, 1):
            no("best_of", "best_of > 1 is not supported; use n")
        if self.use_beam_search:
            no("use_beam_search", "beam search is not supported")
        if self.include_stop_str_in_output:
            no("include_stop_str_in_output", "stop strings are always excluded from the output")
        if self.stream_options is not None and not self.stream:
            no("stream_options", "stream_options is only allowed when stream is true")
        return self

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class UnsupportedParameter(ValueError):
    """Raised inside validation; mapped to a 400 naming ``param``."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param
        self.message = message


# --- chat ---------------------------------------------------------------------------

Role = Literal["system", "developer", "user", "assistant", "tool"]


class FunctionCall(OpenAIModel):
    name: str = Field(..., min_length=1, max_length=256)
    arguments: str = "{}"


class ToolCall(OpenAIModel):
    id: str = Field(..., min_length=1, max_length=256)
    type: Literal["function"] = "function"
    function: FunctionCall


class FunctionDef(OpenAIModel):
    name: str = Field(..., min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDef(OpenAIModel):
    type: Literal["function"]
    function: FunctionDef


class TextPart(OpenAIModel):
    type: Literal["text"]
    text: str


class ChatMessageIn(OpenAIModel):
    role: Role
    content: str | list[TextPart] | None = None
    name: str | None = Field(None, max_length=256)
    tool_call_id: str | None = None
    tool_calls: list[ToolCall] | None = None
    refusal: str | None = None

    @model_validator(mode="after")
    def _content(self) -> ChatMessageIn:
        if self.content is None and self.role != "assistant":
            raise ValueError(f"a {self.role} message needs content")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs tool_call_id")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        return self

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class ChatCompletionRequest(SamplingFields):
    model: str = Field(..., min_length=1, max_length=512)
    messages: list[ChatMessageIn] = Field(..., min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    response_format: dict[str, Any] | None = None
    tools: list[ToolDef] | None = Field(None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None

    @model_validator(mode="after")
    def _chat_unsupported(self) -> ChatCompletionRequest:
        if self.logprobs not in (None, True, False):
            raise UnsupportedParameter("logprobs", "logprobs must be true or false on chat completions")
        if self.top_logprobs and not self.logprobs:
            raise UnsupportedParameter("top_logprobs", "top_logprobs needs logprobs: true")
        if isinstance(self.tool_choice, dict):
            name = (self.tool_choice.get("function") or {}).get("name")
            if self.tool_choice.get("type") != "function" or not name:
                raise UnsupportedParameter(
                    "tool_choice",
                    "tool_choice must be none, auto, required or {'type': 'function', 'function': {'name': ...}}",
                )
            if name not in {t.function.name for t in self.tools or []}:
                raise UnsupportedParameter("tool_choice", f"tool_choice names {name!r}, which is not in tools")
        elif self.tool_choice == "required" and not self.tools:
            raise UnsupportedParameter("tool_choice", "tool_choice 'required' needs tools")
        if self.tools and self.response_format and self.response_format.get("type") not in ("text", None):
            raise UnsupportedParameter("response_format", "response_format cannot be combined with tools")
        if self.max_completion_tokens is not None:
            if self.max_tokens is not None and self.max_tokens != self.max_completion_tokens:
                raise UnsupportedParameter("max_completion_tokens", "max_tokens and max_completion_tokens disagree")
            self.max_tokens = self.max_completion_tokens
        return self


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprobOut(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprobOut] | None = None
    refusal: list[TokenLogprobOut] | None = None


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    tool_calls: list[ToolCall] | None = None


class ChatChoice(BaseModel):
    index: int
    message: ChatMessageOut
    finish_reason: str | None
    logprobs: ChoiceLogprobs | None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Citation(BaseModel):
    """Carafe extension: a retrieved passage the answer may cite as ``[index]``."""

    index: int
    doc_id: str
    title: str
    version: str
    chunk: int


class ChatCompletionResponse(BaseModel):
    id: str = Field(default_factory=lambda: new_id("chatcmpl"))
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str | None = None
    # Carafe extensions
    citations: list[Citation] | None = None
    adapter: str | None = None


class DeltaFunction(BaseModel):
    name: str | None = None
    arguments: str | None = None


class DeltaToolCall(BaseModel):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: DeltaFunction


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[DeltaToolCall] | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: DeltaMessage
    finish_reason: str | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None
    citations: list[Citation] | None = None
    adapter: str | None = None


# --- completions ---------------------------------------------------------------------


class CompletionRequest(SamplingFields):
    model: str = Field(..., min_length=1, max_length=512)
    prompt: str | list[str] = Field(...)
    echo: bool = False
    suffix: str | None = None

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list):
            if not v:
                raise ValueError("prompt must not be an empty list")
            if len(v) > 64:
                raise ValueError("at most 64 prompts per request")
        return v

    @model_validator(mode="after")
    def _completion_unsupported(self) -> CompletionRequest:
        if self.logprobs is True or (isinstance(self.logprobs, int) and not 0 <= self.logprobs <= 20):
            raise UnsupportedParameter("logprobs", "logprobs on completions is an integer from 0 to 20")
        if self.top_logprobs is not None:
            raise UnsupportedParameter("top_logprobs", "completions take the count in logprobs")
        if self.suffix:
            raise UnsupportedParameter("suffix", "suffix (fill-in-the-middle) is not supported")
        return self

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class CompletionLogprobs(BaseModel):
    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float] = Field(default_factory=list)
    top_logprobs: list[dict[str, float]] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: str | None
    logprobs: CompletionLogprobs | None = None


class CompletionResponse(BaseModel):
    id: str = Field(default_factory=lambda: new_id("cmpl"))
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None
    adapter: str | None = None


class CompletionChunk(BaseModel):
    """One streamed piece of a completion (``object`` stays ``text_completion``, as OpenAI sends it)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


# --- embeddings ----------------------------------------------------------------------


class EmbeddingRequest(OpenAIModel):
    model: str = Field(..., min_length=1, max_length=512)
    input: str | list[str] = Field(...)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = Field(None, max_length=256)

    @field_validator("input")
    @classmethod
    def _input(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list):
            if not v:
                raise ValueError("input must not be an empty list")
            if len(v) > 2048:
                raise ValueError("at most 2048 inputs per request")
            if any(not s for s in v):
                raise ValueError("inputs must be non-empty strings")
        elif not v:
            raise ValueError("input must be a non-empty string")
        return v

    def inputs(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage


# --- models ---------------------------------------------------------------------------


class ModelCard(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "carafe"
    root: str | None = None
    parent: str | None = None
    max_model_len: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]

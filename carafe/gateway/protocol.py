"""Pydantic models that mirror the OpenAI API (as vLLM's ``protocol.py`` does),
kept apart from the serving logic.

Requests forbid unknown fields: a misspelt or unsupported parameter gets a 400
naming it rather than being silently ignored. vLLM's documented sampling extras
(``top_k``, ``min_p``, ``repetition_penalty``, ``min_tokens``, ``ignore_eos``,
``stop_token_ids``...) are accepted and honoured; parameters Carafe cannot honour
(``logprobs``, tools, beam search...) are rejected with a message that says so.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


class OpenAIModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


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
    # accepted only at their no-op values, rejected otherwise
    logprobs: bool | int | None = None
    top_logprobs: int | None = None
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
    def _unsupported(self) -> "SamplingFields":
        def no(field: str, why: str) -> None:
            raise UnsupportedParameter(field, why)

        if self.logprobs not in (None, False, 0):
            no("logprobs", "logprobs are not supported by this gateway")
        if self.top_logprobs not in (None, 0):
            no("top_logprobs", "logprobs are not supported by this gateway")
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


class TextPart(OpenAIModel):
    type: Literal["text"]
    text: str


class ChatMessageIn(OpenAIModel):
    role: Role
    content: str | list[TextPart] | None = None
    name: str | None = Field(None, max_length=256)
    tool_call_id: str | None = None

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _content(self) -> "ChatMessageIn":
        if self.content is None and self.role != "assistant":
            raise ValueError(f"a {self.role} message needs content")
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
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None

    @model_validator(mode="after")
    def _chat_unsupported(self) -> "ChatCompletionRequest":
        if self.tools:
            raise UnsupportedParameter("tools", "tool calling is not supported by this gateway")
        if self.tool_choice not in (None, "none", "auto"):
            raise UnsupportedParameter("tool_choice", "tool calling is not supported by this gateway")
        if self.response_format and self.response_format.get("type") not in ("text", None):
            raise UnsupportedParameter("response_format", "only response_format {'type': 'text'} is supported")
        if self.max_completion_tokens is not None:
            if self.max_tokens is not None and self.max_tokens != self.max_completion_tokens:
                raise UnsupportedParameter("max_completion_tokens", "max_tokens and max_completion_tokens disagree")
            self.max_tokens = self.max_completion_tokens
        return self


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None


class ChatChoice(BaseModel):
    index: int
    message: ChatMessageOut
    finish_reason: str | None
    logprobs: None = None


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
    id: str = Field(default_factory=lambda: _id("chatcmpl"))
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str | None = None
    # Carafe extensions
    citations: list[Citation] | None = None
    adapter: str | None = None


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: DeltaMessage
    finish_reason: str | None = None
    logprobs: None = None


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
    def _completion_unsupported(self) -> "CompletionRequest":
        if self.suffix:
            raise UnsupportedParameter("suffix", "suffix (fill-in-the-middle) is not supported")
        return self

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: str | None
    logprobs: None = None


class CompletionResponse(BaseModel):
    id: str = Field(default_factory=lambda: _id("cmpl"))
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None
    adapter: str | None = None


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

"""The engine interface: what the gateway needs from anything that serves a base
model plus LoRA adapters.

Two implementations plug in behind it: :mod:`carafe.adapters.local` (in-process
transformers + PEFT with dynamic batching) and :mod:`carafe.adapters.vllm` (a vLLM
OpenAI server reached over HTTP). Adding one never edits the others.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from carafe.adapters.config import EngineConfig

FinishReason = Literal["stop", "length", "abort"]
ConstraintKind = Literal["json_object", "json_schema", "regex", "grammar"]


@dataclass(slots=True, frozen=True)
class OutputConstraint:
    """What the output must match, enforced by constrained decoding.

    ``json_object``: any JSON object; ``json_schema``: ``spec`` is a JSON Schema;
    ``regex``: ``spec`` is a regular expression; ``grammar``: ``spec`` is a Lark
    grammar. ``param`` is the request field it came from, named by a 400 when
    the engine cannot compile it. ``strict=False`` lets the engine skip schema
    keywords it cannot enforce (best effort) instead of refusing the schema.
    """

    kind: ConstraintKind
    spec: Any = None
    param: str = "response_format"
    strict: bool = True


@dataclass(slots=True)
class SamplingParams:
    """Per-request sampling knobs, with OpenAI/vLLM semantics.

    ``temperature == 0`` means greedy decoding. ``seed`` makes sampling
    reproducible: the same seed, prompt and params give the same tokens, also when
    the request shares a batch with others (each request owns its generator).
    """

    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1  # -1: off (vLLM convention)
    min_p: float = 0.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    min_tokens: int = 0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    constraint: OutputConstraint | None = None
    logprobs: int | None = None  # None: off; k >= 0: the sampled token's logprob and the k most likely


@dataclass(slots=True)
class ChatMessage:
    role: str  # system | user | assistant | tool
    content: str


@dataclass(slots=True)
class TokenLogprob:
    """A token's log-probability in the step's distribution (after penalties and
    the output constraint, before temperature and sampling)."""

    token: str
    logprob: float
    bytes: list[int]
    top: list[TokenLogprob] = field(default_factory=list)


@dataclass(slots=True)
class GenerationChunk:
    """One streamed piece of a generation.

    ``text`` is the new text since the previous chunk (may be empty on the final
    chunk). The final chunk has ``finish_reason`` set and carries the token counts.
    Stop strings are already applied: no chunk ever contains (part of) a stop string.
    """

    text: str
    token_ids: list[int] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    logprobs: list[TokenLogprob] | None = None  # one per token of ``token_ids`` when asked for


@dataclass(slots=True)
class AdapterInfo:
    name: str  # the name requests select it by, e.g. "hr-style@3"
    path: str
    rank: int | None = None


@runtime_checkable
class Engine(Protocol):
    """Serves one base model and any number of LoRA adapters selected per request."""

    @property
    def model_id(self) -> str:
        """The served base model's id, e.g. ``SmolLM2-135M-Instruct``."""
        ...

    @property
    def model_digest(self) -> str:
        """``sha256:<hex>`` of the base model's weights, as adapter manifests record it."""
        ...

    @property
    def max_model_len(self) -> int:
        """Prompt + completion token limit."""
        ...

    async def start(self) -> None:
        """Load the base model (idempotent). Readiness is ``ready``."""
        ...

    @property
    def ready(self) -> bool: ...

    async def close(self) -> None: ...

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` with the served model's tokenizer."""
        ...

    def chat_prompt(self, messages: list[ChatMessage]) -> str:
        """The base model's chat template applied, with the assistant turn opened."""
        ...

    def chat(
        self,
        messages: list[ChatMessage],
        params: SamplingParams,
        *,
        adapter: str | None = None,
        request_id: str | None = None,
    ) -> AsyncIterator[GenerationChunk]:
        """Stream an assistant reply. ``adapter=None`` means the base model.

        Closing the iterator early (client gone) frees the request's batch slot.
        """
        ...

    def complete(
        self,
        prompt: str,
        params: SamplingParams,
        *,
        adapter: str | None = None,
        request_id: str | None = None,
    ) -> AsyncIterator[GenerationChunk]:
        """Stream a raw-text continuation of ``prompt``."""
        ...

    async def load_adapter(self, name: str, path: str) -> AdapterInfo:
        """Make a PEFT adapter directory servable under ``name`` (idempotent for the
        same name and path; a different path under a loaded name is a Conflict)."""
        ...

    async def unload_adapter(self, name: str) -> None:
        """Drop a resident adapter and free its memory (NotFound if not loaded)."""
        ...

    def adapters(self) -> list[AdapterInfo]:
        """The adapters resident now."""
        ...

    async def refresh(self) -> list[AdapterInfo]:
        """Re-read the resident adapters from the engine itself (a remote engine may
        have restarted and lost them); returns :meth:`adapters`."""
        ...

    def stats(self) -> dict[str, int]:
        """Counters for metrics (``queue_depth`` at least, where the engine knows it)."""
        ...


def create_engine(config: EngineConfig, models_dir: Path) -> Engine:
    """The engine ``config.backend`` names, not started (``await engine.start()`` loads it)."""
    if config.backend == "vllm":
        from carafe.adapters.vllm import VLLMEngine

        return VLLMEngine(config)
    from carafe.adapters.local import LocalEngine

    return LocalEngine(config, models_dir=models_dir)

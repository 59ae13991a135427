"""Fixtures for the engine tests, reusable by any test that needs the real model.

- ``base_model_dir``: the base model converted to safetensors, cached under
  ``$CARAFE_TEST_MODELS`` (default ``/work/main/.carafe/models``) so the GGUF
  conversion happens once per machine.
- ``engine``: one started :class:`LocalEngine` for the whole session (sync fixture:
  its worker thread serves every test's event loop). Tests that load adapters must
  unload them again, so the engine is left as they found it.
- ``native_engine``: the same on the int4 native kernels (``make run``'s engine); a
  module that overrides ``engine`` with both (see test_local_engine.py) holds each to
  the behaviour every engine owes its callers.
- ``make_lora(tmp_path, rank=8, seed=0) -> Path``: a real PEFT LoRA folder for the
  base model whose weights visibly change greedy outputs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from carafe.adapters.base_model import prepare_base_model
from carafe.adapters.config import EngineConfig
from carafe.adapters.engine import ChatMessage, GenerationChunk, SamplingParams
from carafe.adapters.local import LocalEngine
from tests.conftest import MODELS_CACHE

# Large enough that a greedy answer of the base model changes.
LORA_SCALE = 0.05


@pytest.fixture(scope="session")
def base_model_dir() -> Path:
    return prepare_base_model("smollm2", MODELS_CACHE).folder


def running_engine(**config: Any) -> Iterator[LocalEngine]:
    """A started engine on the cached model (CPU, 8 rows, 512 tokens, plus ``config``), closed afterwards."""
    eng = LocalEngine(
        EngineConfig(device="cpu", max_batch_size=8, max_model_len=512, **config), models_dir=MODELS_CACHE
    )
    asyncio.run(eng.start())
    try:
        yield eng
    finally:
        asyncio.run(eng.close())


@pytest.fixture(scope="session")
def engine(base_model_dir: Path) -> Iterator[LocalEngine]:
    yield from running_engine()


@pytest.fixture(scope="session")
def native_engine(base_model_dir: Path) -> Iterator[LocalEngine]:
    yield from running_engine(quantize="int4", kernels="native")


def write_lora(
    out: Path,
    base_dir: Path,
    *,
    rank: int = 8,
    seed: int = 0,
    scale: float = LORA_SCALE,
    targets: tuple[str, ...] = ("q_proj", "v_proj"),
) -> Path:
    """A PEFT LoRA folder for the model in ``base_dir``, written in PEFT's own format
    (``LoraConfig.save_pretrained`` + ``adapter_model.safetensors`` keyed as PEFT keys
    them) with random non-zero A and B: as real as a trained one, without building a
    135M-parameter model first."""
    import torch
    from peft import LoraConfig
    from safetensors.torch import save_file

    cfg = json.loads((base_dir / "config.json").read_text())
    head = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    kv = cfg.get("num_key_value_heads", cfg["num_attention_heads"]) * head
    hidden, inter = cfg["hidden_size"], cfg["intermediate_size"]
    shapes = {
        "q_proj": (hidden, cfg["num_attention_heads"] * head),
        "k_proj": (hidden, kv),
        "v_proj": (hidden, kv),
        "o_proj": (cfg["num_attention_heads"] * head, hidden),
        "gate_proj": (hidden, inter),
        "up_proj": (hidden, inter),
        "down_proj": (inter, hidden),
    }
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(cfg["num_hidden_layers"]):
        for t in targets:
            fan_in, fan_out = shapes[t]
            block = "mlp" if t in ("gate_proj", "up_proj", "down_proj") else "self_attn"
            key = f"base_model.model.model.layers.{layer}.{block}.{t}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(rank, fan_in, generator=gen) * scale
            tensors[f"{key}.lora_B.weight"] = torch.randn(fan_out, rank, generator=gen) * scale
    out.mkdir(parents=True, exist_ok=True)
    LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(targets), task_type="CAUSAL_LM").save_pretrained(out)
    save_file(tensors, str(out / "adapter_model.safetensors"))
    return out


@pytest.fixture(scope="session")
def make_lora(base_model_dir: Path) -> Callable[..., Path]:
    """``make_lora(tmp_path, rank=8, seed=0, targets=("q_proj", "v_proj")) -> Path`` (a folder under ``tmp_path``)."""

    def build(folder: Path, rank: int = 8, seed: int = 0, targets: tuple[str, ...] = ("q_proj", "v_proj")) -> Path:
        out = Path(folder) / f"lora-r{rank}-s{seed}-{'-'.join(targets)}"
        if not (out / "adapter_config.json").exists():
            write_lora(out, base_model_dir, rank=rank, seed=seed, targets=targets)
        return out

    return build


async def collect(stream) -> tuple[str, list[GenerationChunk]]:
    """Drain a generation stream: (joined text, chunks)."""
    chunks = [c async for c in stream]
    return "".join(c.text for c in chunks), chunks


def ask(engine: LocalEngine, text: str, *, adapter: str | None = None, **params):
    """A one-user-message chat stream with the given sampling params."""
    return engine.chat([ChatMessage("user", text)], SamplingParams(**params), adapter=adapter)

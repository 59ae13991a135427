"""Fixtures for the engine tests, reusable by any test that needs the real model.

- ``base_model_dir``: the base model converted to safetensors, cached under
  ``$CARAFE_TEST_MODELS`` (default ``/work/main/.carafe/models``) so the GGUF
  conversion happens once per machine.
- ``engine``: one started :class:`LocalEngine` for the whole session (sync fixture:
  its worker thread serves every test's event loop). Tests that load adapters must
  unload them again, so the engine is left as they found it.
- ``make_lora(tmp_path, rank=8, seed=0) -> Path``: a real PEFT LoRA folder for the
  base model whose weights visibly change greedy outputs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from carafe.adapters.base_model import prepare_base_model
from carafe.adapters.config import EngineConfig
from carafe.adapters.engine import ChatMessage, GenerationChunk, SamplingParams
from carafe.adapters.local import LocalEngine
from tests.conftest import MODELS_CACHE
from tests.lora import make_lora as _make_lora

# Large enough that a greedy answer of the base model changes (0.05 often does not).
LORA_SCALE = 0.5


@pytest.fixture(scope="session")
def base_model_dir() -> Path:
    return prepare_base_model("smollm2", MODELS_CACHE).folder


@pytest.fixture(scope="session")
def engine(base_model_dir: Path) -> Iterator[LocalEngine]:
    eng = LocalEngine(EngineConfig(device="cpu", max_batch_size=8, max_model_len=512), models_dir=MODELS_CACHE)
    asyncio.run(eng.start())
    try:
        yield eng
    finally:
        asyncio.run(eng.close())


@pytest.fixture(scope="session")
def make_lora() -> Callable[..., Path]:
    """``make_lora(tmp_path, rank=8, seed=0) -> Path`` (the folder ``tmp_path/lora-r<rank>-s<seed>``)."""

    def build(folder: Path, rank: int = 8, seed: int = 0) -> Path:
        out = Path(folder) / f"lora-r{rank}-s{seed}"
        if not (out / "adapter_config.json").exists():
            _make_lora(out, rank=rank, seed=seed, scale=LORA_SCALE)
        return out

    return build


async def collect(stream) -> tuple[str, list[GenerationChunk]]:
    """Drain a generation stream: (joined text, chunks)."""
    chunks = [c async for c in stream]
    return "".join(c.text for c in chunks), chunks


def ask(engine: LocalEngine, text: str, *, adapter: str | None = None, **params):
    """A one-user-message chat stream with the given sampling params."""
    return engine.chat([ChatMessage("user", text)], SamplingParams(**params), adapter=adapter)

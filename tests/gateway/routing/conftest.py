"""Routing fixtures: a real registry with real PEFT adapters, and an engine.

The engine is VLLMEngine over the stand-in vLLM server of tests/adapters, so the
router's logic is tested without loading the LLM; the real gateway path is covered
by the end-to-end tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from carafe.adapters.config import EngineConfig
from carafe.adapters.manifest import BaseModelRef
from carafe.adapters.vllm import VLLMEngine
from tests.adapters.test_vllm import fake_vllm  # noqa: F401  (fixture)
from tests.lora import make_lora

DIGEST = "sha256:abc"
BASE_ID = "SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def lora_src(tmp_path_factory) -> Path:
    return make_lora(tmp_path_factory.mktemp("lora") / "src", rank=4, seed=4)


@pytest.fixture
async def vllm_engine(fake_vllm):  # noqa: F811
    fake_vllm.app.state.loras.clear()
    fake_vllm.app.state.calls.clear()
    eng = VLLMEngine(EngineConfig(backend="vllm", vllm_url=fake_vllm.url, vllm_model_digest=DIGEST))
    await eng.start()
    yield eng
    await eng.close()


@pytest.fixture
def base_ref() -> BaseModelRef:
    return BaseModelRef(id=BASE_ID, digest=DIGEST)

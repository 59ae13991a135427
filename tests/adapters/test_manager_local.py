"""Hot-swap on the embedded engine (real model, real adapters): a request in flight
finishes on the version it started with, the next one gets the new version, and
a corrupted new version leaves the old one serving."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from carafe.adapters.engine import ChatMessage, SamplingParams
from carafe.config import load_config
from carafe.gateway.auth import Principal
from carafe.gateway.routing import build_router
from tests.conftest import MODELS_CACHE
from tests.lora import make_lora

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]
USER = Principal(user="alice")
PARAMS = SamplingParams(max_tokens=5, temperature=0.0, ignore_eos=True)
QUESTION = [ChatMessage("user", "Name a colour.")]


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("loras")
    return [make_lora(root / f"v{seed}", rank=8, seed=seed, scale=0.2) for seed in (1, 2)]


@pytest.fixture
async def router(tmp_path, engine, sources):  # engine: the session LocalEngine of conftest.py
    cfg = load_config(
        None,
        data_dir=tmp_path,
        models_cache=MODELS_CACHE,
        adapters={"registry": {"reconcile_interval_s": 0, "retire_grace_s": 0, "warm_rollback": False}},
    )  # a replaced version must go
    r = build_router(cfg, engine)
    for src in sources:
        r.registry.add(src, actor="t", name="style")
    await r.start()
    yield r
    await r.close()
    for a in engine.adapters():
        await engine.unload_adapter(a.name)


async def answer(router, model: str) -> tuple[str, str]:
    d = await router.resolve(model, USER)
    chunks = [c async for c in router.engine.chat(QUESTION, PARAMS, adapter=d.adapter)]
    return d.served_model, "".join(c.text for c in chunks)


async def test_in_flight_request_finishes_on_its_version_and_the_next_gets_the_new_one(router):
    _, v1_text = await answer(router, "style")
    _, v2_text = await answer(router, "style@2")
    assert v1_text != v2_text  # the two versions visibly differ

    d = await router.resolve("style", USER)
    assert d.adapter == "style@1"
    stream = router.engine.chat(QUESTION, PARAMS, adapter=d.adapter)
    first = await stream.__anext__()
    await router.manager.promote("style", 2, actor="ops")
    await asyncio.sleep(0.05)
    rest = [c async for c in stream]
    assert first.text + "".join(c.text for c in rest) == v1_text
    assert rest[-1].finish_reason == "length"
    served, text = await answer(router, "style")
    assert (served, text) == ("style@2", v2_text)
    for _ in range(100):
        if "style@1" not in router.manager.resident():
            break
        await asyncio.sleep(0.05)
    assert "style@1" not in router.manager.resident()


async def test_corrupted_stable_version_keeps_the_previous_one_serving(router):
    assert (await router.resolve("style", USER)).adapter == "style@1"
    router.registry.promote("style", 2, actor="cli")  # the CLI moved the channel; the file then broke
    weights = router.registry.get("style", 2).path / "adapter_model.safetensors"
    os.chmod(weights, 0o644)
    weights.write_bytes(weights.read_bytes()[:-16])
    served, text = await answer(router, "style")
    assert served == "style@1" and text

"""Adapters onto a real vLLM through its runtime LoRA API: the registry's add,
promote, split, rollback, reconcile and remove through the gateway's admin API,
and vLLM's sharp edges checked against the real thing."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from carafe.adapters.config import EngineConfig
from carafe.adapters.engine import SamplingParams
from carafe.adapters.errors import AdapterConflict, InvalidAdapter
from carafe.adapters.vllm import VLLMEngine
from tests.lora import make_lora
from tests.vllm.conftest import Gateway, vllm_models
from tests.vllm.launch import SERVED_NAME, VLLMServer

pytestmark = [pytest.mark.vllm, pytest.mark.asyncio(loop_scope="session")]


def served_by(gateway: Gateway, model: str) -> str:
    raw = gateway.openai().chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=1
    )
    assert raw.parse().usage.completion_tokens == 1
    return raw.headers["x-carafe-adapter"]


async def test_registry_changes_reach_vllm(gateway: Gateway, vllm_server: VLLMServer, loras: list[Path]) -> None:
    registry = gateway.state.router.registry
    with gateway.http() as c:
        for src in loras[:2]:
            assert c.post("/admin/adapters", json={"path": str(src), "name": "legal"}).status_code == 201
        try:
            assert served_by(gateway, "legal") == "legal@1"
            r = c.post("/admin/adapters/legal/promote", json={"version": 2})
            assert r.status_code == 200 and "legal@2" in r.json()["resident"]
            card = vllm_models(vllm_server)["legal@2"]  # loaded before the channel moved
            assert card["root"] == str(registry.get("legal", 2).path) and card["parent"] == SERVED_NAME
            assert served_by(gateway, "legal") == "legal@2"
            r = c.post("/admin/adapters/legal/split", json={"canary": 1, "weight": 50})
            assert (r.json()["canary"], r.json()["canary_weight"]) == (1, 50)
            assert {"legal@1", "legal@2"} <= set(vllm_models(vllm_server))
            assert c.post("/admin/adapters/legal/rollback").json()["stable"] == 1
            assert served_by(gateway, "legal@1") == "legal@1"  # a pinned version
            report = c.post("/admin/adapters/sync").json()
            assert report["failed"] == {}
            in_vllm = {n for n, m in vllm_models(vllm_server).items() if m["parent"]}
            assert set(report["resident"]) == in_vllm  # Carafe's view is vLLM's
        finally:
            assert c.delete("/admin/adapters/legal").status_code == 200
    assert not any(n.startswith("legal@") for n in vllm_models(vllm_server))


async def test_a_rotten_version_is_a_400_and_never_reaches_vllm(
    gateway: Gateway, vllm_server: VLLMServer, loras: list[Path], tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(loras[2], broken)
    with gateway.http() as c:
        assert c.post("/admin/adapters", json={"path": str(loras[0]), "name": "ops"}).status_code == 201
        assert c.post("/admin/adapters", json={"path": str(broken), "name": "ops"}).status_code == 201
        try:
            stored = gateway.state.router.registry.get("ops", 2).path / "adapter_model.safetensors"
            stored.write_bytes(b"garbage")  # the registry's copy rots on the shared volume
            r = c.post("/admin/adapters/ops/promote", json={"version": 2})
            assert r.status_code == 400 and "corrupted" in r.json()["error"]["message"]  # the registry's digest check
            assert "ops@2" not in vllm_models(vllm_server)
            assert c.get("/admin/adapters/ops").json()["stable"] == 1
            assert served_by(gateway, "ops") == "ops@1"
        finally:
            c.delete("/admin/adapters/ops")


@pytest.fixture
async def engine(vllm_server: VLLMServer):
    eng = VLLMEngine(EngineConfig(backend="vllm", vllm_url=vllm_server.url))
    await eng.start()
    yield eng
    for a in eng.adapters():
        if a.name.startswith("edge-"):
            await eng.unload_adapter(a.name)
    await eng.close()


async def test_sharp_edges_of_the_real_runtime_lora_api(
    engine: VLLMEngine, vllm_server: VLLMServer, loras: list[Path], tmp_path: Path
) -> None:
    # a missing path: vLLM 0.32 refuses it at once (404, path hidden); Carafe names it
    with pytest.raises(InvalidAdapter, match=f"cannot load {tmp_path / 'nope'}.*No adapter found"):
        await engine.load_adapter("edge-ghost", str(tmp_path / "nope"))
    # a rank above --max-lora-rank and broken weights: vLLM answers 500; Carafe: an invalid adapter
    big = make_lora(tmp_path / "big", rank=128)
    with pytest.raises(InvalidAdapter, match="greater than max_lora_rank"):
        await engine.load_adapter("edge-big", str(big))
    bad = tmp_path / "bad"
    shutil.copytree(loras[0], bad)
    (bad / "adapter_model.safetensors").write_bytes(b"garbage")
    with pytest.raises(InvalidAdapter, match="cannot load"):
        await engine.load_adapter("edge-bad", str(bad))
    assert not {"edge-ghost", "edge-big", "edge-bad"} & set(vllm_models(vllm_server))
    # reload of a name: the same path is idempotent, another is a conflict, replace swaps it
    await engine.load_adapter("edge-a", str(loras[0]))
    assert (await engine.load_adapter("edge-a", str(loras[0]))).path == str(loras[0])
    with pytest.raises(AdapterConflict, match="unload it first"):
        await engine.load_adapter("edge-a", str(loras[1]))
    await engine.load_adapter("edge-a", str(loras[1]), replace=True)
    assert vllm_models(vllm_server)["edge-a"]["root"] == str(loras[1])


async def test_races_on_one_name_load_it_once(engine: VLLMEngine, vllm_server: VLLMServer, loras: list[Path]) -> None:
    other = VLLMEngine(EngineConfig(backend="vllm", vllm_url=vllm_server.url))  # a second gateway replica
    await other.start()
    try:
        results = await asyncio.gather(
            *(e.load_adapter("edge-race", str(loras[0])) for e in [engine, other] * 3), return_exceptions=True
        )
        assert all(not isinstance(r, BaseException) for r in results), results
        assert [n for n in vllm_models(vllm_server) if n == "edge-race"] == ["edge-race"]
    finally:
        await other.close()


async def test_an_unload_in_vllm_does_not_cut_a_running_generation(engine: VLLMEngine, loras: list[Path]) -> None:
    await engine.load_adapter("edge-busy", str(loras[0]))
    params = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True)
    stream = engine.complete("Once upon a time", params, adapter="edge-busy")
    first = await anext(stream)
    await engine.unload_adapter("edge-busy")
    rest = [c async for c in stream]
    assert first.text and rest[-1].finish_reason == "length" and rest[-1].completion_tokens == 24

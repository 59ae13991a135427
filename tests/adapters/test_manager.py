"""The resident-set manager over a real registry and an engine: on-demand loads,
LRU, per-name serialization, in-flight safety, hot-swap and reconcile.

The engine is VLLMEngine talking to the stand-in vLLM server of test_vllm.py, so
these tests need no model; the same manager runs over LocalEngine in the gateway.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from carafe.adapters.config import EngineConfig
from carafe.adapters.engine import ChatMessage, SamplingParams
from carafe.adapters.errors import InvalidAdapter
from carafe.adapters.manager import AdapterManager, parse_ref
from carafe.adapters.manifest import BaseModelRef
from carafe.adapters.registry import Registry
from carafe.adapters.vllm import VLLMEngine
from tests.adapters.test_vllm import fake_vllm  # noqa: F401  (fixture)
from tests.lora import make_lora

pytestmark = pytest.mark.asyncio(loop_scope="session")
DIGEST = "sha256:abc"


@pytest.fixture(scope="module")
def lora_src(tmp_path_factory) -> Path:
    return make_lora(tmp_path_factory.mktemp("lora") / "src", rank=4, seed=3)


@pytest.fixture
async def engine(fake_vllm):  # noqa: F811
    state = fake_vllm.app.state
    state.loras.clear()
    state.calls.clear()
    state.token_delay = 0.0
    eng = VLLMEngine(EngineConfig(backend="vllm", vllm_url=fake_vllm.url, vllm_model_digest=DIGEST))
    await eng.start()
    yield eng
    await eng.close()


@pytest.fixture
def registry(tmp_path, lora_src) -> Registry:
    reg = Registry(tmp_path / "registry", base=BaseModelRef(id="SmolLM2-135M-Instruct", digest=DIGEST), max_rank=16)
    for name in ("a", "b", "c"):
        reg.add(lora_src, actor="t", name=name)
    reg.add(lora_src, actor="t", name="a")  # a@2, not promoted yet
    return reg


@pytest.fixture
async def manager(engine, registry):
    mgr = AdapterManager(engine, registry, max_resident=2, reconcile_interval_s=0, retire_grace_s=0.0)
    yield mgr
    await mgr.close()


async def test_parse_ref():
    assert parse_ref("hr-style@12") == ("hr-style", 12)
    assert parse_ref("hr-style") is None and parse_ref("x@y") is None


async def test_on_demand_load_is_idempotent_and_serialized(manager, fake_vllm):  # noqa: F811
    refs = await asyncio.gather(*(manager.ensure("a", 1) for _ in range(5)))
    assert set(refs) == {"a@1"} and manager.resident() == ["a@1"]
    assert fake_vllm.app.state.calls["load"] == 1


async def test_lru_evicts_the_least_recently_used_idle_version(manager):
    await manager.ensure("a", 1)
    await manager.ensure("b", 1)
    await manager.ensure("a", 1)  # a is now more recent than b
    await manager.ensure("c", 1)
    assert sorted(manager.resident()) == ["a@1", "c@1"]


async def test_a_version_generating_is_not_unloaded_until_its_request_ends(manager, fake_vllm):  # noqa: F811
    fake_vllm.app.state.token_delay = 0.02
    await manager.ensure("a", 1)
    params = SamplingParams(max_tokens=15, ignore_eos=True)
    stream = manager.engine.chat([ChatMessage("user", "hi")], params, adapter="a@1")
    first = await stream.__anext__()
    assert manager.in_flight("a@1") == 1
    manager.retire("a@1", delay=0)
    await manager.ensure("b", 1)
    await manager.ensure("c", 1)  # needs a slot: must evict b (idle), not a (busy)
    await asyncio.sleep(0.05)
    assert "a@1" in manager.resident()
    rest = [c async for c in stream]
    assert first.text == "Hello" and rest[-1].finish_reason == "length"
    for _ in range(50):
        if "a@1" not in manager.resident():
            break
        await asyncio.sleep(0.02)
    assert "a@1" not in manager.resident()


async def test_promote_loads_first_then_swaps_and_retires_the_old_version(manager, registry):
    manager.warm_rollback = False
    await manager.ensure("a", 1)
    ch = await manager.promote("a", 2, actor="ops")
    assert ch.stable == 2 and ch.previous == [1]
    assert "a@2" in manager.resident()
    await asyncio.sleep(0.1)
    assert "a@1" not in manager.resident()
    assert registry.history("a")[-1]["actor"] == "ops"


async def test_the_rollback_target_stays_warm_so_a_rollback_loads_nothing(manager, engine, registry):
    manager.max_resident = 8  # warm targets come last in the desired set: only while slots are free
    await manager.ensure("a", 1)
    await manager.promote("a", 2, actor="ops")
    await asyncio.sleep(0.1)
    assert sorted(manager.resident()) == ["a@1", "a@2"]  # a@1 is the rollback target
    assert "a@1" in manager.desired()
    loads = []
    real = engine.load_adapter

    async def counting(name, path):
        loads.append(name)
        return await real(name, path)

    engine.load_adapter = counting
    ch = await manager.rollback("a", actor="ops")
    assert ch.stable == 1 and loads == []  # only the channel moved
    await asyncio.sleep(0.1)
    assert manager.resident() == ["a@1"]  # a@2 is neither on a channel nor the rollback target now


async def test_promote_of_a_corrupted_version_fails_and_the_old_one_keeps_serving(manager, registry):
    await manager.ensure("a", 1)
    weights = registry.get("a", 2).path / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-4:] = b"\xff\xff\xff\xff"
    os.chmod(weights, 0o644)
    weights.write_bytes(bytes(data))
    with pytest.raises(InvalidAdapter, match="corrupted"):
        await manager.promote("a", 2, actor="ops")
    assert registry.channels("a").stable == 1 and manager.resident() == ["a@1"]


async def test_reconcile_restores_the_desired_set_after_an_engine_restart(manager, engine, fake_vllm):  # noqa: F811
    manager.max_resident = 3
    report = await manager.reconcile()
    assert sorted(report.loaded) == ["a@1", "b@1", "c@1"]
    fake_vllm.app.state.loras.clear()  # vLLM restarted: nothing resident any more
    report = await manager.reconcile()
    assert sorted(report.resident) == ["a@1", "b@1", "c@1"]


async def test_reconcile_follows_a_promote_made_elsewhere(manager, registry):
    manager.max_resident = 4
    await manager.reconcile()
    registry.promote("a", 2, actor="cli")  # another replica / the CLI changed the registry
    report = await manager.reconcile()
    assert "a@2" in report.loaded and "a@1" in manager.resident()  # a@1: the warm rollback target
    manager.max_resident = 3  # no free slot for it any more
    report = await manager.reconcile()
    assert "a@1" in report.unloaded and "a@1" not in manager.resident()


async def test_reconcile_drops_removed_adapters_but_leaves_foreign_names(manager, registry, engine, lora_src):
    manager.max_resident = 4
    await manager.reconcile()
    await engine.load_adapter("handmade", str(lora_src))  # loaded through /v1/load_lora_adapter
    registry.remove("b", actor="ops")
    report = await manager.reconcile()
    assert "b@1" in report.unloaded
    assert "handmade" in [a.name for a in engine.adapters()]


async def test_foreign_adapters_take_slots_but_are_never_evicted(manager, engine, lora_src):
    await engine.load_adapter("handmade", str(lora_src))
    await manager.ensure("a", 1)
    await manager.ensure("b", 1)  # 2 slots: a@1 goes, handmade stays
    assert sorted(a.name for a in engine.adapters()) == ["b@1", "handmade"]


async def test_a_version_routed_to_moments_ago_outlives_its_retirement_by_the_grace(manager):
    manager.retire_grace_s = 0.3
    await manager.ensure("a", 1)  # a request was just routed here; it has not reached the engine yet
    manager.retire("a@1", delay=0)
    await asyncio.sleep(0.1)
    assert "a@1" in manager.resident()
    await asyncio.sleep(0.5)
    assert "a@1" not in manager.resident()

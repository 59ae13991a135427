"""Hot-swap on the embedded engine (real model, real adapters): a request in flight
finishes on the version it started with, the next one gets the new version, and
a corrupted new version leaves the old one serving."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from carafe.adapters.engine import ChatMessage, SamplingParams
from carafe.adapters.manifest import BaseModelRef
from carafe.adapters.registry import Registry
from carafe.config import load_config
from carafe.errors import Unavailable
from carafe.gateway.auth import Principal
from carafe.gateway.routing import build_router
from tests.conftest import MODELS_CACHE
from tests.lora import make_lora

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]
USER = Principal(user="alice")
OPS = Principal(user="ops", roles=("admin",))  # may pin a version on no channel (a user may not)
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


async def answer(router, model: str, principal: Principal = USER) -> tuple[str, str]:
    d = await router.resolve(model, principal)
    chunks = [c async for c in router.engine.chat(QUESTION, PARAMS, adapter=d.adapter)]
    return d.served_model, "".join(c.text for c in chunks)


async def test_in_flight_request_finishes_on_its_version_and_the_next_gets_the_new_one(router):
    _, v1_text = await answer(router, "style")
    _, v2_text = await answer(router, "style@2", OPS)
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


def break_in_place(av, src: Path) -> None:
    """What an older Carafe let in: ``av``'s lora_B ranks no longer match lora_A (digest kept intact)."""
    from carafe.adapters.manifest import content_digest
    from tests.adapters.test_registry import rank_mismatched

    broken, _ = rank_mismatched(src, av.path.parent / "tmp-broken")
    for f in ("adapter_model.safetensors", "manifest.json"):
        os.chmod(av.path / f, 0o644)
    (av.path / "adapter_model.safetensors").write_bytes((broken / "adapter_model.safetensors").read_bytes())
    manifest = av.manifest.model_copy(update={"adapter_digest": content_digest(av.path)})
    (av.path / "manifest.json").write_text(manifest.model_dump_json())
    shutil.rmtree(broken)


async def test_a_broken_adapter_in_the_registry_never_stops_a_gateway_starting(tmp_path, engine, sources):
    """Issue 29 H2: A/B ranks that disagree used to raise a RuntimeError out of start()."""
    from carafe.adapters.manager import AdapterUnavailable
    from carafe.gateway.admin_adapters import adapter_summary

    cfg = load_config(None, data_dir=tmp_path, models_cache=MODELS_CACHE, adapters={"registry": {"retire_grace_s": 0}})
    older = Registry(cfg.registry_dir, base=BaseModelRef(id=engine.model_id, digest=engine.model_digest))
    older.add(sources[0], actor="t", name="good")
    break_in_place(older.add(sources[1], actor="t", name="broken"), sources[1])
    r = build_router(cfg, engine)  # a gateway starting on that registry
    loads: list[str] = []
    real_load = engine.load_adapter

    async def counted(name: str, path: str):
        loads.append(name)
        return await real_load(name, path)

    engine.load_adapter = counted  # type: ignore[method-assign]
    try:
        await r.start()  # serves the rest
        assert "good@1" in r.manager.resident() and "broken@1" not in r.manager.resident()
        why = adapter_summary(r.registry, r.manager, "broken")["skipped"]["broken@1"]  # the admin view says why
        assert "rank" in why and "lora_B" in why
        before = len(loads)
        report = await r.manager.reconcile()  # what the loop does every reconcile_interval_s
        assert "broken@1" in report.skipped and not report.failed and len(loads) == before  # not retried
        with pytest.raises(AdapterUnavailable, match="cannot be served") as err:
            await r.resolve("broken", USER)
        assert isinstance(err.value, Unavailable) and str(r.registry.root) not in err.value.message  # 503
        assert (await r.resolve("good", USER)).adapter == "good@1"
        report = await r.manager.reconcile(retry=True)  # POST /admin/adapters/sync retries it once
        assert "broken@1" in report.failed and len(loads) == before + 1
    finally:
        engine.load_adapter = real_load  # type: ignore[method-assign]
        await r.close()
        for a in engine.adapters():
            await engine.unload_adapter(a.name)


async def test_the_engine_refuses_rank_mismatch_and_nan_with_an_invalid_adapter(engine, sources, tmp_path):
    from carafe.adapters.errors import InvalidAdapter
    from tests.adapters.test_registry import poisoned, rank_mismatched

    mismatch, key = rank_mismatched(sources[0], tmp_path / "mm")
    with pytest.raises(InvalidAdapter, match="rank") as err:
        await engine.load_adapter("mm", str(mismatch))
    assert key in err.value.message
    with pytest.raises(InvalidAdapter, match="NaN"):
        await engine.load_adapter("nan", str(poisoned(sources[0], tmp_path / "nan")))
    assert not engine.adapters()

"""The router: model names, pins, canary stickiness, aliases, `auto`, permissions,
/v1/models cards, and serving on when a new version cannot load."""

from __future__ import annotations

import os

import pytest

from carafe.adapters.errors import AdapterNotFound
from carafe.adapters.manager import AdapterUnavailable
from carafe.config import load_config
from carafe.errors import Forbidden
from carafe.gateway.auth import Principal
from carafe.gateway.routing import RetrievalPolicy, build_router, canary_bucket
from tests.gateway.routing.conftest import BASE_ID

pytestmark = pytest.mark.asyncio(loop_scope="session")

ALICE = Principal(user="alice", groups=("hr",))
HR_ONLY = Principal(user="bob", models=("hr-style", "hr-assistant"))
ADMIN = Principal(user="ops", roles=("admin",))


@pytest.fixture(scope="module")
def embedder():
    from carafe.indexer.embedding import Embedder

    return Embedder()


@pytest.fixture
async def router(tmp_path, vllm_engine, lora_src, embedder):
    cfg = load_config(
        None,
        data_dir=tmp_path,
        routing={
            "aliases": {
                "hr-assistant": {
                    "adapter": "hr-style",
                    "retrieval": {"enabled": True, "top_k": 6},
                    "guard_policy": "strict",
                    "record_content": True,
                },
                "plain": {"adapter": None},
            },
            "auto": {"threshold": 0.3},
        },
        adapters={"registry": {"reconcile_interval_s": 0, "retire_grace_s": 0}},
    )
    r = build_router(cfg, vllm_engine, embedder=embedder)
    reg = r.registry
    reg.add(
        lora_src,
        actor="t",
        name="hr-style",
        description="HR policies: vacation days, parental leave, sick leave and payroll questions",
    )
    reg.add(lora_src, actor="t", name="hr-style")
    reg.add(
        lora_src,
        actor="t",
        name="code-review",
        description="Reviewing Python source code: bugs, style, type hints and unit tests",
    )
    await r.start()
    yield r
    await r.close()


async def test_base_model_and_adapter_names(router):
    d = await router.resolve(BASE_ID, ALICE)
    assert (d.adapter, d.served_model, d.route) == (None, BASE_ID, "base")
    d = await router.resolve("hr-style", ALICE)
    assert (d.adapter, d.served_model, d.route, d.requested) == ("hr-style@1", "hr-style@1", "hr-style", "hr-style")
    assert "hr-style@1" in router.manager.resident()


async def test_pinning_a_version(router):
    router.registry.promote("hr-style", 2, actor="ops", channel="beta")  # users pin versions on a channel
    d = await router.resolve("hr-style@2", ALICE)
    assert d.adapter == "hr-style@2" and "hr-style@2" in router.manager.resident()


async def test_a_rolled_back_version_cannot_be_pinned_by_users(router):
    """Issue 29 L1: `hr-style@2` after its rollback was still served to any key allowed hr-style."""
    reg = router.registry
    reg.promote("hr-style", 2, actor="ops")
    reg.rollback("hr-style", actor="ops")  # 2 is on no channel now
    for who in (HR_ONLY, ALICE):
        with pytest.raises(Forbidden, match="on no channel") as err:
            await router.resolve("hr-style@2", who)
        assert err.value.code == "version_not_pinnable"
    assert "hr-style@2" not in router.manager.resident()
    assert (await router.resolve("hr-style@1", HR_ONLY)).adapter == "hr-style@1"  # the stable one is
    reg.split("hr-style", 2, 0, actor="ops")  # on the canary channel (even at weight 0): pinnable again
    assert (await router.resolve("hr-style@2", HR_ONLY)).adapter == "hr-style@2"


async def test_an_admin_pin_of_a_version_on_no_channel_never_evicts(router):
    await router.resolve("hr-style", ALICE)
    await router.resolve("code-review", ALICE)
    manager = router.manager
    manager.max_resident = len(manager.raw_engine.adapters())  # every slot taken by a channel's version
    before = set(manager.resident())
    with pytest.raises(AdapterUnavailable, match="never evicts"):
        await router.resolve("hr-style@2", ADMIN)
    assert set(manager.resident()) == before
    manager.max_resident += 1
    assert (await router.resolve("hr-style@2", ADMIN)).adapter == "hr-style@2"


async def test_an_alias_pinned_in_the_config_serves_users_off_a_channel(router):
    from carafe.gateway.routing.config import RouteAlias

    router.config.aliases["hr-v2"] = RouteAlias(adapter="hr-style@2")  # written by an admin
    assert 2 not in router.registry.channels("hr-style").referenced()
    assert (await router.resolve("hr-v2", HR_ONLY)).adapter == "hr-style@2"


@pytest.mark.parametrize("model", ["nope", "hr-style@9", "hr-style@x", "@1", ""])
async def test_unknown_models_and_versions_are_404(router, model):
    with pytest.raises(AdapterNotFound):
        await router.resolve(model, ALICE)


async def test_principals_only_use_what_their_key_allows(router):
    assert (await router.resolve("hr-style", HR_ONLY)).adapter == "hr-style@1"
    assert (await router.resolve("hr-assistant", HR_ONLY)).adapter == "hr-style@1"
    for model in ("code-review", "code-review@1", BASE_ID):
        with pytest.raises(Forbidden):
            await router.resolve(model, HR_ONLY)


async def test_canary_is_sticky_per_user_and_close_to_its_weight(router):
    router.registry.split("hr-style", 2, 30, actor="ops")
    users = [Principal(user=f"user{i}") for i in range(200)]
    first = [(await router.resolve("hr-style", u)).adapter for u in users]
    again = [(await router.resolve("hr-style", u)).adapter for u in users]
    assert first == again
    share = first.count("hr-style@2") / len(users)
    assert 0.2 <= share <= 0.4
    assert all((a == "hr-style@2") == (canary_bucket(u.user, "hr-style") < 30) for a, u in zip(first, users))


async def test_alias_carries_its_policies(router):
    d = await router.resolve("hr-assistant", ALICE)
    assert (d.adapter, d.route, d.guard_policy, d.record_content) == ("hr-style@1", "hr-assistant", "strict", True)
    assert d.retrieval == RetrievalPolicy(enabled=True, top_k=6)
    d = await router.resolve("plain", ALICE)
    assert d.adapter is None and d.served_model == BASE_ID and d.route == "plain"


async def test_auto_picks_the_best_described_adapter_or_the_base(router):
    d = await router.resolve("auto", ALICE, query="How many vacation days do I get per year?")
    assert (d.adapter, d.route) == ("hr-style@1", "auto")
    d = await router.resolve("auto", ALICE, query="Please review this Python function for bugs")
    assert d.adapter == "code-review@1"
    d = await router.resolve("auto", ALICE, query="Quelle est la capitale de la Mongolie ?")
    assert d.adapter is None and d.served_model == BASE_ID
    # never an adapter the key may not use; this key may not use the base model either
    with pytest.raises(Forbidden):
        await router.resolve("auto", HR_ONLY, query="Please review this Python function for bugs")


async def test_list_models_shows_versions_parents_and_respects_keys(router):
    cards = {c["id"]: c for c in router.list_models(ALICE)}
    assert cards[BASE_ID]["parent"] is None and cards[BASE_ID]["digest"] == "sha256:abc"
    hr = cards["hr-style"]
    assert (hr["parent"], hr["version"], hr["object"], hr["owned_by"]) == (BASE_ID, 1, "model", "carafe")
    assert {"code-review", "hr-assistant", "auto"} <= set(cards)
    assert {c["id"] for c in router.list_models(HR_ONLY)} == {"hr-style", "hr-assistant", "auto"}


async def test_a_stable_version_that_cannot_load_falls_back_to_the_previous(router):
    await router.resolve("hr-style", ALICE)
    router.registry.promote("hr-style", 2, actor="cli")
    weights = router.registry.get("hr-style", 2).path / "adapter_model.safetensors"
    os.chmod(weights, 0o644)
    weights.write_bytes(weights.read_bytes()[:-8] + b"garbage!")
    d = await router.resolve("hr-style", ALICE)
    assert d.adapter == "hr-style@1"

"""The admin adapter API and the vLLM-compatible LoRA endpoints on a real Carafe
gateway (real uvicorn, real keys, real registry), and VLLMEngine driving that
gateway as if it were vLLM.

The gateway's own engine is VLLMEngine over the stand-in vLLM server, so no LLM
is loaded here; the chain client → gateway → engine is the production one.
"""

from __future__ import annotations

import httpx
import pytest

from carafe.adapters.config import EngineConfig
from carafe.adapters.engine import ChatMessage, SamplingParams
from carafe.adapters.errors import AdapterConflict, InvalidAdapter
from carafe.adapters.vllm import VLLMEngine
from carafe.config import load_config
from carafe.gateway.app import create_app
from tests.gateway.routing.conftest import BASE_ID, DIGEST
from tests.servers import serve_in_thread

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, fake_vllm, lora_src):
    fake_vllm.app.state.loras.clear()
    data = tmp_path_factory.mktemp("gw")
    cfg = load_config(
        None,
        data_dir=data,
        guards={"enabled": False},
        adapters={
            "engine": {"backend": "vllm", "vllm_url": fake_vllm.url, "vllm_model_digest": DIGEST},
            "registry": {"reconcile_interval_s": 0, "retire_grace_s": 0},
        },
    )
    app = create_app(cfg)
    keys = app.state.carafe.keys
    admin, _ = keys.create("root", admin=True, rpm=100_000)
    user, _ = keys.create("alice", rpm=100_000)
    server = serve_in_thread(app, timeout=120)
    yield server, admin, user, lora_src
    server.stop()


def client(gateway, key: str | None = None) -> httpx.Client:
    server, admin, *_ = gateway
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key or admin}"}, timeout=60)


async def test_admin_adapter_lifecycle(gateway, tmp_path):
    from carafe.gateway.telemetry.config import TelemetryConfig
    from carafe.gateway.telemetry.setup import setup_telemetry

    _, _, user, src = gateway
    tel = setup_telemetry(TelemetryConfig(), data_dir=tmp_path, in_memory=True)
    try:
        _lifecycle(gateway, user, src)
        tel.force_flush()
        spans = [s for s in tel.memory.get_finished_spans() if s.name.startswith("carafe.admin.adapters.")]
    finally:
        tel.shutdown()
    # every change is an audited span: what, on which adapter, by whom
    seen = {
        (s.name.rsplit(".", 1)[1], s.attributes.get("carafe.adapter.name"), s.attributes["carafe.principal"])
        for s in spans
    }
    assert {
        ("add", "legal", "root"),
        ("promote", "legal", "root"),
        ("split", "legal", "root"),
        ("rollback", "legal", "root"),
        ("remove", "legal", "root"),
    } <= seen
    promote = next(s for s in spans if s.name.endswith(".promote"))
    assert promote.attributes["carafe.adapter.version"] == "legal@2"


def _lifecycle(gateway, user, src):
    with client(gateway) as c:
        r = c.post("/admin/adapters", json={"path": str(src), "name": "legal", "description": "contracts"})
        assert r.status_code == 201, r.text
        assert (r.json()["ref"], r.json()["stable"]) == ("legal@1", 1)
        assert c.post("/admin/adapters", json={"path": str(src), "name": "legal"}).json()["version"] == 2
        r = c.post("/admin/adapters/legal/promote", json={"version": 2})
        assert r.status_code == 200 and r.json()["stable"] == 2 and "legal@2" in r.json()["resident"]
        r = c.post("/admin/adapters/legal/split", json={"canary": 1, "weight": 25})
        assert (r.json()["canary"], r.json()["canary_weight"]) == (1, 25)
        assert c.post("/admin/adapters/legal/rollback").json()["stable"] == 1
        detail = c.get("/admin/adapters/legal").json()
        assert detail["manifests"]["1"]["description"] == "contracts"
        assert detail["manifests"]["1"]["base_model"] == {"id": BASE_ID, "digest": DIGEST}
        assert [e["actor"] for e in detail["history"]] == ["root"] * len(detail["history"])
        assert [a["name"] for a in c.get("/admin/adapters").json()["data"]] == ["legal"]
        report = c.post("/admin/adapters/sync").json()
        assert set(report) == {"loaded", "unloaded", "failed", "skipped", "resident"}
        cards = {m["id"]: m for m in c.get("/v1/models", headers={"Authorization": f"Bearer {user}"}).json()["data"]}
        assert cards["legal"]["parent"] == BASE_ID and cards["legal"]["version"] == 1
        assert c.delete("/admin/adapters/legal").json()["removed"] is True
        assert c.get("/admin/adapters/legal").status_code == 404


async def test_admin_api_errors(gateway, tmp_path):
    _, _, user, src = gateway
    with client(gateway) as c:
        c.post("/admin/adapters", json={"path": str(src), "name": "ops"})
        r = c.post("/admin/adapters/ops/promote", json={"version": 5})
        assert r.status_code == 404 and "no version 5" in r.json()["error"]["message"]
        assert c.get("/admin/adapters/ops").json()["stable"] == 1
        r = c.post("/admin/adapters", json={"path": str(tmp_path)})
        assert r.status_code == 400 and "adapter_config.json is missing" in r.json()["error"]["message"]
        assert c.post("/admin/adapters/ops/rollback").status_code == 409
    with client(gateway, user) as c:
        assert c.get("/admin/adapters").status_code == 403
        assert c.post("/admin/adapters/ops/promote", json={"version": 1}).status_code == 403
        assert c.post("/v1/load_lora_adapter", json={"lora_name": "x", "lora_path": "/tmp"}).status_code == 403
    with httpx.Client(base_url=gateway[0].url) as anon:
        assert anon.get("/admin/adapters").status_code == 401


async def test_adapters_with_nan_or_disagreeing_ranks_are_refused_at_add(gateway, tmp_path):
    """Issue 29 H1/H2: both were accepted with 201 (and the NaN one became stable)."""
    from tests.adapters.test_registry import poisoned, rank_mismatched

    src = gateway[3]
    nan = poisoned(src, tmp_path / "diverged")
    mismatch, key = rank_mismatched(src, tmp_path / "mismatch")
    with client(gateway) as c:
        r = c.post("/admin/adapters", json={"path": str(nan), "name": "diverged"})
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["code"] == "non_finite_weights" and str(nan / "adapter_model.safetensors") in error["message"]
        assert "NaN" in error["message"]
        r = c.post("/admin/adapters", json={"path": str(mismatch), "name": "mismatch"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "rank_mismatch"
        assert key in r.json()["error"]["message"]
        names = [a["name"] for a in c.get("/admin/adapters").json()["data"]]
        assert "diverged" not in names and "mismatch" not in names


async def test_vllm_lora_endpoints_behave_like_vllm(gateway):
    src = str(gateway[3])
    with client(gateway) as c:
        r = c.post("/v1/load_lora_adapter", json={"lora_name": "manual", "lora_path": src})
        assert r.status_code == 200 and r.text == "Success: LoRA adapter 'manual' added successfully."
        r = c.post("/v1/load_lora_adapter", json={"lora_name": "manual", "lora_path": src})
        assert r.status_code == 400 and "has already been loaded" in r.json()["error"]["message"]
        r = c.post("/v1/load_lora_adapter", json={"lora_name": "manual"})
        assert r.status_code == 400 and "must be provided" in r.json()["error"]["message"]
        r = c.post("/v1/unload_lora_adapter", json={"lora_name": "manual"})
        assert r.status_code == 200 and r.text == "Success: LoRA adapter 'manual' removed successfully."
        r = c.post("/v1/unload_lora_adapter", json={"lora_name": "manual"})
        assert r.status_code == 404 and "cannot be found" in r.json()["error"]["message"]


async def test_vllm_engine_drives_a_carafe_gateway(gateway, tmp_path):
    server, admin, _, src = gateway
    eng = VLLMEngine(EngineConfig(backend="vllm", vllm_url=server.url, vllm_api_key=admin))
    await eng.start()
    try:
        assert eng.ready and eng.model_id == BASE_ID and eng.model_digest == DIGEST
        chunks = [c async for c in eng.chat([ChatMessage("user", "hi")], SamplingParams(max_tokens=8))]
        assert "".join(c.text for c in chunks) and chunks[-1].finish_reason in ("stop", "length")
        info = await eng.load_adapter("remote", str(src))
        assert info.name == "remote" and "remote" in [a.name for a in eng.adapters()]
        assert (await eng.load_adapter("remote", str(src))).path == str(src)  # idempotent
        with pytest.raises(AdapterConflict):
            await eng.load_adapter("remote", str(tmp_path))
        with pytest.raises(InvalidAdapter):
            await eng.load_adapter("ghost", str(tmp_path / "missing"))
        assert "ghost" not in [a.name for a in eng.adapters()]
        await eng.unload_adapter("remote")
    finally:
        await eng.close()


async def test_chat_names_the_adapter_version_and_follows_a_promote(gateway):
    _, _, user, src = gateway
    with client(gateway) as c:
        c.post("/admin/adapters", json={"path": str(src), "name": "swap"})
        c.post("/admin/adapters", json={"path": str(src), "name": "swap"})
    body = {"model": "swap", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    with client(gateway, user) as c:
        r = c.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["model"] == "swap@1" and r.headers["x-carafe-adapter"] == "swap@1"
        assert c.post("/v1/chat/completions", json={**body, "model": "swap@7"}).status_code == 404
        with client(gateway) as admin:
            admin.post("/admin/adapters/swap/promote", json={"version": 2})
        assert c.post("/v1/chat/completions", json=body).json()["model"] == "swap@2"

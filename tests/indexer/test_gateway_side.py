"""The gateway's side of retrieval: Principal → scope, citations, the admin index API
and the `carafe index` CLI, over a real index of a dozen documents of examples/policies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from carafe.adapters.local import LocalEngine
from carafe.config import CarafeConfig
from carafe.gateway.admin_index import router
from carafe.gateway.auth import KeyStore, Principal
from carafe.gateway.errors import install_error_handlers
from carafe.gateway.retrieval import Retriever, citations, scope_of
from carafe.gateway.state import build_state
from carafe.indexer.config import SourceConfig
from carafe.indexer.sources import Source


def _config(tmp_path, small_policies) -> CarafeConfig:
    return CarafeConfig(
        data_dir=tmp_path / "data", indexer={"sources": [{"name": "policies", "path": str(small_policies)}]}
    )


async def test_retriever_maps_principal_and_cites_what_it_returns(make_index, real_embedder, small_policies, tmp_path):
    index = make_index(SourceConfig(name="policies", path=small_policies))
    index.sync()
    retriever = Retriever(_config(tmp_path, small_policies), real_embedder, index=index)
    engineer = Principal(user="eve", groups=("engineering",))
    passages = await retriever.retrieve("What are the salary bands for engineers?", engineer, top_k=5)
    docs, _ = Source(SourceConfig(name="policies", path=small_policies)).scan()
    readable = {d.doc_id for d in docs if scope_of(engineer).may_read(d.acl)}
    assert passages and {p.doc_id for p in passages} <= readable
    assert "policies:hr/salary-bands-2026.md" not in readable
    hr = Principal(user="hana", groups=("hr",))
    [top, *_] = await retriever.retrieve("What are the salary bands for engineers?", hr, top_k=3)
    assert top.doc_id == "policies:hr/salary-bands-2026.md"
    cites = citations([top])
    assert cites == [
        {"index": 1, "doc_id": top.doc_id, "title": "Salary Bands 2026", "version": "2026.1", "chunk": top.chunk}
    ]
    assert await retriever.retrieve("   ", hr) == []


async def test_retriever_without_sources_returns_nothing_and_creates_nothing(real_embedder, tmp_path):
    retriever = Retriever(CarafeConfig(data_dir=tmp_path / "data"), real_embedder)
    assert await retriever.retrieve("anything", Principal(user="u", roles=("admin",))) == []
    assert not (tmp_path / "data").exists()


@pytest.fixture
def admin_client(make_index, real_embedder, small_policies, tmp_path):
    config = _config(tmp_path, small_policies)
    keys = KeyStore.open(config.data_dir)
    admin_key, _ = keys.create("root", admin=True)
    user_key, _ = keys.create("bob", groups=["employees"])
    index = make_index(SourceConfig(name="policies", path=small_policies))
    # no model: the admin index API needs the keys and the retriever only
    state = build_state(
        config,
        engine=LocalEngine(config.adapters.engine, models_dir=config.models_dir),
        embedder=real_embedder,
        retriever=Retriever(config, real_embedder, index=index),
    )
    state.keys = keys
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(router)
    app.state.carafe = state
    with TestClient(app) as client:
        yield client, {"Authorization": f"Bearer {admin_key}"}, {"Authorization": f"Bearer {user_key}"}


def test_admin_index_api_sync_report_stats(admin_client):
    client, admin, user = admin_client
    assert client.post("/admin/index/sync", headers=user).status_code == 403
    assert client.get("/admin/index/report", headers=admin).status_code == 404
    from carafe.gateway.telemetry.config import TelemetryConfig
    from carafe.gateway.telemetry.setup import setup_telemetry

    tel = setup_telemetry(TelemetryConfig(), data_dir=Path("unused"), in_memory=True)
    try:
        synced = client.post("/admin/index/sync", headers=admin)
        tel.force_flush()
        spans = {s.name: s for s in tel.memory.get_finished_spans()}
    finally:
        tel.shutdown()
    assert synced.status_code == 200, synced.text
    # an admin action, traced with who did it, and the sync run inside it
    assert spans["carafe.admin.index.sync"].attributes["carafe.principal"] == "root"
    assert spans["carafe.index.sync"].parent.span_id == spans["carafe.admin.index.sync"].context.span_id
    added = synced.json()["counts"]["added"]
    assert added == 8
    report = client.get("/admin/index/report", headers=admin).json()
    assert report["counts"]["added"] == added
    stats = client.get("/admin/index/stats", headers=admin).json()
    assert stats["documents"] == added and stats["chunks"] >= added
    missing = client.post("/admin/index/sync", headers=admin, json={"source": "nope"})
    assert missing.status_code == 404 and "no source named 'nope'" in missing.json()["error"]["message"]


def test_cli_sync_search_as_user_and_stats(small_policies, tmp_path):
    from carafe.cli.index import app

    (tmp_path / "carafe.yaml").write_text(
        f"data_dir: {tmp_path / 'data'}\nindexer:\n  sources:\n    - name: policies\n      path: {small_policies}\n"
    )
    KeyStore.open(tmp_path / "data").create("fred", groups=["finance"])
    runner = CliRunner()
    cfg = ["--config", str(tmp_path / "carafe.yaml")]
    synced = runner.invoke(app, ["sync", "--json", *cfg])
    assert synced.exit_code == 0, synced.output
    assert json.loads(synced.stdout)["counts"]["added"] == 8
    # the sync run is traced for audit (embedded default: the JSON-lines trace file)
    spans = [json.loads(line) for line in (tmp_path / "data" / "traces" / "traces.jsonl").read_text().splitlines()]
    run = next(s for s in spans if s["name"] == "carafe.index.sync")
    assert run["attributes"]["carafe.index.added"] == 8 and run["attributes"]["carafe.index.failed"] == 0
    unknown = runner.invoke(app, ["search", "price list", "--as", "mallory", *cfg])
    assert unknown.exit_code != 0 and "unknown user 'mallory'" in unknown.output
    found = runner.invoke(
        app, ["search", "Enterprise plan price per user", "--as", "fred", "--top-k", "3", "--json", *cfg]
    )
    assert found.exit_code == 0, found.output
    result = json.loads(found.stdout)
    assert result["passages"][0]["doc_id"] == "policies:finance/price-list-2026.md"
    assert all(not p["doc_id"].startswith(("policies:hr/", "policies:legal/")) for p in result["passages"])
    stats = runner.invoke(app, ["stats", "--json", *cfg])
    assert stats.exit_code == 0 and json.loads(stats.stdout)["documents"] == 8

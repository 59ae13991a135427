"""Issue 29 L4 and M3: what the gateway shows about its host and its state.

- ``/v1/models`` showed a runtime-loaded adapter's host path to every key;
- ``/metrics`` listed adapter names and versions to anyone (no auth);
- a second gateway on the same data_dir could not open the embedded index, still
  answered ``ready``, and its 409 named the index path.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from carafe.config import load_config
from carafe.gateway.app import create_app
from tests.conftest import MODELS_CACHE
from tests.gateway.conftest import BASE_MODEL, Gateway, RagGateway
from tests.servers import serve_in_thread


def test_models_hide_host_paths_from_non_admins(gateway: Gateway, tmp_path) -> None:
    from tests.lora import make_lora

    path = make_lora(tmp_path / "exposed", seed=3)
    r = httpx.post(
        f"{gateway.url}/v1/load_lora_adapter",
        json={"lora_name": "path-probe", "lora_path": str(path)},
        headers={"Authorization": f"Bearer {gateway.admin_key}"},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    try:
        user = httpx.get(f"{gateway.url}/v1/models", headers={"Authorization": f"Bearer {gateway.user_key}"})
        assert str(tmp_path) not in user.text
        card = next(c for c in user.json()["data"] if c["id"] == "path-probe")
        assert card["root"] == "path-probe" and card["parent"] == BASE_MODEL
        one = httpx.get(f"{gateway.url}/v1/models/path-probe", headers={"Authorization": f"Bearer {gateway.user_key}"})
        assert str(tmp_path) not in one.text
        admin = httpx.get(f"{gateway.url}/v1/models", headers={"Authorization": f"Bearer {gateway.admin_key}"})
        assert str(path) in admin.text  # operators still see where it came from
    finally:
        httpx.post(
            f"{gateway.url}/v1/unload_lora_adapter",
            json={"lora_name": "path-probe"},
            headers={"Authorization": f"Bearer {gateway.admin_key}"},
            timeout=60,
        )


def test_metrics_need_an_admin_key_or_the_metrics_token(gateway: Gateway) -> None:
    gateway.client().chat.completions.create(
        model=BASE_MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    anonymous = httpx.get(f"{gateway.url}/metrics")
    assert anonymous.status_code == 401 and "carafe_" not in anonymous.text
    user = httpx.get(f"{gateway.url}/metrics", headers={"Authorization": f"Bearer {gateway.user_key}"})
    assert user.status_code == 403 and "adapter=" not in user.text
    admin = httpx.get(f"{gateway.url}/metrics", headers={"Authorization": f"Bearer {gateway.admin_key}"})
    assert admin.status_code == 200 and "carafe_requests_total" in admin.text


def test_metrics_token_lets_a_scraper_in(tmp_path) -> None:
    cfg = load_config(None, data_dir=tmp_path, telemetry={"metrics_token": "scrape-me-7"})
    app = create_app(cfg)
    with_token = _get(app, "/metrics", "scrape-me-7")
    assert with_token.status_code == 200
    assert _get(app, "/metrics", "wrong").status_code == 401


def _get(app, path: str, key: str) -> httpx.Response:
    import asyncio

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return await c.get(path, headers={"Authorization": f"Bearer {key}"})

    return asyncio.run(go())


def test_responses_record_content_keeps_retrieved_passages_out(rag: RagGateway, telemetry, monkeypatch) -> None:
    """Issue 29: /v1/responses recorded the prompt *with* the retrieved passages when content recording was on."""
    from tests.gateway.telemetry.conftest import read_trace_file
    from tests.gateway.test_retrieval_e2e import SECRET

    monkeypatch.setattr(rag.server.app.state.carafe.config.telemetry, "record_content", True)
    question = "What is the bonus approval code?"
    r = httpx.post(
        f"{rag.url}/v1/responses",
        json={"model": BASE_MODEL, "input": question, "max_output_tokens": 2},
        headers={"Authorization": f"Bearer {rag.keys['hana']}"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    assert any(c["doc_id"].endswith("hr/bonus.md") for c in r.json()["citations"])  # the passage was retrieved
    recorded = [
        s["attributes"]["carafe.prompt.content"]
        for s in read_trace_file(telemetry)
        if "carafe.prompt.content" in s["attributes"]
    ]
    assert recorded and all(question in text for text in recorded)
    assert not any(SECRET["hr/bonus.md"] in text for text in recorded)


@pytest.fixture(scope="module")
def second(rag: RagGateway) -> Iterator[RagGateway]:
    """Another gateway on the rag gateway's data_dir: its embedded index is held by the first."""
    data = rag.docs.parent / "data"
    cfg = load_config(
        None,
        data_dir=data,
        models_cache=MODELS_CACHE,
        indexer={"sources": [{"name": "docs", "path": str(rag.docs)}]},
        routing={"retrieval": {"enabled": True, "top_k": 5}},
    )
    app = create_app(cfg)
    server = serve_in_thread(app)
    try:
        yield RagGateway(server, rag.keys, rag.docs)
    finally:
        server.stop()


def test_a_gateway_that_cannot_open_the_index_is_not_ready(rag: RagGateway, second: RagGateway) -> None:
    assert httpx.get(f"{rag.url}/readyz").json()["checks"]["index"] is True
    ready = httpx.get(f"{second.url}/readyz")
    assert ready.status_code == 503, ready.text
    assert "index" in ready.json()["error"]["message"]
    asked = httpx.post(
        f"{second.url}/v1/chat/completions",
        json={"model": BASE_MODEL, "messages": [{"role": "user", "content": "What is the bonus code?"}]},
        headers={"Authorization": f"Bearer {rag.keys['hana']}"},
        timeout=60,
    )
    assert asked.status_code == 503 and "retry-after" in asked.headers
    data_dir = str(rag.docs.parent)
    assert data_dir not in asked.text and "/index" not in asked.text
    assert asked.json()["error"]["code"] == "index_unavailable"

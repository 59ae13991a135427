"""Prometheus metrics: the helpers the gateway calls and GET /metrics."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from carafe.gateway.telemetry import metrics
from carafe.gateway.telemetry.attributes import content_attributes, sha256_hex

EXPECTED = {
    "carafe_requests",
    "carafe_request_duration_seconds",
    "carafe_time_to_first_token_seconds",
    "carafe_tokens",
    "carafe_guard_actions",
    "carafe_retrieval_duration_seconds",
    "carafe_retrieval_hits",
    "carafe_adapters_resident",
    "carafe_engine_queue_depth",
    "carafe_index_sync",
    "carafe_telemetry_spans_dropped",
}


def _sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


async def test_metrics_endpoint_serves_every_family(client: httpx.AsyncClient) -> None:
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    names = {f.name for f in text_string_to_metric_families(r.text)}
    assert names >= EXPECTED


async def test_requests_are_counted_by_route_adapter_and_status(client: httpx.AsyncClient) -> None:
    labels = {"route": "/v1/chat/completions", "adapter": "payroll@7", "status": "200"}
    before = _sample((await client.get("/metrics")).text, "carafe_requests_total", **labels)
    for _ in range(3):
        await client.post("/v1/chat/completions", json={"adapter": "payroll@7"})
    text = (await client.get("/metrics")).text
    assert _sample(text, "carafe_requests_total", **labels) == before + 3
    hist = _sample(text, "carafe_request_duration_seconds_count", route="/v1/chat/completions", adapter="payroll@7")
    assert hist >= 3
    # unknown paths share one label value (no unbounded cardinality)
    await client.get("/v1/unknown/abc-123")
    text = (await client.get("/metrics")).text
    assert _sample(text, "carafe_requests_total", route="unmatched", status="404") >= 1
    assert "abc-123" not in text


def test_helpers_record_tokens_ttft_guards_retrieval_and_sync() -> None:
    def value(name: str, **labels: str) -> float:
        return _sample(metrics.render()[0].decode(), name, **labels)

    tokens_in = value("carafe_tokens_total", direction="in", adapter="base")
    ttft = value("carafe_time_to_first_token_seconds_count", adapter="hr@2")
    blocks = value("carafe_guard_actions_total", check="injection", action="block")
    hits = value("carafe_retrieval_hits_total")
    syncs = value("carafe_index_sync_total", result="ok")

    metrics.record_tokens(None, input_tokens=12, output_tokens=5)
    metrics.observe_ttft("hr@2", 0.03)
    metrics.record_guard("injection", "block")
    metrics.record_retrieval(0.004, hits=4)
    metrics.record_index_sync("ok")

    assert value("carafe_tokens_total", direction="in", adapter="base") == tokens_in + 12
    assert value("carafe_time_to_first_token_seconds_count", adapter="hr@2") == ttft + 1
    assert value("carafe_guard_actions_total", check="injection", action="block") == blocks + 1
    assert value("carafe_retrieval_hits_total") == hits + 4
    assert value("carafe_index_sync_total", result="ok") == syncs + 1


def test_a_broken_metric_call_never_raises() -> None:
    metrics.record_request("/x", None, 200, float("nan"))
    metrics.record_tokens("a", input_tokens=-5)  # a negative counter increment is refused inside
    metrics.observe_ttft(None, "soon")  # type: ignore[arg-type]


def test_engine_gauges_read_the_engine_at_scrape_time() -> None:
    class Engine:
        queue = 3

        def adapters(self) -> list[str]:
            return ["a", "b"]

        def stats(self) -> dict[str, int]:
            return {"queue_depth": self.queue}

    engine = Engine()
    metrics.watch_engine(engine)
    text = metrics.render()[0].decode()
    assert _sample(text, "carafe_adapters_resident") == 2
    assert _sample(text, "carafe_engine_queue_depth") == 3
    engine.queue = 0
    assert _sample(metrics.render()[0].decode(), "carafe_engine_queue_depth") == 0


def test_content_attributes_hash_by_default_and_text_only_on_opt_in() -> None:
    prompt = "What is Bob's salary?"
    assert content_attributes(prompt, False) == {"carafe.prompt.sha256": sha256_hex(prompt)}
    opted = content_attributes(prompt, True, kind="completion")
    assert opted == {"carafe.completion.sha256": sha256_hex(prompt), "carafe.completion.content": prompt}
    assert len(sha256_hex(prompt)) == 64

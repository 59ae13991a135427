"""The real gateway (real model, real uvicorn, openai SDK) traced to a file: trace id
header, one tree per request, no API key anywhere, auditable, metrics counted."""

from __future__ import annotations

import httpx

from carafe.gateway.telemetry import audit
from carafe.gateway.telemetry.middleware import TRACE_ID_HEADER
from carafe.gateway.telemetry.setup import Telemetry
from tests.gateway.conftest import BASE_MODEL, Gateway
from tests.gateway.telemetry.conftest import read_trace_file


def test_chat_request_is_traced_audited_and_counted(gateway: Gateway, telemetry: Telemetry) -> None:
    client = gateway.client()
    raw = client.chat.completions.with_raw_response.create(
        model=BASE_MODEL,
        messages=[{"role": "user", "content": "Say hi"}],
        max_tokens=4,
        seed=1,
    )
    completion = raw.parse()
    trace_id = raw.headers[TRACE_ID_HEADER]
    assert len(trace_id) == 32 and completion.usage is not None
    stream = client.chat.completions.create(
        model=BASE_MODEL,
        messages=[{"role": "user", "content": "Count"}],
        max_tokens=3,
        stream=True,
    )
    assert any(c.choices and c.choices[0].delta.content for c in stream)
    httpx.get(f"{gateway.url}/v1/models", headers={"Authorization": f"Bearer {gateway.admin_key}"})

    spans = read_trace_file(telemetry)
    text = telemetry.trace_file.read_text()
    for key in (gateway.user_key, gateway.admin_key):
        assert key not in text
    ours = [s for s in spans if s["trace_id"] == trace_id]
    root = next(s for s in ours if s["kind"] == "SERVER")
    assert root["attributes"]["http.response.status_code"] == 200
    assert root["attributes"]["url.path"] == "/v1/chat/completions"
    ids = {s["span_id"] for s in ours}
    assert all(s["parent_id"] in ids for s in ours if s is not root)

    rec = next(r for r in audit.query(telemetry.trace_file, user="alice") if r.trace_id == trace_id)
    assert rec.input_tokens == completion.usage.prompt_tokens
    assert rec.output_tokens == completion.usage.completion_tokens
    assert rec.prompt_sha256 is not None and "Say hi" not in text  # content is hashed, not recorded

    metrics_text = httpx.get(f"{gateway.url}/metrics", headers={"Authorization": f"Bearer {gateway.admin_key}"}).text
    assert 'carafe_requests_total{adapter="' in metrics_text
    assert 'route="/v1/chat/completions",status="200"' in metrics_text
    assert 'carafe_tokens_total{adapter="' in metrics_text

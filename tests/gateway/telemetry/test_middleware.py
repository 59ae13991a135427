"""The root SERVER span: the server's own trace (a caller's traceparent only a link), trace id
returned, no secrets, streaming intact."""

from __future__ import annotations

import httpx

from carafe.gateway.telemetry.middleware import TRACE_ID_HEADER
from carafe.gateway.telemetry.setup import Telemetry
from tests.gateway.telemetry.conftest import build_app, read_trace_file

SECRET = "sk-carafe-THIS-KEY-MUST-NEVER-BE-RECORDED-0123456789"


async def test_trace_id_header_matches_the_recorded_trace(client: httpx.AsyncClient, telemetry: Telemetry) -> None:
    r = await client.post("/v1/chat/completions", json={"user": "alice"}, headers={"Authorization": f"Bearer {SECRET}"})
    assert r.status_code == 200
    trace_id = r.headers[TRACE_ID_HEADER]
    assert r.headers["traceparent"].split("-")[1] == trace_id
    spans = read_trace_file(telemetry)
    ours = [s for s in spans if s["trace_id"] == trace_id]
    names = {s["name"] for s in ours}
    assert {"POST /v1/chat/completions", "carafe.route", "carafe.guard.input", "carafe.retrieve"} <= names
    root = next(s for s in ours if s["kind"] == "SERVER")
    assert root["parent_id"] is None
    assert root["attributes"]["http.request.method"] == "POST"
    assert root["attributes"]["url.path"] == "/v1/chat/completions"
    assert root["attributes"]["http.response.status_code"] == 200
    assert root["resource"]["service.name"] == "carafe-gateway"
    assert any(s["attributes"].get("carafe.principal") == "alice" for s in ours)
    ids = {s["span_id"] for s in ours}
    assert all(s["parent_id"] in ids for s in ours if s is not root)  # one tree under the SERVER span


async def test_api_key_never_reaches_the_trace_file(client: httpx.AsyncClient, telemetry: Telemetry) -> None:
    for _ in range(3):
        await client.post(
            "/v1/chat/completions",
            json={},
            headers={"Authorization": f"Bearer {SECRET}", "x-api-key": SECRET, "cookie": f"s={SECRET}"},
        )
    read_trace_file(telemetry)
    text = telemetry.trace_file.read_text()
    assert text.count('"SERVER"') == 3
    assert SECRET not in text
    assert "Bearer" not in text


async def test_incoming_traceparent_is_a_link_not_the_parent(client: httpx.AsyncClient, telemetry: Telemetry) -> None:
    parent_trace, parent_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    r = await client.post(
        "/v1/chat/completions", json={}, headers={"traceparent": f"00-{parent_trace}-{parent_span}-01"}
    )
    assert r.headers[TRACE_ID_HEADER] != parent_trace
    root = next(s for s in read_trace_file(telemetry) if s["kind"] == "SERVER")
    assert root["trace_id"] == r.headers[TRACE_ID_HEADER]
    assert root["parent_id"] is None
    assert {"trace_id": parent_trace, "span_id": parent_span} in root["links"]


async def test_malformed_traceparent_starts_a_new_trace(client: httpx.AsyncClient, telemetry: Telemetry) -> None:
    r = await client.post("/v1/chat/completions", json={}, headers={"traceparent": "00-zzzz-not-a-trace"})
    assert r.status_code == 200
    assert len(r.headers[TRACE_ID_HEADER]) == 32
    assert r.headers[TRACE_ID_HEADER] != "0" * 32


async def test_streamed_response_is_untouched_and_span_covers_it(
    client: httpx.AsyncClient, telemetry: Telemetry
) -> None:
    async with client.stream("POST", "/v1/chat/completions", json={"stream": True}) as r:
        body = b"".join([chunk async for chunk in r.aiter_bytes()])
    assert body == b"data: 0\n\ndata: 1\n\ndata: 2\n\ndata: [DONE]\n\n"
    assert r.headers["content-type"].startswith("text/event-stream")
    root = next(s for s in read_trace_file(telemetry) if s["kind"] == "SERVER")
    assert root["duration_ms"] >= 30  # three 10 ms chunks happen inside the request span


async def test_server_error_marks_the_span(client: httpx.AsyncClient, telemetry: Telemetry) -> None:
    r = await client.post("/v1/chat/completions", json={"fail": True})
    assert r.status_code == 500
    root = next(s for s in read_trace_file(telemetry) if s["kind"] == "SERVER")
    assert root["status"]["code"] == "ERROR"
    assert root["attributes"]["http.response.status_code"] == 500
    assert root["attributes"].get("error.type") == "RuntimeError" or any(
        e["name"] == "exception" for e in root["events"]
    )


async def test_unknown_path_is_traced_without_a_route_name(client: httpx.AsyncClient, telemetry: Telemetry) -> None:
    r = await client.get("/nope/123")
    assert r.status_code == 404
    root = next(s for s in read_trace_file(telemetry) if s["kind"] == "SERVER")
    assert root["name"] == "GET"
    assert root["attributes"]["http.response.status_code"] == 404


async def test_an_outer_framework_span_is_linked_not_adopted(telemetry: Telemetry) -> None:
    app = build_app(native=True)  # FastAPI's own SERVER span honours traceparent; ours must not
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        r = await c.post("/v1/chat/completions", json={}, headers={"traceparent": f"00-{'ab' * 16}-{'cd' * 8}-00"})
    ours = [s for s in read_trace_file(telemetry) if s["trace_id"] == r.headers[TRACE_ID_HEADER]]
    root = next(s for s in ours if s["kind"] == "SERVER" and s["parent_id"] is None)
    assert root["trace_id"] != "ab" * 16
    assert any(s["attributes"].get("carafe.principal") == "alice" for s in ours)
    assert {"trace_id": "ab" * 16, "span_id": "cd" * 8} in root["links"]

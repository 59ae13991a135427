"""Telemetry fixtures: the real OTel SDK exporting to a JSON-lines file in tmp_path,
and a small model-free FastAPI app behind the real TraceMiddleware."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Header
from fastapi.responses import StreamingResponse
from opentelemetry import trace

from carafe.gateway.telemetry import routes
from carafe.gateway.telemetry.config import TelemetryConfig
from carafe.gateway.telemetry.middleware import TraceMiddleware
from carafe.gateway.telemetry.setup import Telemetry, setup_telemetry

tracer = trace.get_tracer("tests.telemetry")


@pytest.fixture
def telemetry(tmp_path: Path) -> Iterator[Telemetry]:
    cfg = TelemetryConfig(exporter="file", schedule_delay_ms=50)
    tel = setup_telemetry(cfg, data_dir=tmp_path)
    try:
        yield tel
    finally:
        tel.shutdown()


def read_trace_file(tel: Telemetry) -> list[dict[str, Any]]:
    assert tel.force_flush()
    assert tel.trace_file is not None
    if not tel.trace_file.exists():
        return []
    return [json.loads(line) for line in tel.trace_file.read_text().splitlines()]


def build_app(*, native: bool = False) -> FastAPI:
    """A gateway-shaped app: auth, route, retrieval and guard spans like the real request path.

    ``native``: FastAPI's own telemetry opens the SERVER span; otherwise TraceMiddleware does.
    """
    app = FastAPI() if native else FastAPI(telemetry={"tracing": False, "operation_spans": False})
    app.include_router(routes.router)

    @app.post("/v1/chat/completions")
    async def chat(body: dict[str, Any], authorization: str = Header("")) -> Any:
        user = body.get("user", "alice")
        span = trace.get_current_span()
        span.set_attribute("gen_ai.operation.name", "chat")
        span.set_attribute("carafe.principal", user)
        with tracer.start_as_current_span("carafe.route") as s:
            s.set_attribute("gen_ai.request.model", body.get("model", "base"))
            s.set_attribute("carafe.adapter.version", body.get("adapter", "hr-helper@3"))
        with tracer.start_as_current_span("carafe.guard.input") as s:
            s.set_attribute("carafe.guard.pii.action", body.get("pii", "allow"))
        with tracer.start_as_current_span("carafe.retrieve") as s:
            s.set_attribute("carafe.retrieval.doc_ids", body.get("docs", []))
        if body.get("fail"):
            raise RuntimeError("engine exploded")
        headers = {"x-carafe-adapter": body.get("adapter", "hr-helper@3")}
        if body.get("stream"):

            async def chunks() -> AsyncIterator[bytes]:
                for i in range(3):
                    await asyncio.sleep(0.01)
                    yield f"data: {i}\n\n".encode()
                yield b"data: [DONE]\n\n"

            return StreamingResponse(chunks(), media_type="text/event-stream", headers=headers)
        from fastapi.responses import JSONResponse

        return JSONResponse({"ok": True}, headers=headers)

    app.add_middleware(TraceMiddleware)
    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = build_app(native=False)  # as create_app builds the gateway
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c

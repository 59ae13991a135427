"""The FastAPI application: ``create_app(config)`` builds it, uvicorn serves it."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request

from carafe import __version__
from carafe.adapters.engine import Engine
from carafe.config import CarafeConfig
from carafe.gateway import (
    admin_adapters,
    admin_index,
    admin_keys,
    console,
    scim,
    serving_chat,
    serving_completion,
    serving_embeddings,
    serving_models,
    serving_responses,
)
from carafe.gateway.errors import error_response, install_error_handlers
from carafe.gateway.middleware import RequestLimits
from carafe.gateway.state import AppState, build_state
from carafe.gateway.telemetry import routes as telemetry_routes
from carafe.gateway.telemetry.middleware import TraceMiddleware
from carafe.indexer.embedding import Embedder

log = logging.getLogger("carafe.gateway")


def create_app(config: CarafeConfig, *, engine: Engine | None = None, embedder: Embedder | None = None) -> FastAPI:
    """Build the gateway. ``engine``/``embedder`` may be passed in (tests share one)."""
    state = build_state(config, engine=engine, embedder=embedder)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await state.start()
        try:
            yield
        finally:
            await state.close()

    app = FastAPI(
        title="Carafe gateway",
        version=__version__,
        description="OpenAI-compatible gateway: LoRA adapters, permission-aware retrieval, guardrails, audit traces.",
        lifespan=lifespan,
        # the request's root span comes from TraceMiddleware/FastAPI; per-dependency
        # operation spans would only cost time (see bench/overhead.py)
        telemetry={"operation_spans": False},
    )
    app.state.carafe = state
    install_error_handlers(app)
    for module in (
        serving_chat,
        serving_completion,
        serving_responses,
        serving_models,
        serving_embeddings,
        admin_keys,
        admin_adapters,
        admin_index,
        console,
        scim,
    ):
        app.include_router(module.router)
    if config.telemetry.metrics:
        app.include_router(telemetry_routes.router)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], response_model=None)
    async def readyz(request: Request) -> Any:
        """Readiness: the engine and the embedder are loaded and answer; the state
        database and the limit counters answer (or fail open, as configured)."""
        st: AppState = request.app.state.carafe
        shared, notes = await st.shared_state()
        checks = {**st.loaded, **shared}
        if all(checks.values()):
            return {"status": "ready", "model": st.engine.model_id, "checks": checks, "state": notes}
        failing = ", ".join(f"{k} ({notes[k]})" if k in notes else k for k, ok in checks.items() if not ok)
        return error_response(503, f"not ready: {failing}", "service_unavailable_error", code="not_ready")

    app.add_middleware(RequestLimits, max_body_bytes=config.server.max_body_bytes)
    app.add_middleware(TraceMiddleware, record_metrics=config.telemetry.metrics)
    return app

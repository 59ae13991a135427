"""The FastAPI application: ``create_app(config)`` builds it, uvicorn serves it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from carafe import __version__
from carafe.adapters.engine import Engine
from carafe.gateway import admin_keys, serving_chat, serving_completion, serving_embeddings, serving_models
from carafe.gateway.auth import KeyStore
from carafe.config import CarafeConfig
from carafe.gateway.errors import error_response, install_error_handlers
from carafe.gateway.middleware import RequestLimits
from carafe.gateway.ratelimit import RateLimiter
from carafe.gateway.state import AppState
from carafe.gateway import wiring

log = logging.getLogger("carafe.gateway")


def build_engine(config: CarafeConfig) -> Engine:
    if config.adapters.engine.backend == "vllm":
        from carafe.adapters.vllm import VLLMEngine

        return VLLMEngine(config.adapters.engine)
    from carafe.adapters.local import LocalEngine

    return LocalEngine(config.adapters.engine, models_dir=config.models_dir)


def create_app(config: CarafeConfig, *, engine: Engine | None = None, embedder: Any = None) -> FastAPI:
    """Build the gateway. ``engine``/``embedder`` may be passed in (tests share one)."""
    owns_engine = engine is None
    state = AppState(
        config=config,
        engine=engine if engine is not None else build_engine(config),
        keys=KeyStore(config.keys_file),
        limiter=RateLimiter(),
        embedder=embedder,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await state.engine.start()
        if state.embedder is None:
            from carafe.indexer.embedding import Embedder

            emb = config.indexer.embedding
            state.embedder = await asyncio.to_thread(Embedder.from_config, emb)
            if state.embedder.quantized:
                # int8 serves retrieval and guards; /v1/embeddings returns the model's own vectors
                state.api_embedder = await asyncio.to_thread(Embedder.from_config, emb, quantize=False)
        await wiring.attach(state)
        try:
            yield
        finally:
            await wiring.detach(state)
            if owns_engine:
                await state.engine.close()

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
    for module in (serving_chat, serving_completion, serving_models, serving_embeddings, admin_keys):
        app.include_router(module.router)
    wiring.include_routers(app)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], response_model=None)
    async def readyz(request: Request) -> Any:
        """Readiness: the engine and the embedder are loaded and answer."""
        st: AppState = request.app.state.carafe
        checks = {"engine": bool(st.engine.ready), "embedder": st.embedder is not None}
        if all(checks.values()):
            return {"status": "ready", "model": st.engine.model_id, "checks": checks}
        failing = ", ".join(k for k, ok in checks.items() if not ok)
        return error_response(503, f"not ready: {failing}", "service_unavailable_error", code="not_ready")

    app.add_middleware(RequestLimits, max_body_bytes=config.server.max_body_bytes)
    wiring.add_middleware(app, state)
    return app

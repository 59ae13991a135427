"""Plugging the optional capabilities (routing, retrieval, guards, telemetry and
the admin APIs) into a gateway app.

Each capability lives in its own module; a module that is not part of this build
is skipped, but a module that is present and fails to build fails the start-up
loudly — a gateway never starts silently without its guards or its ACL filter.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from typing import Any

from fastapi import FastAPI

from carafe.gateway.state import AppState

log = logging.getLogger("carafe.gateway")


def _optional(module: str) -> Any | None:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            return None
        raise


def include_routers(app: FastAPI) -> None:
    for name in ("carafe.gateway.serving_responses", "carafe.gateway.admin_adapters", "carafe.gateway.admin_index",
                 "carafe.gateway.telemetry.routes"):
        module = _optional(name)
        if module is not None:
            app.include_router(module.router)


def add_middleware(app: FastAPI, state: AppState) -> None:
    module = _optional("carafe.gateway.telemetry.middleware")
    if module is not None and hasattr(module, "TraceMiddleware"):
        app.add_middleware(module.TraceMiddleware)


async def attach(state: AppState) -> None:
    """Build router, retriever and guards from the config (at start-up)."""
    metrics = _optional("carafe.gateway.telemetry.metrics")
    if metrics is not None:
        state.extras["on_generation"] = metrics.on_generation
        state.extras["metrics"] = metrics
        metrics.watch_engine(state.engine)
    routing = _optional("carafe.gateway.routing.router")
    if routing is not None and hasattr(routing, "build_router"):
        state.router = routing.build_router(state.config, state.engine, embedder=state.embedder)
        await state.router.start()
    retrieval = _optional("carafe.gateway.retrieval")
    if retrieval is not None and state.retriever is None:
        state.retriever = retrieval.Retriever(state.config, state.embedder)
    guards = _optional("carafe.guards.pipeline")
    if guards is not None and state.guards is None:
        from carafe.guards import GuardPipeline

        enabled = getattr(state.config.guards, "enabled", True)
        if enabled:
            leak = getattr(state.retriever, "leak_index", None) if state.retriever is not None else None
            state.guards = GuardPipeline.from_config(state.config.guards, embedder=state.embedder, leak_index=leak)


async def detach(state: AppState) -> None:
    for part, method in ((state.router, "close"), (state.retriever, "close"), (state.guards, "aclose")):
        if part is not None and hasattr(part, method):
            with contextlib.suppress(Exception):
                result = getattr(part, method)()
                if hasattr(result, "__await__"):
                    await result

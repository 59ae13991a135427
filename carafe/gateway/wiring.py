"""Plugging the optional capabilities (routing, retrieval, guards, telemetry and
the admin APIs) into a gateway app when they are configured."""

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
    for name in ("carafe.gateway.admin_adapters", "carafe.gateway.admin_index"):
        module = _optional(name)
        if module is not None:
            app.include_router(module.router)


def add_middleware(app: FastAPI, state: AppState) -> None:
    pass


async def attach(state: AppState) -> None:
    """Build router, retriever and guards from the config (at start-up)."""


async def detach(state: AppState) -> None:
    for part in (state.router,):
        if part is not None and hasattr(part, "close"):
            with contextlib.suppress(Exception):
                await part.close()

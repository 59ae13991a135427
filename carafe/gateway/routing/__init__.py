"""Routing: from a request's ``model`` to an adapter version plus its policies.

Names are loaded on first use, so reading the config imports no router.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from carafe.gateway.routing.router import RetrievalPolicy, RouteDecision, Router, build_router, canary_bucket

__all__ = ["RetrievalPolicy", "RouteDecision", "Router", "build_router", "canary_bucket"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module("carafe.gateway.routing.router"), name)

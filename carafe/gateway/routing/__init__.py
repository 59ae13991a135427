"""Routing: from a request's ``model`` to an adapter version plus its policies.

Names are loaded on first use, so reading the config imports no router.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from carafe._lazy import lazy_getattr

if TYPE_CHECKING:
    from carafe.gateway.routing.router import RetrievalPolicy, RouteDecision, Router, build_router, canary_bucket

__all__ = ["RetrievalPolicy", "RouteDecision", "Router", "build_router", "canary_bucket"]

__getattr__ = lazy_getattr(__name__, dict.fromkeys(__all__, "carafe.gateway.routing.router"))

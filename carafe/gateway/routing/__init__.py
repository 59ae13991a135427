"""Routing: a request's `model` → adapter version + retrieval and guard policies."""

from carafe.gateway.routing.router import RetrievalPolicy, RouteDecision, Router, build_router, canary_bucket

__all__ = ["RetrievalPolicy", "RouteDecision", "Router", "build_router", "canary_bucket"]

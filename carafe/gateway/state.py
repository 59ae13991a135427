"""What one gateway process holds: built once at start-up, shared by requests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from carafe.adapters.engine import Engine
from carafe.gateway.auth import KeyStore
from carafe.config import CarafeConfig
from carafe.gateway.ratelimit import RateLimiter


@dataclass
class AppState:
    config: CarafeConfig
    engine: Engine
    keys: KeyStore
    limiter: RateLimiter
    embedder: Any = None  # carafe.indexer.embedding.Embedder, loaded at start (retrieval, guards, routing)
    api_embedder: Any = None  # what /v1/embeddings serves: full precision even when `embedder` is int8
    # Optional capabilities, plugged in when configured/built:
    registry: Any = None  # carafe.adapters.registry.Registry
    adapter_manager: Any = None  # resident-set manager / reconciler (adapters)
    router: Any = None  # carafe.gateway.routing.Router
    retriever: Any = None  # permission-filtered search (indexer)
    guards: Any = None  # carafe.guards pipeline
    telemetry: Any = None  # carafe.gateway.telemetry handle
    extras: dict[str, Any] = field(default_factory=dict)

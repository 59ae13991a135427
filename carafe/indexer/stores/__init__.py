"""Qdrant stores: embedded Qdrant Edge by default, a Qdrant server when ``qdrant.url`` is set."""

from __future__ import annotations

from pathlib import Path

from carafe.indexer.config import QdrantConfig
from carafe.indexer.stores.base import Hit, HybridQuery, Store, StoredChunk

__all__ = ["Hit", "HybridQuery", "Store", "StoredChunk", "open_store"]


def open_store(config: QdrantConfig, *, default_path: Path, dim: int) -> Store:
    """The store the config names: a server (``url``) or the embedded shard at ``path``."""
    if config.url:
        from carafe.indexer.stores.server import ServerStore

        return ServerStore.connect(config.url, config.collection, dim, api_key=config.api_key)
    from carafe.indexer.stores.edge import EdgeStore

    return EdgeStore(Path(config.path or default_path), dim)

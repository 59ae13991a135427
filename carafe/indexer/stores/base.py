"""The one small interface both Qdrant stores implement."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from carafe.indexer.acl import AccessScope
from carafe.indexer.sparse import SparseVector

DENSE = "dense"
SPARSE = "bm25"
KEYWORD_FIELDS = ("doc_id", "acl_groups", "acl_users", "source")


@dataclass(frozen=True)
class StoredChunk:
    """One point to write: a chunk with both vectors and its payload."""

    id: str
    dense: Sequence[float]
    sparse: SparseVector
    payload: dict[str, Any]


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HybridQuery:
    """A dense + sparse query fused with RRF, limited to what ``scope`` may read."""

    dense: Sequence[float]
    sparse: SparseVector
    scope: AccessScope
    limit: int = 4
    candidates: int = 40
    rrf_k: int = 60
    weights: tuple[float, float] = (1.0, 1.0)
    use_dense: bool = True
    use_sparse: bool = True
    complement: bool = False  # search what ``scope`` may NOT read (the leak guard); scores are raw then


def acl_terms(scope: AccessScope) -> tuple[list[str], list[str]] | None:
    """The (groups, users) the filter must match, or None for an unrestricted scope.

    Empty lists stay empty: an implementation turns them into *no* condition, never
    into a match-all; both empty means the scope may read nothing."""
    if scope.unrestricted:
        return None
    return sorted(scope.groups), [scope.user] if scope.user else []


@runtime_checkable
class Store(Protocol):
    """A Qdrant collection of document chunks, dense + sparse, with ACL payloads."""

    def upsert(self, chunks: Sequence[StoredChunk]) -> None: ...

    def delete(self, ids: Iterable[str]) -> None: ...

    def set_payload(self, ids: Sequence[str], payload: dict[str, Any]) -> None: ...

    def search(self, query: HybridQuery) -> list[Hit]: ...

    def doc_points(self) -> dict[str, set[str]]:
        """Every stored point id, grouped by its payload ``doc_id``."""
        ...

    def payloads(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]: ...

    def count(self) -> int: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...

"""The scale-out store: a Qdrant server or cluster through ``qdrant-client``.

Also runs on qdrant-client's local mode (``location=":memory:"`` or ``path=``), which
is how it is tested where no server can run."""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from qdrant_client import QdrantClient
from qdrant_client import models as qm

from carafe.indexer.errors import StoreUnavailable
from carafe.indexer.stores.base import DENSE, KEYWORD_FIELDS, SPARSE, Hit, HybridQuery, StoredChunk, acl_terms

_SCROLL = 1024


def _sparse(vector: Any) -> qm.SparseVector:
    return qm.SparseVector(indices=list(vector.indices), values=[float(v) for v in vector.values])


class ServerStore:
    """One collection in Qdrant, created on first use with dense + IDF-weighted sparse vectors."""

    def __init__(self, client: QdrantClient, collection: str, dim: int) -> None:
        self.client = client
        self.collection = collection
        try:
            if not client.collection_exists(collection):
                client.create_collection(
                    collection,
                    vectors_config={DENSE: qm.VectorParams(size=dim, distance=qm.Distance.COSINE)},
                    sparse_vectors_config={SPARSE: qm.SparseVectorParams(modifier=qm.Modifier.IDF)},
                )
                with warnings.catch_warnings():  # local mode warns that it ignores payload indexes
                    warnings.simplefilter("ignore", UserWarning)
                    for name in KEYWORD_FIELDS:
                        client.create_payload_index(collection, name, qm.PayloadSchemaType.KEYWORD)
        except Exception as exc:
            raise StoreUnavailable(f"cannot reach or prepare the Qdrant collection {collection!r}: {exc}") from exc

    @classmethod
    def connect(cls, url: str, collection: str, dim: int, *, api_key: str | None = None) -> ServerStore:
        if url.startswith(":memory:"):
            return cls(QdrantClient(location=":memory:"), collection, dim)
        return cls(QdrantClient(url=url, api_key=api_key), collection, dim)

    def upsert(self, chunks: Sequence[StoredChunk]) -> None:
        if chunks:
            points = [
                qm.PointStruct(
                    id=c.id, vector={DENSE: [float(x) for x in c.dense], SPARSE: _sparse(c.sparse)}, payload=c.payload
                )
                for c in chunks
            ]
            self.client.upsert(self.collection, points, wait=True)

    def delete(self, ids: Iterable[str]) -> None:
        ids = list(ids)
        if ids:
            self.client.delete(self.collection, qm.PointIdsList(points=ids), wait=True)

    def set_payload(self, ids: Sequence[str], payload: dict[str, Any]) -> None:
        if ids:
            self.client.set_payload(self.collection, payload, points=list(ids), wait=True)

    @staticmethod
    def _filter(query: HybridQuery) -> qm.Filter | None:
        terms = acl_terms(query.scope)
        if terms is None:
            return None
        groups, users = terms
        should: list[qm.Condition] = []
        if groups:
            should.append(qm.FieldCondition(key="acl_groups", match=qm.MatchAny(any=groups)))
        if users:
            should.append(qm.FieldCondition(key="acl_users", match=qm.MatchAny(any=users)))
        return qm.Filter(must_not=should) if query.complement else qm.Filter(should=should)

    def search(self, query: HybridQuery) -> list[Hit]:
        if query.complement and query.scope.unrestricted:
            return []  # nothing is hidden from an admin
        flt = self._filter(query)
        if flt is not None and not query.complement and not flt.should:
            return []  # nobody to match: never widen to match-all
        if query.complement:  # one dense ranking, raw cosine scores
            result = self.client.query_points(
                self.collection,
                query=[float(x) for x in query.dense],
                using=DENSE,
                query_filter=flt,
                limit=query.limit,
                with_payload=True,
            )
            return [Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in result.points]
        prefetch, weights = [], []
        if query.use_dense:
            prefetch.append(
                qm.Prefetch(query=[float(x) for x in query.dense], using=DENSE, limit=query.candidates, filter=flt)
            )
            weights.append(query.weights[0])
        if query.use_sparse and query.sparse.indices:
            prefetch.append(qm.Prefetch(query=_sparse(query.sparse), using=SPARSE, limit=query.candidates, filter=flt))
            weights.append(query.weights[1])
        if not prefetch:
            return []
        result = self.client.query_points(
            self.collection,
            prefetch=prefetch,
            query=qm.RrfQuery(rrf=qm.Rrf(k=query.rrf_k, weights=weights)),
            query_filter=flt,
            limit=query.limit,
            with_payload=True,
        )
        return [Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in result.points]

    def doc_points(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = defaultdict(set)
        offset = None
        while True:
            records, offset = self.client.scroll(
                self.collection, limit=_SCROLL, offset=offset, with_payload=["doc_id"], with_vectors=False
            )
            for r in records:
                out[str((r.payload or {}).get("doc_id", ""))].add(str(r.id))
            if offset is None:
                return dict(out)

    def payloads(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        if not ids:
            return {}
        return {
            str(r.id): dict(r.payload or {})
            for r in self.client.retrieve(self.collection, list(ids), with_payload=True)
        }

    def count(self) -> int:
        return int(self.client.count(self.collection, exact=True).count)

    def flush(self) -> None:
        """Writes already wait for the server to apply them."""

    def close(self) -> None:
        self.client.close()

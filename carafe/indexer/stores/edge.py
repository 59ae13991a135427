"""The embedded store: Qdrant Edge (``qdrant-edge-py``), the Qdrant engine in-process."""

from __future__ import annotations

import fcntl
import os
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from carafe.indexer.errors import StoreBusy, StoreUnavailable
from carafe.indexer.manifest import make_private
from carafe.indexer.stores.base import DENSE, KEYWORD_FIELDS, SPARSE, Hit, HybridQuery, StoredChunk, acl_terms

_SCROLL = 1024


def _sparse(vector: Any) -> qe.SparseVector:
    return qe.SparseVector(list(vector.indices), [float(v) for v in vector.values])


def _busy(path: Path) -> StoreBusy:
    return StoreBusy(
        f"the index at {path} is open in another process (a running gateway or sync); "
        "stop it, or use its admin API (POST /admin/index/sync)"
    )


class EdgeStore:
    """A Qdrant Edge shard at ``path`` (one process at a time; the WAL makes writes durable).

    The folder is the owner's alone (0700, files 0600), re-tightened on every flush since
    the engine creates segment files with the process umask."""

    def __init__(self, path: Path, dim: int) -> None:
        self.path = Path(path)
        self.dim = dim
        config = qe.EdgeConfig(
            vectors={DENSE: qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine)},
            sparse_vectors={SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
        )
        self._lock_fd = self._lock()
        try:
            self._shard = self._open(config)
        except BaseException:
            os.close(self._lock_fd)  # releases the lock
            raise
        make_private(self.path)  # what opening created (a fresh WAL segment)

    def _open(self, config: qe.EdgeConfig) -> qe.EdgeShard:
        """Load the shard at ``path``, or create it with its keyword indexes."""
        try:
            make_private(self.path)
            if (self.path / "wal").exists():
                return qe.EdgeShard.load(str(self.path))
            shard = qe.EdgeShard.create(str(self.path), config)
            for name in KEYWORD_FIELDS:
                shard.update(qe.UpdateOperation.create_field_index(name, qe.PayloadSchemaType.Keyword))
            return shard
        except Exception as exc:  # the binding raises plain Exceptions
            if "WouldBlock" in str(exc):  # a process that opened it without the lock file
                raise _busy(self.path) from exc
            raise StoreUnavailable(f"cannot open the Qdrant Edge index at {self.path}: {exc}") from exc

    def _lock(self) -> int:
        """Hold ``<index>.lock`` before the engine touches a file: a second process (or a second
        opener here) is refused without loading the shard, which could rewrite the files of the
        one serving it (its payload-index journals)."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _busy(self.path) from None
        return fd

    def upsert(self, chunks: Sequence[StoredChunk]) -> None:
        if not chunks:
            return
        points = [
            qe.Point(c.id, {DENSE: [float(x) for x in c.dense], SPARSE: _sparse(c.sparse)}, c.payload) for c in chunks
        ]
        self._shard.update(qe.UpdateOperation.upsert_points(points))

    def delete(self, ids: Iterable[str]) -> None:
        ids = list(ids)
        if ids:
            self._shard.update(qe.UpdateOperation.delete_points(list[int | uuid.UUID | str](ids)))

    def set_payload(self, ids: Sequence[str], payload: dict[str, Any]) -> None:
        if ids:
            self._shard.update(qe.UpdateOperation.set_payload(list(ids), payload))

    @staticmethod
    def _filter(query: HybridQuery) -> qe.Filter | None:
        terms = acl_terms(query.scope)
        if terms is None:
            return None
        groups, users = terms
        should: list[Any] = []
        if groups:
            should.append(qe.FieldCondition(key="acl_groups", match=qe.MatchAny(groups)))
        if users:
            should.append(qe.FieldCondition(key="acl_users", match=qe.MatchAny(users)))
        return qe.Filter(must_not=should) if query.complement else qe.Filter(should=should)

    def search(self, query: HybridQuery) -> list[Hit]:
        if query.complement and query.scope.unrestricted:
            return []  # nothing is hidden from an admin
        flt = self._filter(query)
        if flt is not None and not query.complement and not flt.should:
            return []  # nobody to match: never widen to match-all
        if query.complement:  # one dense ranking, raw cosine scores
            request = qe.QueryRequest(
                limit=query.limit,
                query=qe.Query.Nearest([float(x) for x in query.dense], using=DENSE),
                filter=flt,
                with_payload=True,
            )
            return [Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in self._shard.query(request)]
        prefetches = []
        weights = []
        if query.use_dense:
            prefetches.append(
                qe.Prefetch(
                    limit=query.candidates,
                    query=qe.Query.Nearest([float(x) for x in query.dense], using=DENSE),
                    filter=flt,
                )
            )
            weights.append(query.weights[0])
        if query.use_sparse and query.sparse.indices:
            prefetches.append(
                qe.Prefetch(
                    limit=query.candidates, query=qe.Query.Nearest(_sparse(query.sparse), using=SPARSE), filter=flt
                )
            )
            weights.append(query.weights[1])
        if not prefetches:
            return []
        request = qe.QueryRequest(
            limit=query.limit,
            query=qe.Fusion.Rrf(k=query.rrf_k, weights=weights),  # type: ignore[arg-type]  # Rrf is a Fusion
            prefetches=prefetches,
            filter=flt,
            with_payload=True,
        )
        return [Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in self._shard.query(request)]

    def doc_points(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = defaultdict(set)
        offset = None
        while True:
            records, offset = self._shard.scroll(
                qe.ScrollRequest(offset=offset, limit=_SCROLL, with_payload=["doc_id"], with_vector=False)
            )
            for r in records:
                out[str((r.payload or {}).get("doc_id", ""))].add(str(r.id))
            if offset is None:
                return dict(out)

    def payloads(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        if not ids:
            return {}
        return {str(r.id): dict(r.payload or {}) for r in self._shard.retrieve(list(ids), True, False)}

    def count(self) -> int:
        return int(self._shard.count(qe.CountRequest(exact=True)))

    def flush(self) -> None:
        self._shard.flush()
        make_private(self.path)

    def optimize(self) -> bool:
        """Merge segments and build the HNSW / sparse indexes now (blocking)."""
        return bool(self._shard.optimize())

    def close(self) -> None:
        if self._shard is not None:
            self._shard.flush()
            self._shard.close()
            self._shard = None  # type: ignore[assignment]
            make_private(self.path)
            os.close(self._lock_fd)  # releases the lock

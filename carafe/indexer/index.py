"""The indexer's front door: one store, one embedder; sync sources into it, search it
as a given :class:`AccessScope`."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from carafe.indexer.acl import AccessScope, Acl
from carafe.indexer.config import IndexerConfig
from carafe.indexer.errors import SourceNotFound
from carafe.indexer.manifest import Manifest, make_private, point_id, write_json_atomic
from carafe.indexer.prompt import Passage
from carafe.indexer.sources import Source
from carafe.indexer.sparse import Bm25
from carafe.indexer.stores import Store, open_store
from carafe.indexer.stores.base import Hit, HybridQuery
from carafe.indexer.sync import Progress, Screen, Syncer, SyncReport

tracer = trace.get_tracer("carafe.indexer")


def passage_of(hit: Hit) -> Passage:
    p = hit.payload
    return Passage(
        doc_id=str(p.get("doc_id", "")),
        title=str(p.get("title", "")),
        version=str(p.get("version", "")),
        chunk=int(p.get("chunk", 0)),
        text=str(p.get("text", "")),
        score=hit.score,
        path=str(p.get("path", "")),
        sensitivity=str(p.get("sensitivity", "")),
        flag=str(p.get("injection_flag", "")),
    )


class Index:
    """Permission-aware hybrid index over the configured sources.

    The store opens on first use (the embedded one is single-process), and
    :meth:`sync` runs one at a time; searches may run alongside it."""

    def __init__(
        self,
        config: IndexerConfig,
        embedder: Any,
        *,
        data_dir: Path,
        store: Store | None = None,
        screen: Screen | None = None,
    ) -> None:
        self.config = config
        self.screen = screen  # index-time injection screen for new and changed chunks
        self.embedder = embedder
        self.data_dir = Path(data_dir)
        self.bm25 = Bm25()
        self._store = store
        self._sync_lock = threading.Lock()
        self._open_lock = threading.Lock()
        q = config.qdrant
        self.store_path = Path(q.path or self.data_dir / "index")
        state_name = f"index-{q.collection}" if q.url else self.store_path.name
        self.state_dir = (self.data_dir if q.url else self.store_path.parent) / f"{state_name}.state"

    @property
    def store(self) -> Store:
        with self._open_lock:
            if self._store is None:
                self._store = open_store(self.config.qdrant, default_path=self.store_path, dim=self.embedder.dim)
            return self._store

    # -- sync ---------------------------------------------------------------------------
    def sources(self, name: str | None = None) -> list[Source]:
        chosen = [s for s in self.config.sources if name is None or s.name == name]
        if name is not None and not chosen:
            known = ", ".join(s.name for s in self.config.sources) or "none configured"
            raise SourceNotFound(f"no source named {name!r} (sources: {known})")
        return [Source(s, max_file_bytes=self.config.chunking.max_file_bytes) for s in chosen]

    def _syncer(self) -> Syncer:
        make_private(self.state_dir)
        return Syncer(
            self.store,
            self.embedder,
            Manifest(self.state_dir / "manifest.json"),
            chunking=self.config.chunking,
            bm25=self.bm25,
            batch_chunks=self.config.sync_batch_chunks,
            screen=self.screen,
        )

    def sync(self, source: str | None = None, *, progress: Progress | None = None) -> SyncReport:
        """Bring the index in line with the sources (or the one named); save the report."""
        with self._sync_lock, tracer.start_as_current_span("carafe.index.sync") as span:
            span.set_attribute("carafe.index.source", source or "*")
            report = self._syncer().sync(self.sources(source), complete=source is None, progress=progress)
            write_json_atomic(self.state_dir / "last_sync.json", report.to_dict())
            for kind, n in report.counts().items():
                span.set_attribute(f"carafe.index.{kind}", n)
            span.set_attribute("carafe.index.chunks_embedded", report.chunks_embedded)
            span.set_attribute("carafe.index.flagged", len(report.flagged))
            for flag in report.flagged:  # the audit record of every chunk flagged at index time
                span.add_event("carafe.index.injection_flag", attributes=flag)
            if report.failed:
                span.set_status(Status(StatusCode.ERROR, f"{len(report.failed)} document(s) failed"))
            return report

    def refresh_acls(self) -> SyncReport:
        """The cheap, access-only part of a sync, for a gateway or indexer start: re-read every
        source's ACLs, delete gone documents and narrow stored ACL payloads, embed nothing.
        Afterwards no stored point is readable by anyone its source does not admit now, even
        if the last sync was killed half-way. The last sync report is left as it was."""
        with self._sync_lock, tracer.start_as_current_span("carafe.index.refresh_acls") as span:
            report = self._syncer().sync(self.sources(), embed=False)
            span.set_attribute("carafe.index.deleted", len(report.deleted))
            span.set_attribute("carafe.index.acl_changed", len(report.acl_updated) + len(report.acl_narrowed))
            return report

    def last_report(self) -> dict[str, Any] | None:
        try:
            report: dict[str, Any] = json.loads((self.state_dir / "last_sync.json").read_text(encoding="utf-8"))
            return report
        except (OSError, ValueError):
            return None

    # -- search -------------------------------------------------------------------------
    def search_vectors(
        self, dense: Sequence[float], query: str, scope: AccessScope, *, top_k: int | None = None, mode: str = "hybrid"
    ) -> list[Passage]:
        """Store query only (the query already embedded); ``mode``: hybrid, dense or sparse."""
        r = self.config.retrieval
        hits = self.store.search(
            HybridQuery(
                dense=dense,
                sparse=self.bm25.query(query),
                scope=scope,
                limit=top_k or r.top_k,
                candidates=max(r.candidates, top_k or r.top_k),
                rrf_k=r.rrf_k,
                weights=(r.dense_weight, r.sparse_weight),
                use_dense=mode != "sparse",
                use_sparse=mode != "dense",
            )
        )
        return [passage_of(h) for h in hits]

    def search(
        self, query: str, scope: AccessScope, *, top_k: int | None = None, mode: str = "hybrid"
    ) -> list[Passage]:
        """The passages ``scope`` may read that best answer ``query`` (ACL filter inside the query)."""
        if not query.strip():
            return []
        dense = self.embedder.encode([query])[0]
        return self.search_vectors(dense, query, scope, top_k=top_k, mode=mode)

    def restricted_matches(self, text: str, scope: AccessScope, *, limit: int = 3) -> list[tuple[str, float, str]]:
        """(doc_id, cosine similarity, chunk text) of the closest chunks ``scope`` may NOT read.

        For the output guard that catches an adapter repeating documents the caller
        may not see; empty for an unrestricted scope."""
        if scope.unrestricted or not text.strip():
            return []
        dense = self.embedder.encode([text])[0]
        hits = self.store.search(
            HybridQuery(
                dense=dense, sparse=self.bm25.query(""), scope=scope, limit=limit, use_sparse=False, complement=True
            )
        )
        return [(str(h.payload.get("doc_id", "")), h.score, str(h.payload.get("text", ""))) for h in hits]

    def stats(self) -> dict[str, Any]:
        docs = self.store.doc_points()
        per_source: dict[str, int] = {}
        for doc_id in docs:
            src = doc_id.split(":", 1)[0]
            per_source[src] = per_source.get(src, 0) + 1
        last = self.last_report() or {}
        return {
            "store": self.config.qdrant.url or str(self.store_path),
            "documents": len(docs),
            "chunks": sum(len(v) for v in docs.values()),
            "documents_per_source": per_source,
            "embedding_model": getattr(self.embedder, "model_id", ""),
            "last_sync_at": last.get("started_at"),
            "last_sync_counts": last.get("counts"),
        }

    def documents(self) -> list[dict[str, Any]]:
        """Every indexed document as stored: id, title, version, ACL, sensitivity, chunks and the
        injection flags found in them at index time (for admins)."""
        docs = self.store.doc_points()
        first = {d: point_id(d, 0) if point_id(d, 0) in ids else min(ids) for d, ids in docs.items()}
        payloads = self.store.payloads(sorted(pid for ids in docs.values() for pid in ids))
        out = []
        for doc_id, pid in sorted(first.items()):
            p = payloads.get(pid, {})
            flags = sorted({str(f) for i in docs[doc_id] if (f := payloads.get(i, {}).get("injection_flag"))})
            out.append(
                {
                    "doc_id": doc_id,
                    "title": str(p.get("title", "")),
                    "version": str(p.get("version", "")),
                    "chunks": len(docs[doc_id]),
                    "injection_flags": flags,  # what the index-time content check found in its chunks
                    **Acl.of_payload(p).payload(),
                }
            )
        return out

    def close(self) -> None:
        with self._open_lock:
            if self._store is not None:
                self._store.close()
                self._store = None

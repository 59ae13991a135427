"""Incremental, crash-safe sync of sources into the store.

Access first, embedding last: a sync deletes gone documents, then narrows the ACL
payload of every changed document's stored points (its new ACL where a point holds
its current text, else the intersection of the old and new ACLs), and only then
embeds. Write order per changed document after that: upsert its new chunks
(deterministic ids, so a repeat overwrites), delete its stale chunk ids, then
record its state in the manifest. Each sync starts from what the store really
holds, so a kill -9 at any point is repaired by the next sync (no duplicates, no
orphans), and at no point does a stored point carry an ACL wider than its source's.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from carafe.indexer.acl import Acl
from carafe.indexer.chunking import Chunk, chunk_text
from carafe.indexer.config import ChunkingConfig
from carafe.indexer.manifest import DocState, Manifest, point_id, point_ids
from carafe.indexer.sources import Document, Rejection, Source
from carafe.indexer.sparse import Bm25
from carafe.indexer.stores.base import Store, StoredChunk

Progress = Callable[[str, int, int], None]  # (phase, done, total)
# Index-time content screen (the guards' indirect-injection rules, passed in by the composition root):
# chunk text -> the family of injection it carries, or None. The indexer never imports the guards.
Screen = Callable[[str], "str | None"]
CRASH_ENV = "CARAFE_INDEX_CRASH_AT"  # test hook: "<point>[:<nth>]" → SIGKILL this process there


def _crash_point(name: str, counter: dict[str, int]) -> None:
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    counter[name] = counter.get(name, 0) + 1
    if counter[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class SyncReport:
    """What a sync did, per document, with the reason for every failure."""

    sources: list[str]
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    acl_updated: list[str] = field(default_factory=list)
    acl_narrowed: list[str] = field(default_factory=list)  # changed documents re-permissioned before embedding
    deleted: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: list[Rejection] = field(default_factory=list)
    chunks_embedded: int = 0
    flagged: list[dict[str, Any]] = field(default_factory=list)  # chunks that carry instructions to the model
    notes: list[str] = field(default_factory=list)
    started_at: float = 0.0
    duration_s: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.acl_updated or self.deleted)

    def counts(self) -> dict[str, int]:
        return {k: len(getattr(self, k)) for k in ("added", "updated", "acl_updated", "deleted", "unchanged", "failed")}

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["counts"] = self.counts()
        return out


def meta_hash(doc: Document) -> str:
    return hashlib.sha256(f"{doc.acl.digest()}|{doc.version}|{doc.path}".encode()).hexdigest()[:16]


def meta_payload(doc: Document) -> dict[str, Any]:
    return {**doc.acl.payload(), "version": doc.version, "path": doc.path}


class Syncer:
    """Brings the store in line with a set of sources."""

    def __init__(
        self,
        store: Store,
        embedder: Any,
        manifest: Manifest,
        *,
        chunking: ChunkingConfig,
        bm25: Bm25 | None = None,
        batch_chunks: int = 256,
        screen: Screen | None = None,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.manifest = manifest
        self.chunking = chunking
        self.bm25 = bm25 or Bm25()
        self.batch_chunks = batch_chunks
        self.screen = screen
        self._crashes: dict[str, int] = {}

    def sync(
        self,
        sources: Sequence[Source],
        *,
        complete: bool = True,
        progress: Progress | None = None,
        embed: bool = True,
    ) -> SyncReport:
        """Sync ``sources``; ``complete`` means they are all the configured sources, so
        documents of any other source are orphans and get deleted too. ``embed=False``
        does only the cheap, access-narrowing part (deletions and ACL payloads)."""
        report = SyncReport(sources=[s.name for s in sources], started_at=time.time())
        t0 = time.perf_counter()
        prefixes = tuple(f"{s.name}:" for s in sources)

        def in_scope(doc_id: str) -> bool:
            return complete or doc_id.startswith(prefixes)

        docs: list[Document] = []
        for source in sources:
            found, rejected = source.scan()
            docs.extend(found)
            report.failed.extend(rejected)
        stored = {d: ids for d, ids in self.store.doc_points().items() if in_scope(d)}
        live = {d.doc_id for d in docs}
        model = getattr(self.embedder, "model_id", None)
        if embed and model and self.manifest.use_embedding_model(model):
            # another model (or int8 on/off) made the stored vectors: re-embed every document,
            # not only changed ones, so queries and passages share one vector space again
            report.notes.append(f"embedding model is now {model}: every document is re-embedded")

        # Gone, or now unreadable: remove before anything else (a revoked doc must vanish).
        for doc_id in sorted(set(stored) - live):
            self.store.delete(stored[doc_id])
            _crash_point("after_delete_doc", self._crashes)
            self.manifest.docs.pop(doc_id, None)
            if doc_id not in {r.doc_id for r in report.failed}:
                report.deleted.append(doc_id)
        for doc_id in [d for d in self.manifest.docs if in_scope(d) and d not in live]:
            self.manifest.docs.pop(doc_id)
        self.manifest.save()

        to_embed = self._repermission(docs, stored, report)
        if embed:
            self._embed_all(to_embed, stored, report, progress)
        elif to_embed:
            report.notes.append(
                f"{len(to_embed)} changed document(s) wait for a sync to be re-embedded; "
                "their stored text already carries an ACL no wider than their source's"
            )
        self.store.flush()
        report.duration_s = time.perf_counter() - t0
        return report

    def _repermission(self, docs: list[Document], stored: dict[str, set[str]], report: SyncReport) -> list[Document]:
        """Bring every stored point's ACL in line with its source now; the documents left to embed."""
        to_embed: list[Document] = []
        for doc in docs:
            state = self.manifest.docs.get(doc.doc_id)
            have = stored.get(doc.doc_id, set())
            if state is None or state.content_hash != doc.content_hash or have != point_ids(doc.doc_id, state.chunks):
                self._narrow(doc, have, report)
                to_embed.append(doc)
            elif state.meta_hash != meta_hash(doc):
                self.store.set_payload(sorted(have), meta_payload(doc))
                _crash_point("after_set_payload", self._crashes)
                state.meta_hash = meta_hash(doc)
                report.acl_updated.append(doc.doc_id)
            else:
                report.unchanged.append(doc.doc_id)
        if report.acl_updated:
            self.manifest.save()
        return to_embed

    def _narrow(self, doc: Document, have: set[str], report: SyncReport) -> None:
        """Before a changed document is embedded, its stored points take its new ACL where they
        hold its current text, else what both its old and new ACLs admit: never wider than now."""
        moves: dict[Acl, list[str]] = {}
        for pid, payload in self.store.payloads(sorted(have)).items():
            old = Acl.of_payload(payload)
            new = doc.acl if payload.get("content_hash") == doc.content_hash else old.narrowed_to(doc.acl)
            if new != old:
                moves.setdefault(new, []).append(pid)
        for acl, ids in moves.items():
            self.store.set_payload(sorted(ids), acl.payload())
            _crash_point("after_narrow", self._crashes)
        if moves:
            report.acl_narrowed.append(doc.doc_id)

    def _embed_all(
        self, docs: list[Document], stored: dict[str, set[str]], report: SyncReport, progress: Progress | None
    ) -> None:
        chunked = [
            (
                doc,
                chunk_text(
                    doc.text,
                    max_tokens=self.chunking.max_tokens,
                    overlap_tokens=self.chunking.overlap_tokens,
                    title=doc.title,
                ),
            )
            for doc in docs
        ]
        total = sum(len(c) for _, c in chunked)
        done = 0
        if progress:
            progress("embed", 0, total)
        batch: list[tuple[Document, list[Chunk]]] = []
        size = 0
        for item in chunked:
            batch.append(item)
            size += len(item[1])
            if size >= self.batch_chunks:
                done = self._write_batch(batch, stored, report, done, total, progress)
                batch, size = [], 0
        if batch:
            self._write_batch(batch, stored, report, done, total, progress)

    def _flag(self, doc: Document, chunk: Chunk, report: SyncReport) -> dict[str, str]:
        """The payload mark of a chunk the screen finds instructions in (recorded in the report), else nothing."""
        family = self.screen(chunk.text) if self.screen is not None else None
        if not family:
            return {}
        report.flagged.append({"doc_id": doc.doc_id, "chunk": chunk.number, "family": family})
        return {"injection_flag": family}

    def _write_batch(
        self,
        batch: list[tuple[Document, list[Chunk]]],
        stored: dict[str, set[str]],
        report: SyncReport,
        done: int,
        total: int,
        progress: Progress | None,
    ) -> int:
        texts = [f"{doc.title}\n{c.text}" for doc, chunks in batch for c in chunks]
        dense = self.embedder.encode(texts)
        points, row = [], 0
        for doc, chunks in batch:
            for c in chunks:
                payload = {
                    "doc_id": doc.doc_id,
                    "chunk": c.number,
                    "title": doc.title,
                    "source": doc.source,
                    "content_hash": doc.content_hash,
                    "heading": c.heading,
                    "text": c.text,
                    **meta_payload(doc),
                    **self._flag(doc, c, report),
                }
                points.append(
                    StoredChunk(point_id(doc.doc_id, c.number), dense[row], self.bm25.document(texts[row]), payload)
                )
                row += 1
        self.store.upsert(points)
        _crash_point("after_upsert", self._crashes)
        for doc, chunks in batch:
            stale = stored.get(doc.doc_id, set()) - point_ids(doc.doc_id, len(chunks))
            self.store.delete(stale)
            _crash_point("after_delete_stale", self._crashes)
            (report.updated if doc.doc_id in stored or doc.doc_id in self.manifest.docs else report.added).append(
                doc.doc_id
            )
            self.manifest.docs[doc.doc_id] = DocState(doc.content_hash, meta_hash(doc), len(chunks))
        self.store.flush()
        self.manifest.save()
        _crash_point("after_manifest", self._crashes)
        report.chunks_embedded += len(points)
        done += len(points)
        if progress:
            progress("embed", done, total)
        return done

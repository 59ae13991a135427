"""Retrieval benchmark: filtered hybrid store-query latency at 10k and 100k chunks vs an
unfiltered query in the same run, and recall@5 on examples/policies/questions.yaml.

    python bench/retrieve.py            # 10k and 100k chunks
    python bench/retrieve.py --quick    # 10k and 30k chunks

Latency is the store query only (dense + sparse prefetch, RRF fusion, ACL filter), the
query already embedded. The machine is shared: figures are noisy, compare within a run.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from carafe.indexer.acl import AccessScope
from carafe.indexer.config import IndexerConfig, SourceConfig
from carafe.indexer.manifest import point_id
from carafe.indexer.sparse import SparseVector
from carafe.indexer.stores.base import HybridQuery, StoredChunk
from carafe.indexer.stores.edge import EdgeStore

REPO = Path(__file__).resolve().parent.parent
DIM = 384
GROUPS = [f"group-{i:02d}" for i in range(20)]


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _sparse(rng: np.random.Generator, terms: int) -> SparseVector:
    ids = np.unique(rng.zipf(1.3, size=terms) % 50_000)
    return SparseVector([int(i) for i in ids], [float(x) for x in rng.uniform(0.5, 2.0, len(ids))])


def fill(store: EdgeStore, n: int, start: int, rng: np.random.Generator) -> None:
    batch = 2_000
    for lo in range(start, n, batch):
        hi = min(n, lo + batch)
        vecs = _unit(rng, hi - lo)
        chunks = [
            StoredChunk(
                point_id(f"bench:doc-{i // 10}", i % 10),
                vecs[i - lo],
                _sparse(rng, 60),
                {
                    "doc_id": f"bench:doc-{i // 10}",
                    "chunk": i % 10,
                    "title": f"Doc {i // 10}",
                    "text": "x",
                    "version": "1",
                    "acl_groups": sorted(random.Random(i // 10).sample(GROUPS, 2)),
                    "acl_users": [],
                },
            )
            for i in range(lo, hi)
        ]
        store.upsert(chunks)
    store.flush()


def latencies(store: EdgeStore, queries: list[HybridQuery]) -> tuple[float, float]:
    for q in queries[:10]:
        store.search(q)
    times = []
    for q in queries:
        t = time.perf_counter()
        store.search(q)
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.99 * (len(times) - 1))]


def store_bench(sizes: list[int], n_queries: int) -> None:
    rng = np.random.default_rng(1)
    work = Path(tempfile.mkdtemp(prefix="carafe-bench-retrieve-"))
    try:
        store = EdgeStore(work / "edge", DIM)
        qv = _unit(rng, n_queries)
        scope = AccessScope.of("someone", ["group-03", "group-11"])  # ~19% of documents visible
        admin = AccessScope.of("root", admin=True)
        filled = 0
        for n in sizes:
            fill(store, n, filled, rng)
            filled = n
            t = time.perf_counter()
            store.optimize()
            built = time.perf_counter() - t
            filtered = [HybridQuery(qv[i], _sparse(rng, 6), scope, limit=5) for i in range(n_queries)]
            unfiltered = [HybridQuery(q.dense, q.sparse, admin, limit=5) for q in filtered]
            f50, f99 = latencies(store, filtered)
            u50, u99 = latencies(store, unfiltered)
            print(
                f"{n:>7} chunks (index build {built:.1f} s): filtered hybrid p50 {f50:.2f} ms p99 {f99:.2f} ms | "
                f"unfiltered p50 {u50:.2f} ms p99 {u99:.2f} ms  (goal: filtered p50 <= 5 ms)"
            )
        store.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def recall_bench(k: int = 5) -> None:
    from carafe.indexer.embedding import Embedder
    from carafe.indexer.index import Index

    questions = yaml.safe_load((REPO / "examples/policies/questions.yaml").read_text())["questions"]
    admin = AccessScope.of("root", admin=True)
    work = Path(tempfile.mkdtemp(prefix="carafe-bench-recall-"))
    try:
        for label, quantize in (("fp32", False), ("int8", True)):
            embedder = Embedder(quantize=quantize)
            config = IndexerConfig(sources=[SourceConfig(name="policies", path=REPO / "examples/policies")])
            index = Index(config, embedder, data_dir=work / label)
            index.sync()
            for mode in ("hybrid", "dense", "sparse"):
                hits = sum(
                    q["doc"] in {p.doc_id for p in index.search(q["q"], admin, top_k=k, mode=mode)} for q in questions
                )
                print(
                    f"recall@{k} [{label} embeddings, {mode:>6}]: {hits / len(questions):.3f} ({hits}/{len(questions)})"
                )
            index.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="10k and 30k chunks instead of 10k and 100k")
    ap.add_argument("--queries", type=int, default=300)
    args = ap.parse_args()
    print("bench/retrieve.py — Qdrant Edge store query latency (query embedding excluded)")
    store_bench([10_000, 30_000] if args.quick else [10_000, 100_000], args.queries)
    recall_bench()
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()

"""Indexing benchmark: embedding throughput, a full sync of N chunks, a 1-document re-sync, memory.

    python bench/index.py            # 10k chunks
    python bench/index.py --quick    # 2k chunks, a few minutes on a shared 2-core box

Baselines measured in the same run: plain ``SentenceTransformer.encode`` on the same
chunks (throughput), and the full sync (for the re-sync). Numbers on a machine
shared with other work are noisy: compare ratios, not absolute figures.
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

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from carafe.indexer.chunking import chunk_text
from carafe.indexer.config import IndexerConfig, SourceConfig
from carafe.indexer.embedding import Embedder
from carafe.indexer.index import Index

POLICIES = Path(__file__).resolve().parent.parent / "examples" / "policies"
WORDS = [
    "policy",
    "employee",
    "leave",
    "budget",
    "approval",
    "contract",
    "security",
    "incident",
    "salary",
    "travel",
    "expense",
    "invoice",
    "customer",
    "deploy",
    "review",
    "retention",
    "holiday",
    "pension",
    "insurance",
    "office",
    "manager",
    "finance",
    "legal",
    "data",
    "request",
    "report",
    "quarter",
    "forecast",
    "vendor",
    "audit",
    "access",
    "password",
    "rotation",
    "training",
]
GROUPS = ["hr", "finance", "engineering", "legal", "sales", "employees", "security", "managers"]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_corpus(root: Path, chunks: int, seed: int = 7) -> int:
    """Markdown documents of about 10 chunks each, with front-matter ACLs; returns the doc count."""
    rng = random.Random(seed)
    docs = max(1, chunks // 10)
    for d in range(docs):
        sections = []
        for s in range(10):
            para = " ".join(rng.choice(WORDS) for _ in range(rng.randint(90, 140)))
            sections.append(f"## Section {s}\n\n{para.capitalize()}.")
        groups = rng.sample(GROUPS, 2)
        text = f"---\nacl: {{groups: [{', '.join(groups)}]}}\n---\n# Document {d}\n\n" + "\n\n".join(sections)
        path = root / f"dept{d % 8}" / f"doc-{d:05d}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return docs


def throughput(embedder: Embedder, texts: list[str], reps: int) -> tuple[float, float]:
    """(plain SentenceTransformer.encode chunks/s, Embedder.encode chunks/s), medians over reps."""
    plain, ours = [], []
    for _ in range(reps):
        t = time.perf_counter()
        embedder._model.encode(texts, normalize_embeddings=True)  # library defaults: batch 32
        plain.append(len(texts) / (time.perf_counter() - t))
        t = time.perf_counter()
        embedder.encode(texts)
        ours.append(len(texts) / (time.perf_counter() - t))
    return statistics.median(plain), statistics.median(ours)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="1k chunks instead of 10k, fewer repetitions")
    ap.add_argument("--chunks", type=int, default=None)
    ap.add_argument(
        "--fp32", action="store_true", help="run the syncs with the fp32 embedder (default: int8, the config default)"
    )
    args = ap.parse_args()
    n_chunks = args.chunks or (1_000 if args.quick else 10_000)
    print(f"bench/index.py: {n_chunks} chunks target, torch threads={__import__('torch').get_num_threads()}")

    base = Embedder()
    int8 = Embedder(quantize=True)
    reps = 2 if args.quick else 3
    sample = [c.text for p in sorted(POLICIES.rglob("*.md")) for c in chunk_text(p.read_text())] * (
        1 if args.quick else 4
    )
    base.encode(sample[:8]), int8.encode(sample[:8])  # warm-up
    plain, ours = throughput(base, sample, reps=reps)
    _, ours8 = throughput(int8, sample, reps=reps)
    print(f"embedding throughput on {len(sample)} policy chunks (median of {reps}):")
    print(f"  SentenceTransformer.encode, library defaults (baseline)  {plain:8.1f} chunks/s")
    print(
        f"  Embedder fp32, length-sorted batches of {base.batch_size}            {ours:8.1f} chunks/s  "
        f"({ours / plain:.2f}x)"
    )
    print(
        f"  Embedder int8, one text per pass (default)               {ours8:8.1f} chunks/s  ({ours8 / plain:.2f}x; "
        "goal >= 2x; recall: bench/retrieve.py)"
    )

    work = Path(tempfile.mkdtemp(prefix="carafe-bench-index-"))
    try:
        docs = make_corpus(work / "src", n_chunks)
        # the syncs run with the default int8 embedder, or fp32 with --fp32
        for label, embedder in (("fp32", base),) if args.fp32 else (("int8", int8),):
            config = IndexerConfig(sources=[SourceConfig(name="bench", path=work / "src")])
            index = Index(config, embedder, data_dir=work / f"data-{label}")
            t = time.perf_counter()
            report = index.sync()
            full = time.perf_counter() - t
            print(
                f"full sync [{label}]: {len(report.added)} docs, {report.chunks_embedded} chunks in {full:.1f} s "
                f"({report.chunks_embedded / full:.1f} chunks/s end to end)"
            )
            target = work / "src" / "dept3" / "doc-00003.md"
            target.write_text(target.read_text() + "\n\nA new closing paragraph about the vendor audit.\n")
            times = []
            for n in range(3):
                if n:
                    target.write_text(target.read_text() + " Edited again.")
                t = time.perf_counter()
                again = index.sync()
                times.append(time.perf_counter() - t)
            print(
                f"re-sync with 1 changed doc among {docs} [{label}]: median {statistics.median(times):.2f} s "
                f"(max {max(times):.2f} s; {again.chunks_embedded} chunks re-embedded; goal <= 2 s)"
            )
            t = time.perf_counter()
            index.sync()
            print(f"no-change sync [{label}]: {time.perf_counter() - t:.2f} s")
            index.close()
        print(f"peak RSS of this process: {peak_rss_mb():.0f} MB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

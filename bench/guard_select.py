"""How the injection classifier's kind and threshold were chosen, without looking at the held-out corpora.

    python bench/guard_select.py [--threads N]

Leave-one-training-source-out: each public training corpus in turn is left out of training and
scored (recall); Carafe's benign texts of other checks are left out once (false-positive rate).
The default is the kind and threshold with the best mean recall at FPR <= 0.02. bench/guard.py then
measures that choice on the held-out corpora. Slow on a busy CPU: it embeds ~1,600 texts.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from carafe.guards.checks.injection_rules import match_rules
from carafe.guards.classifier import NgramClassifier, data_path, load_jsonl
from carafe.guards.corpora import AUX_BENIGN, TRAIN_SOURCES, corpus
from carafe.guards.normalize import normalize

THRESHOLDS = (0.5, 0.6, 0.7, 0.8)


def main() -> None:
    from sklearn.linear_model import LogisticRegression

    from carafe.indexer.embedding import Embedder

    t0 = time.perf_counter()
    groups = {
        "own": [{"text": r["text"], "label": int(r["label"])} for r in load_jsonl(data_path("injection_train.jsonl"))],
        "aux": [{"text": r["text"], "label": 0} for n in AUX_BENIGN for r in load_jsonl(data_path(n))],
    }
    groups |= {s: corpus(s) for s in TRAIN_SOURCES}
    texts = {g: [normalize(r["text"]) for r in rows] for g, rows in groups.items()}
    embedder = Embedder(quantize=True)
    emb = {g: embedder.encode(t) for g, t in texts.items()}
    rules = {g: np.array([match_rules(t) is not None for t in ts]) for g, ts in texts.items()}
    print(f"embedded {sum(map(len, texts.values()))} training texts in {time.perf_counter() - t0:.0f} s")

    def scorer(keys: list[str], kind: str):
        rows = [r for k in keys for r in groups[k]]
        lr = (
            LogisticRegression(C=1.0, class_weight="balanced", max_iter=3000).fit(
                np.vstack([emb[k] for k in keys]), [r["label"] for r in rows]
            )
            if kind != "ngram"
            else None
        )
        ng = NgramClassifier.fit(rows) if kind != "embedding" else None

        def score(g: str) -> np.ndarray:
            parts = ([lr.predict_proba(emb[g])[:, 1]] if lr is not None else []) + ([ng.proba(texts[g])] if ng else [])
            return np.mean(parts, axis=0)

        return score

    print(
        f"{'kind':<10} {'threshold':>9} "
        + " ".join(f"{s[:14]:>14}" for s in TRAIN_SOURCES)
        + f" {'mean':>6} {'aux FPR':>8}"
    )
    best = None
    for kind in ("embedding", "ngram", "ensemble"):
        held = {s: scorer(["own", "aux"] + [k for k in TRAIN_SOURCES if k != s], kind)(s) for s in TRAIN_SOURCES}
        benign = scorer(["own", *TRAIN_SOURCES], kind)("aux")
        for th in THRESHOLDS:
            recalls = [float((rules[s] | (held[s] >= th)).mean()) for s in TRAIN_SOURCES]
            fpr = float((rules["aux"] | (benign >= th)).mean())
            mean = float(np.mean(recalls))
            print(f"{kind:<10} {th:>9} " + " ".join(f"{r:>14.3f}" for r in recalls) + f" {mean:>6.3f} {fpr:>8.3f}")
            if fpr <= 0.02 and (best is None or mean > best[0]):
                best = (mean, kind, th)
    if best:
        print(f"chosen: {best[1]} at threshold {best[2]} (mean left-out-source recall {best[0]:.3f} at FPR <= 0.02)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    main()

"""How the injection classifier's kind and threshold were chosen, without looking at the held-out corpora.

    python bench/guard_select.py [--threads N] [--kinds ngram,embedding,ensemble]

Leave-one-training-source-out: each public training corpus of attacks in turn is left out of training
and scored (recall); each benign training group (Carafe's texts of the PII and grounding checks, the
ordinary texts of the toxicity set, Carafe's training questions) in turn is left out and scored
(false-positive rate, pooled over the groups: ordinary texts, like the held-out benign sets; the
insults of the toxicity set are trained on as negatives and their rate is shown apart). The default
is the kind and threshold with the best mean left-out recall at FPR <= 0.02. bench/guard.py then
measures that choice, once, on the held-out corpora. Slow on a busy CPU: it embeds ~2,000 texts.
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

from carafe.guards.checks.indirect import match_content
from carafe.guards.checks.injection_rules import match_rules
from carafe.guards.classifier import NgramClassifier, load_jsonl
from carafe.guards.corpora import AUX_BENIGN, OWN_SET, TRAIN_BENIGN, TRAIN_OWN, TRAIN_SOURCES, corpus
from carafe.guards.corpora import dataset_path as data_path
from carafe.guards.normalize import normalize

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
BENIGN_GROUPS = ("pii", "grounding", "toxicity_ordinary", *TRAIN_BENIGN)


def main(kinds: list[str]) -> None:
    t0 = time.perf_counter()
    groups = {
        "own": [{"text": r["text"], "label": int(r["label"])} for r in load_jsonl(data_path(OWN_SET))],
    }
    aux = {n.split("_")[0]: load_jsonl(data_path(n)) for n in AUX_BENIGN}
    groups["pii"] = [{"text": r["text"], "label": 0} for r in aux["pii"]]
    groups["grounding"] = [{"text": r["text"], "label": 0} for r in aux["grounding"]]
    groups["toxicity_ordinary"] = [{"text": r["text"], "label": 0} for r in aux["toxicity"] if not r["label"]]
    groups["insults"] = [{"text": r["text"], "label": 0} for r in aux["toxicity"] if r["label"]]
    groups |= {s: corpus(s) for s in TRAIN_SOURCES + TRAIN_BENIGN}
    # Carafe's mixed training sets (attacks and ordinary texts): their attacks count as a left-out source,
    # their ordinary texts go with the other training sets (always fitted on: they never measure FPR here).
    for s in TRAIN_OWN:
        if s not in TRAIN_BENIGN:
            groups["own"] += corpus(s)
    texts = {g: [normalize(r["text"]) for r in rows] for g, rows in groups.items()}
    emb: dict[str, np.ndarray] = {}
    if set(kinds) - {"ngram"}:
        from carafe.indexer.embedding import Embedder

        embedder = Embedder(quantize=True)
        emb = {g: embedder.encode(t) for g, t in texts.items()}
        print(f"embedded {sum(map(len, texts.values()))} training texts in {time.perf_counter() - t0:.0f} s")
    rules = {
        g: np.array([match_rules(t) is not None or match_content(t) is not None for t in ts]) for g, ts in texts.items()
    }

    def scorer(keys: list[str], kind: str):
        from sklearn.linear_model import LogisticRegression

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
        f"{'kind':<10} {'thr':>4} "
        + " ".join(f"{s[:11]:>11}" for s in TRAIN_SOURCES)
        + f" {'mean':>6} "
        + " ".join(f"{'FPR ' + g[:9]:>13}" for g in BENIGN_GROUPS)
        + f" {'FPR':>6} {'insults':>7}"
    )
    everything = ["own", *TRAIN_SOURCES, *BENIGN_GROUPS, "insults"]
    best = None
    for kind in kinds:
        left_out = (*TRAIN_SOURCES, *BENIGN_GROUPS, "insults")
        held = {s: scorer([k for k in everything if k != s], kind)(s) for s in left_out}
        for th in THRESHOLDS:
            recalls = [float((rules[s] | (held[s] >= th)).mean()) for s in TRAIN_SOURCES]
            fired = {g: rules[g] | (held[g] >= th) for g in BENIGN_GROUPS}
            fpr = float(np.concatenate(list(fired.values())).mean())
            mean = float(np.mean(recalls))
            print(
                f"{kind:<10} {th:>4} "
                + " ".join(f"{r:>11.3f}" for r in recalls)
                + f" {mean:>6.3f} "
                + " ".join(f"{float(f.mean()):>13.3f}" for f in fired.values())
                + f" {fpr:>6.3f} {float((rules['insults'] | (held['insults'] >= th)).mean()):>7.3f}"
            )
            if fpr <= 0.02 and (best is None or mean > best[0]):
                best = (mean, kind, th)
    if best:
        print(f"chosen: {best[1]} at threshold {best[2]} (mean left-out-source recall {best[0]:.3f} at FPR <= 0.02)")
    print(f"took {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--kinds", default="ngram")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    main(args.kinds.split(","))

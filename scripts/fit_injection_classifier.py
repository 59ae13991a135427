"""Fit the injection classifiers on carafe.guards.corpora.training_rows() and ship them in carafe/guards/data.

    python scripts/fit_injection_classifier.py

Writes injection_classifier.json (MiniLM fp32), injection_classifier-int8.json (MiniLM int8) and
injection_ngram.json.gz; each carries the key of its training data, so a change to the data
without a refit makes Carafe refit at start-up (and cache) instead of using stale weights.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from carafe.guards.classifier import NgramClassifier, data_path, fit, training_key
from carafe.guards.corpora import training_rows
from carafe.indexer.embedding import Embedder


def main() -> None:
    import torch

    torch.set_num_threads(1)
    rows = training_rows()
    for embedder, name in (
        (Embedder(), "injection_classifier.json"),
        (Embedder(quantize=True), "injection_classifier-int8.json"),
    ):
        clf = fit(rows, embedder, training_key(rows, embedder.model_id))
        data_path(name).write_text(json.dumps(clf.to_json()))
        print(f"{name}: {len(rows)} rows, model {embedder.model_id}")
    ngram = NgramClassifier.fit(
        rows, key=training_key(rows, f"ngram-{NgramClassifier.MAX_CHARS}-{NgramClassifier.MAX_FEATURES}")
    )
    data_path("injection_ngram.json.gz").write_bytes(gzip.compress(json.dumps(ngram.to_json()).encode(), mtime=0))
    print(f"injection_ngram.json.gz: {len(ngram.coef)} features")


if __name__ == "__main__":
    main()

"""Fit the n-gram injection classifier on carafe.guards.corpora.training_rows() and ship it in carafe/guards/data.

    python scripts/fit_injection_classifier.py [--extra more.jsonl] [--out path/model.json.gz]

Writes the fitted model (injection_ngram.json.gz) and its sha256 digest beside it
(injection_ngram.json.gz.sha256). The runtime loads only these two files and refuses a model
that does not match its digest; it never reads training data. ``--extra`` adds labelled rows
({text, label}) to the training set; ``--out`` writes elsewhere (name the file in
``guards.injection_model``). Held-out sources (carafe.guards.corpora.HELD_OUT) are never read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from carafe.guards.classifier import MODEL_FILE, NgramClassifier, data_path, load_jsonl, save_ngram, training_key
from carafe.guards.corpora import training_rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--extra", type=Path, help="more labelled rows (jsonl of {text, label})")
    ap.add_argument("--out", type=Path, default=data_path(MODEL_FILE), help="where to write the fitted model")
    args = ap.parse_args()
    rows = training_rows()
    if args.extra:
        rows += [{"text": r["text"], "label": int(r["label"])} for r in load_jsonl(args.extra)]
    clf = NgramClassifier.fit(rows, key=training_key(rows, f"ngram-{NgramClassifier.MAX_CHARS}"))
    digest = save_ngram(clf, args.out)
    print(f"{args.out}: {len(rows)} rows, {len(clf.coef)} features, sha256 {digest}")


if __name__ == "__main__":
    main()

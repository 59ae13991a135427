"""A small embedding classifier (logistic regression over MiniLM embeddings)
trained on the labelled data shipped in ``guards/data``.

Fitting needs the training texts' embeddings (seconds on a CPU), so the fitted
weights are cached as JSON keyed by the training data's sha256 and the
embedding model: the package ships one, others land in ``cache_dir``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def data_path(name: str) -> Path:
    """A file shipped in ``carafe/guards/data``."""
    return Path(str(resources.files("carafe.guards") / "data" / name))


def load_jsonl(path: Path | str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@dataclass
class LinearClassifier:
    """``sigmoid(x · coef + intercept)`` on L2-normalized embeddings."""

    coef: np.ndarray
    intercept: float
    key: str

    def proba(self, embeddings: np.ndarray) -> np.ndarray:
        z = embeddings @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-z))

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "coef": [round(float(c), 6) for c in self.coef], "intercept": self.intercept}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "LinearClassifier":
        return cls(np.asarray(data["coef"], dtype=np.float32), float(data["intercept"]), data["key"])


class NgramClassifier:
    """Logistic regression over word 1-2-grams and character 3-5-grams: no
    embedding needed (~1 ms per text), fitted at start-up in well under a second."""

    def __init__(self, rows: list[dict[str, Any]], *, c: float = 4.0) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from scipy.sparse import hstack

        from carafe.guards.normalize import normalize

        # Two vectorizers stacked by hand: sklearn's FeatureUnion costs ~3 ms per call in overhead.
        self.vectorizers = (TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                            TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True))
        texts = [normalize(r["text"]).lower() for r in rows]
        x = hstack([v.fit_transform(texts) for v in self.vectorizers]).tocsr()
        model = LogisticRegression(C=c, class_weight="balanced", solver="liblinear")  # lbfgs: seconds on a busy box
        model.fit(x, np.array([int(r["label"]) for r in rows]))
        self.coef = model.coef_[0]
        self.intercept = float(model.intercept_[0])
        split = len(self.vectorizers[0].vocabulary_)
        self._coefs = (self.coef[:split], self.coef[split:])

    def proba(self, texts: list[str]) -> np.ndarray:
        """Probability of an attack per (already normalized) text."""
        lowered = [t.lower() for t in texts]
        z = np.full(len(texts), self.intercept)
        for vec, coef in zip(self.vectorizers, self._coefs):
            z += vec.transform(lowered) @ coef
        return 1.0 / (1.0 + np.exp(-z))


def training_key(rows: list[dict[str, Any]], model_id: str) -> str:
    h = hashlib.sha256(model_id.encode())
    for r in rows:
        h.update(f"{int(r['label'])}\t{r['text']}\n".encode())
    return h.hexdigest()[:32]


def fit(rows: list[dict[str, Any]], embedder: Any, key: str, *, c: float = 4.0) -> LinearClassifier:
    """Fit a balanced logistic regression on ``rows`` ({text, label})."""
    from sklearn.linear_model import LogisticRegression

    from carafe.guards.normalize import normalize

    x = embedder.encode([normalize(r["text"]) for r in rows])
    y = np.array([int(r["label"]) for r in rows])
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=2000)
    model.fit(x, y)
    return LinearClassifier(model.coef_[0].astype(np.float32), float(model.intercept_[0]), key)


def load_or_fit(name: str, rows: list[dict[str, Any]], embedder: Any, model_id: str,
                cache_dir: Path | None) -> LinearClassifier:
    """The fitted classifier for ``rows``: shipped weights, cached weights, or a fresh fit."""
    key = training_key(rows, model_id)
    candidates = [data_path(f"{name}_classifier.json"), data_path(f"{name}_classifier-int8.json")]  # shipped
    if cache_dir is not None:
        candidates.append(cache_dir / f"{name}_classifier_{key}.json")
    for path in candidates:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if data.get("key") == key:
            return LinearClassifier.from_json(data)
    log.info("fitting the %s classifier on %d examples (cached afterwards)", name, len(rows))
    clf = fit(rows, embedder, key)
    if cache_dir is not None:
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            (cache_dir / f"{name}_classifier_{key}.json").write_text(json.dumps(clf.to_json()))
        except OSError as exc:  # read-only disk: refit next start, still works
            log.warning("cannot cache the %s classifier in %s: %s", name, cache_dir, exc)
    return clf

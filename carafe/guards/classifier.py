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
        p: np.ndarray = 1.0 / (1.0 + np.exp(-z))
        return p

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "coef": [round(float(c), 6) for c in self.coef], "intercept": self.intercept}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LinearClassifier:
        return cls(np.asarray(data["coef"], dtype=np.float32), float(data["intercept"]), data["key"])


class NgramClassifier:
    """Logistic regression over word 1-2-grams and character 3-5-grams: no
    embedding needed (~1-3 ms per text). Fitting takes seconds on the full training
    set, so fitted models are saved and loaded like the embedding classifier's weights."""

    MAX_CHARS = 1000  # like the embedding model's 256 tokens: the opening of a long prompt
    MAX_FEATURES = 20000  # per vectorizer: keeps the shipped model small

    def __init__(self, vectorizers: tuple[Any, Any], coef: np.ndarray, intercept: float, key: str = "") -> None:
        self.vectorizers, self.coef, self.intercept, self.key = vectorizers, coef, intercept, key
        split = len(vectorizers[0].vocabulary_)
        self._coefs = (coef[:split], coef[split:])

    @staticmethod
    def _vectorizers(vocabularies: tuple[list[str], list[str]] | None = None) -> tuple[Any, Any]:
        from sklearn.feature_extraction.text import TfidfVectorizer

        # Two vectorizers stacked by hand: sklearn's FeatureUnion costs ~3 ms per call in overhead.
        word, char = vocabularies or (None, None)
        return (
            TfidfVectorizer(
                ngram_range=(1, 2), sublinear_tf=True, max_features=NgramClassifier.MAX_FEATURES, vocabulary=word
            ),
            TfidfVectorizer(
                analyzer="char_wb",
                ngram_range=(3, 5),
                sublinear_tf=True,
                max_features=NgramClassifier.MAX_FEATURES,
                vocabulary=char,
            ),
        )

    @classmethod
    def fit(cls, rows: list[dict[str, Any]], *, c: float = 4.0, key: str = "") -> NgramClassifier:
        from scipy.sparse import hstack
        from sklearn.linear_model import LogisticRegression

        from carafe.guards.normalize import normalize

        vectorizers = cls._vectorizers()
        texts = [normalize(r["text"])[: cls.MAX_CHARS].lower() for r in rows]
        x = hstack([v.fit_transform(texts) for v in vectorizers]).tocsr()
        model = LogisticRegression(C=c, class_weight="balanced", solver="liblinear")  # lbfgs: seconds on a busy box
        model.fit(x, np.array([int(r["label"]) for r in rows]))
        return cls(vectorizers, model.coef_[0], float(model.intercept_[0]), key)

    def proba(self, texts: list[str]) -> np.ndarray:
        """Probability of an attack per (already normalized) text."""
        lowered = [t[: self.MAX_CHARS].lower() for t in texts]
        z = np.full(len(texts), self.intercept)
        for vec, coef in zip(self.vectorizers, self._coefs):
            z += vec.transform(lowered) @ coef
        p: np.ndarray = 1.0 / (1.0 + np.exp(-z))
        return p

    def to_json(self) -> dict[str, Any]:
        vocab = [sorted(v.vocabulary_, key=v.vocabulary_.get) for v in self.vectorizers]
        return {
            "key": self.key,
            "vocabulary": vocab,
            "idf": [[round(float(x), 5) for x in v.idf_] for v in self.vectorizers],
            "coef": [round(float(c), 6) for c in self.coef],
            "intercept": self.intercept,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NgramClassifier:
        vectorizers = cls._vectorizers((data["vocabulary"][0], data["vocabulary"][1]))
        for vec, idf in zip(vectorizers, data["idf"]):
            vec._validate_vocabulary()  # a fixed vocabulary: no fit needed
            vec.idf_ = np.asarray(idf)
        return cls(vectorizers, np.asarray(data["coef"]), float(data["intercept"]), data["key"])


def load_or_fit_ngram(rows: list[dict[str, Any]], cache_dir: Path | None) -> NgramClassifier:
    """The n-gram classifier for ``rows``: the shipped model, a cached one, or a fresh fit (seconds)."""
    import gzip

    key = training_key(rows, f"ngram-{NgramClassifier.MAX_CHARS}-{NgramClassifier.MAX_FEATURES}")
    candidates = [data_path("injection_ngram.json.gz")] + (
        [cache_dir / f"injection_ngram_{key}.json.gz"] if cache_dir else []
    )
    for path in candidates:
        try:
            data = json.loads(gzip.decompress(path.read_bytes()))
        except (OSError, ValueError):
            continue
        if data.get("key") == key:
            return NgramClassifier.from_json(data)
    log.info("fitting the n-gram injection classifier on %d examples (cached afterwards)", len(rows))
    clf = NgramClassifier.fit(rows, key=key)
    if cache_dir is not None:
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            (cache_dir / f"injection_ngram_{key}.json.gz").write_bytes(
                gzip.compress(json.dumps(clf.to_json()).encode())
            )
        except OSError as exc:
            log.warning("cannot cache the n-gram classifier in %s: %s", cache_dir, exc)
    return clf


def training_key(rows: list[dict[str, Any]], model_id: str) -> str:
    h = hashlib.sha256(model_id.encode())
    for r in rows:
        h.update(f"{int(r['label'])}\t{r['text']}\n".encode())
    return h.hexdigest()[:32]


def fit(rows: list[dict[str, Any]], embedder: Any, key: str, *, c: float = 1.0) -> LinearClassifier:
    """Fit a balanced logistic regression on ``rows`` ({text, label})."""
    from sklearn.linear_model import LogisticRegression

    from carafe.guards.normalize import normalize

    x = embedder.encode([normalize(r["text"]) for r in rows])
    y = np.array([int(r["label"]) for r in rows])
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=2000)
    model.fit(x, y)
    return LinearClassifier(model.coef_[0].astype(np.float32), float(model.intercept_[0]), key)


def load_or_fit(
    name: str, rows: list[dict[str, Any]], embedder: Any, model_id: str, cache_dir: Path | None
) -> LinearClassifier:
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

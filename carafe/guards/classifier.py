"""The injection classifier: logistic regression over word and character n-grams.

The package ships the *fitted* model (``data/injection_ngram.json.gz``) and its
sha256 digest; the runtime loads only those (:func:`load_ngram`). Fitting, on the
corpora under ``datasets/guards/`` at the repository root, is a build step
(``scripts/fit_injection_classifier.py``), as is the MiniLM variant
(:class:`LinearClassifier`) that ``bench/guard_select.py`` compares it with.
"""

from __future__ import annotations

import gzip
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
    """A fitted model shipped in ``carafe/guards/data``."""
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
        from carafe.guards.ngram_features import TfidfScorer

        self.vectorizers, self.coef, self.intercept, self.key = vectorizers, coef, intercept, key
        split = len(vectorizers[0].vocabulary_)
        self._coefs = (coef[:split], coef[split:])
        self._scorers = [
            TfidfScorer(sorted(v.vocabulary_, key=v.vocabulary_.get), v.idf_, c, v.analyzer)
            for v, c in zip(vectorizers, self._coefs)
        ]

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

    def window_proba(self, text: str, overlap: int = 200) -> float:
        """The highest probability over overlapping windows covering all of ``text``
        (the classifier reads ``MAX_CHARS`` at a time, as it was trained)."""
        from carafe.guards.normalize import windows

        return float(self.proba(windows(text, self.MAX_CHARS, overlap)).max())

    def proba(self, texts: list[str]) -> np.ndarray:
        """Probability of an attack per (already normalized) text (:mod:`carafe.guards.ngram_features`)."""
        lowered = [t[: self.MAX_CHARS].lower() for t in texts]
        z = np.array([self.intercept + sum(s.logit(t) for s in self._scorers) for t in lowered])
        p: np.ndarray = 1.0 / (1.0 + np.exp(-z))
        return p

    def proba_sklearn(self, texts: list[str]) -> np.ndarray:
        """:meth:`proba` computed by the fitted scikit-learn vectorizers (the reference the tests compare)."""
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


MODEL_FILE = "injection_ngram.json.gz"


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_ngram(path: Path | None = None) -> NgramClassifier:
    """The fitted n-gram classifier at ``path`` (default: the one shipped in the package).

    Only the fitted model is read, never training data: its sha256 must equal the
    digest written beside it (``<file>.sha256``) by scripts/fit_injection_classifier.py,
    so a corrupt or hand-edited model is refused at start-up, not served."""
    from carafe.guards.errors import FittedModelError

    path = path or data_path(MODEL_FILE)
    digest_file = path.with_name(path.name + ".sha256")
    try:
        raw, expected = path.read_bytes(), digest_file.read_text(encoding="utf-8").split()[0]
    except (OSError, IndexError) as exc:
        raise FittedModelError(
            f"cannot read the injection model {path} and its digest {digest_file.name}: {exc} "
            "(fit one with scripts/fit_injection_classifier.py)"
        ) from exc
    if digest(raw) != expected:
        raise FittedModelError(
            f"the injection model {path} does not match its digest {digest_file.name}: refit it with "
            "scripts/fit_injection_classifier.py instead of editing it"
        )
    return NgramClassifier.from_json(json.loads(gzip.decompress(raw)))


def save_ngram(clf: NgramClassifier, path: Path) -> str:
    """Write ``clf`` and its digest beside it; returns the digest."""
    raw = gzip.compress(json.dumps(clf.to_json()).encode(), mtime=0)
    path.write_bytes(raw)
    path.with_name(path.name + ".sha256").write_text(f"{digest(raw)}  {path.name}\n", encoding="utf-8")
    return digest(raw)


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

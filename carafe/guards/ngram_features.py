"""The fitted n-gram classifier's score, computed without scikit-learn at request time.

scikit-learn's ``TfidfVectorizer.transform`` costs ~1.5 ms per call in validation and
sparse-matrix overhead alone, which dominated the injection check on short messages.
:class:`TfidfScorer` reproduces exactly what the fitted vectorizer computes (the same
word 1-2-grams and ``char_wb`` 3-5-grams, sublinear tf, idf, L2 norm) with a dict
lookup per n-gram, and folds the logistic regression's weights in; a test checks it
against scikit-learn to 1e-9.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator

import numpy as np

_TOKEN = re.compile(r"(?u)\b\w\w+\b")  # scikit-learn's default token_pattern
_WHITESPACES = re.compile(r"\s\s+")


def word_ngrams(text: str, n_max: int = 2) -> Iterator[str]:
    """Word 1..n_max-grams as scikit-learn's ``analyzer="word"`` yields them."""
    tokens = _TOKEN.findall(text)
    yield from tokens
    for n in range(2, min(n_max, len(tokens)) + 1):
        for i in range(len(tokens) - n + 1):
            yield " ".join(tokens[i : i + n])


def char_wb_ngrams(text: str, n_min: int = 3, n_max: int = 5) -> Iterator[str]:
    """Character n-grams inside word boundaries, as scikit-learn's ``analyzer="char_wb"``."""
    for word in _WHITESPACES.sub(" ", text).split():
        w = f" {word} "
        for n in range(n_min, n_max + 1):
            offset = 0
            yield w[offset : offset + n]
            while offset + n < len(w):
                offset += 1
                yield w[offset : offset + n]
            if offset == 0:  # a word shorter than n counts once
                break


class TfidfScorer:
    """One fitted vectorizer's contribution to the logit: ``tfidf(text) · coef``."""

    def __init__(self, vocabulary: list[str], idf: np.ndarray, coef: np.ndarray, analyzer: str) -> None:
        self.index = {term: i for i, term in enumerate(vocabulary)}
        self.idf = [float(x) for x in idf]
        self.coef = [float(x) for x in coef]
        self.ngrams = word_ngrams if analyzer == "word" else char_wb_ngrams

    def logit(self, text: str) -> float:
        counts = Counter(i for g in self.ngrams(text) if (i := self.index.get(g)) is not None)
        if not counts:
            return 0.0
        weights = {i: (1.0 + math.log(c)) * self.idf[i] for i, c in counts.items()}
        norm = math.sqrt(sum(w * w for w in weights.values()))
        return sum(w * self.coef[i] for i, w in weights.items()) / norm

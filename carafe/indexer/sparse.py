"""BM25 as sparse vectors, computed offline (no model download).

Document side: each term's BM25 term-frequency part ``tf·(k1+1) / (tf + k1·(1-b+b·len/avg_len))``.
Query side: weight 1 per distinct term. The IDF factor is applied by Qdrant itself
(``Modifier.IDF`` on the sparse vector), so it follows the live collection and a
document change never forces re-weighting the others. Term ids are a stable
32-bit hash of the (lightly stemmed) term, the way Qdrant's own BM25 does it.
"""

from __future__ import annotations

import re
import zlib
from collections import Counter
from dataclasses import dataclass

_WORD = re.compile(r"[a-z0-9]+(?:['’][a-z]+)?")
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "been",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "for",
        "from",
        "had",
        "has",
        "have",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "may",
        "me",
        "my",
        "no",
        "not",
        "of",
        "on",
        "or",
        "our",
        "shall",
        "should",
        "so",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "under",
        "up",
        "us",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
    ]
)


def _stem(word: str) -> str:
    """A light English suffix stripper: enough to match 'policies' to 'policy'."""
    for suffix, repl in (("ies", "y"), ("sses", "ss"), ("ing", ""), ("ed", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            word = word[: -len(suffix)] + repl
            break
    return word[:-1] if word.endswith("e") and len(word) > 4 else word  # approve/approved, employee/employees


def terms(text: str) -> list[str]:
    words = _WORD.findall(text.lower().replace("’", "'"))
    return [_stem(w.split("'")[0]) for w in words if w not in STOPWORDS and len(w) > 1]


def term_id(term: str) -> int:
    return zlib.crc32(term.encode()) & 0x7FFFFFFF


@dataclass(frozen=True)
class SparseVector:
    indices: list[int]
    values: list[float]


@dataclass(frozen=True)
class Bm25:
    k1: float = 1.2
    b: float = 0.75
    avg_len: float = 120.0

    def document(self, text: str) -> SparseVector:
        counts = Counter(term_id(t) for t in terms(text))
        length = sum(counts.values())
        norm = self.k1 * (1 - self.b + self.b * length / self.avg_len)
        items = sorted(counts.items())
        return SparseVector([i for i, _ in items], [tf * (self.k1 + 1) / (tf + norm) for _, tf in items])

    def query(self, text: str) -> SparseVector:
        ids = sorted({term_id(t) for t in terms(text)})
        return SparseVector(ids, [1.0] * len(ids))

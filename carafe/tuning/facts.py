"""Atomic facts of a knowledge document, found without a model.

The offline generator (``amplify.py``) needs to know what a document states before it can
ask about it: each sentence of a section becomes a :class:`Fact`, made to stand alone (a
leading "It" or "The leave" gets its section's name), with its *key spans*: the numbers,
times, dates and names a question can ask for and an answer must carry. Everything here is
rules over the text itself, so a fact never says what its chunk does not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from carafe.tuning.documents import Chunk

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])")
_WEEKDAY = r"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
_MONTH = r"(?:January|February|March|April|May|June|July|August|September|October|November|December)"
_STOP = (
    r"(?:per|to|in|for|through|before|after|within|and|or|by|at|from|on|with|each|every|regardless|if|when|of"
    r"|can|must|may|will|is|are|was|were|be|expire|expires)"
)
# Order matters: the first pattern that matches a stretch of text owns it.
_SPANS: list[tuple[str, re.Pattern[str]]] = [
    ("hours", re.compile(r"\b\d{1,2}:\d{2}\s*(?:to|-|–)\s*\d{1,2}:\d{2}\b")),
    ("days", re.compile(rf"\b{_WEEKDAY}\s+(?:to|-|–|and)\s+{_WEEKDAY}\b")),
    ("date", re.compile(rf"\b{_MONTH}\s+\d{{1,2}}\b|\b\d{{1,2}}\s+{_MONTH}\b")),
    ("time", re.compile(r"\b\d{1,2}:\d{2}\b")),
    ("code", re.compile(r"\b[A-Z]{1,4}-\d+[A-Za-z]?\b")),
    (
        "amount",
        re.compile(
            rf"\b\d[\d,.]*\s*%|\b\d[\d,.]*(?:\s+(?!{_STOP}\b)[a-z][a-z'-]*){{1,3}}(?:\s+of(?:\s+[a-z-]+){{1,3}})?"
        ),
    ),
    ("number", re.compile(r"\b\d[\d,.]*\b")),
    ("name", re.compile(r"\b[A-Z][a-z]+[A-Z][A-Za-z]*\b|(?<=called )[A-Z][A-Za-z]+|(?<=named )[A-Z][A-Za-z]+")),
]
_NOT_NAMES = {"I", "The", "A", "An", "It", "HR", "EU", "US", "UK"}
_PRONOUN = re.compile(r"^(It|They|This|These|The (?:leave|budget|programme|program|policy|desk|lease|rule|plan))\b")


@dataclass(frozen=True)
class Span:
    """A stretch of a fact a question can ask for: its text, kind and position."""

    text: str
    kind: str  # hours, days, date, time, code, amount, number, name
    start: int

    @property
    def end(self) -> int:
        return self.start + len(self.text)


@dataclass
class Fact:
    """One sentence of the document that states something, standing alone."""

    id: str  # "<chunk id>/<n>"
    text: str  # the sentence, decontextualised
    topic: str  # the section heading, lowercase ("vacation")
    chunk: str  # the chunk id
    source: str  # the chunk text (what the fact must be faithful to)
    spans: list[Span] = field(default_factory=list)


def _heading(line: str) -> str | None:
    return line.lstrip("#").strip() if line.startswith("#") else None


def _topic(heading: str) -> str:
    """A heading as a noun phrase inside a sentence: "The HR desk" -> "HR desk", "Vacation" -> "vacation"."""
    words = heading.split()
    if words and words[0].lower() == "the":
        words = words[1:]
    return " ".join(w if w.isupper() or any(c.isupper() for c in w[1:]) else w.lower() for w in words)


def _standalone(sentence: str, topic: str) -> str:
    """Replace a leading pronoun ("It covers ...") by the section's subject ("The wellness budget covers ...")."""
    m = _PRONOUN.match(sentence)
    if not m or not topic:
        return sentence
    return f"The {topic}{sentence[m.end() :]}"


def spans_of(text: str) -> list[Span]:
    """The key spans of a sentence, left to right, none overlapping."""
    taken: list[Span] = []
    for kind, pattern in _SPANS:
        for m in pattern.finditer(text):
            if m.group(0) in _NOT_NAMES or any(m.start() < s.end and s.start < m.end() for s in taken):
                continue
            taken.append(Span(m.group(0).strip(), kind, m.start()))
    return sorted(taken, key=lambda s: s.start)


def _sentences(paragraph: str) -> list[str]:
    lines = [ln.strip() for ln in paragraph.splitlines() if ln.strip()]
    if lines and all(ln.startswith(("- ", "* ")) for ln in lines):  # a bullet list: one fact per item
        return [ln[2:].strip().rstrip(".") + "." for ln in lines]
    return [s.strip() for s in _SENTENCE.split(" ".join(lines)) if s.strip()]


def extract_facts(chunks: list[Chunk], title: str = "") -> list[Fact]:
    """Every stating sentence of every chunk, as a standalone fact with its key spans."""
    facts: list[Fact] = []
    for chunk in chunks:
        topic = _topic(title)
        n = 0
        for para in chunk.text.split("\n\n"):
            if (head := _heading(para.strip())) is not None:
                topic = _topic(head)
                continue
            for sentence in _sentences(para):
                if len(sentence.split()) < 4 or sentence.endswith("?"):
                    continue
                text = _standalone(sentence, topic)
                facts.append(Fact(f"{chunk.id}/{n}", text, topic, chunk.id, chunk.text, spans_of(text)))
                n += 1
    return facts


_CHECKED = re.compile(r"\b[A-Z][A-Za-z]*[A-Z0-9][A-Za-z0-9-]*\b|\b[A-Z][a-z]+\b|\d[\d,.:]*")
_FRAMING = {"Yes", "No", "According", "The", "This", "In", "Every", "Each", "It", "A", "An"}


def unsupported(answer: str, source: str) -> list[str]:
    """The numbers and names of ``answer`` that ``source`` does not contain (empty: faithful)."""
    missing = []
    for token in _CHECKED.findall(answer):
        token = token.rstrip(".,:")
        if not token or token in _FRAMING:
            continue
        if token[0].isdigit():
            if not re.search(rf"(?<![\d]){re.escape(token)}(?![\d])", source):
                missing.append(token)
        elif token.lower() not in source.lower():
            missing.append(token)
    return missing

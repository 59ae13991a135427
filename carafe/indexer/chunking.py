"""Structure-aware chunking: sections by heading, then paragraphs, then sentences.

Each chunk stays under a token budget, starts with its section's heading trail
(so a chunk about "Carry-over" still says it belongs to "Annual leave"), and
repeats the tail of the previous chunk of the same section as overlap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")
_TOKEN = re.compile(r"\w+|[^\w\s]")


def count_tokens(text: str) -> int:
    """Cheap stand-in for word pieces: words plus punctuation marks."""
    return len(_TOKEN.findall(text))


@dataclass(frozen=True)
class Chunk:
    number: int
    text: str
    heading: str = ""


@dataclass
class _Section:
    trail: str
    paragraphs: list[str]


def _sections(text: str) -> list[_Section]:
    trail: list[tuple[int, str]] = []
    sections = [_Section("", [])]
    para: list[str] = []

    def end_paragraph() -> None:
        if para:
            sections[-1].paragraphs.append(" ".join(line.strip() for line in para).strip())
            para.clear()

    for line in text.splitlines():
        heading = _HEADING.match(line)
        if heading:
            end_paragraph()
            level = len(heading.group(1))
            trail = [(lv, t) for lv, t in trail if lv < level] + [(level, heading.group(2))]
            sections.append(_Section(" > ".join(t for _, t in trail), []))
        elif not line.strip():
            end_paragraph()
        else:
            para.append(line)
    end_paragraph()
    return [s for s in sections if s.paragraphs]


def _pieces(paragraph: str, budget: int) -> list[str]:
    """A paragraph cut into pieces under ``budget`` tokens: by sentence, then by word."""
    if count_tokens(paragraph) <= budget:
        return [paragraph]
    out: list[str] = []
    for sentence in _SENTENCE.split(paragraph):
        if count_tokens(sentence) <= budget:
            out.append(sentence)
            continue
        words, current = sentence.split(), list[str]()
        for word in words:
            if current and count_tokens(" ".join([*current, word])) > budget:
                out.append(" ".join(current))
                current = []
            current.append(word)
        if current:
            out.append(" ".join(current))
    return out


def _tail(text: str, tokens: int) -> str:
    if tokens <= 0:
        return ""
    words = text.split()
    tail: list[str] = []
    while words and count_tokens(" ".join([words[-1], *tail])) <= tokens:
        tail.insert(0, words.pop())
    return " ".join(tail)


def chunk_text(text: str, *, max_tokens: int = 200, overlap_tokens: int = 30, title: str = "") -> list[Chunk]:
    """Chunks of ``text`` numbered from 0, each at most about ``max_tokens`` tokens."""
    overlap_tokens = min(overlap_tokens, max_tokens // 4)
    chunks: list[Chunk] = []
    for section in _sections(text):
        trail = section.trail if section.trail != title else ""
        header = f"{trail}\n" if trail else ""
        budget = max(8, max_tokens - count_tokens(header) - overlap_tokens)
        body: list[str] = []
        size = 0
        previous = ""

        def flush() -> None:
            nonlocal previous, size
            if not body:
                return
            joined = "\n\n".join(body)
            lead = _tail(previous, overlap_tokens)
            chunks.append(Chunk(len(chunks), header + (f"… {lead}\n\n" if lead else "") + joined, trail))
            previous = joined
            body.clear()
            size = 0

        for paragraph in section.paragraphs:
            for piece in _pieces(paragraph, budget):
                n = count_tokens(piece)
                if body and size + n > budget:
                    flush()
                body.append(piece)
                size += n
        flush()
    return chunks

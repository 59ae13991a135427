"""The numbered-context prompt format shared by serving (gateway) and training (tuning).

Training data and live requests must put retrieved passages in front of the model in
exactly the same shape; this module is the single place that shape is defined.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

RAG_INSTRUCTIONS = (
    "Answer the user's question using only the numbered context passages below. "
    "Cite the passages you rely on as [n], for example [1] or [2][3]. "
    "If the context does not contain the answer, say plainly that the provided "
    "documents do not answer the question; do not guess and do not use outside knowledge."
)
NO_CONTEXT = "(no context passages were found for this question)"


@dataclass
class Passage:
    """One retrieved chunk of a document, as shown to the model and cited back."""

    doc_id: str
    title: str
    version: str
    chunk: int
    text: str
    score: float = 0.0
    path: str = ""
    sensitivity: str = ""


def _header(n: int, passage: Passage) -> str:
    title = passage.title.strip() or passage.doc_id
    return f"[{n}] {title} ({passage.doc_id}, version {passage.version}, chunk {passage.chunk})"


def render_context(passages: Sequence[Passage]) -> str:
    """Passages numbered from 1, each a header line then its text, blank-line separated."""
    if not passages:
        return NO_CONTEXT
    return "\n\n".join(f"{_header(n, p)}\n{p.text.strip()}" for n, p in enumerate(passages, start=1))


def rag_system_prompt(passages: Sequence[Passage], base_system: str | None = None) -> str:
    """System prompt: optional base system text, the citation instructions, then the context."""
    parts = []
    if base_system and base_system.strip():
        parts.append(base_system.strip())
    parts.append(RAG_INSTRUCTIONS)
    parts.append("Context:\n" + render_context(passages))
    return "\n\n".join(parts)

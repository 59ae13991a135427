"""The four cells: base, adapter, base + RAG, adapter + RAG, on questions the generator never saw.

Carafe's claim is that tuning and retrieval together beat either alone; that has to be
measured per recipe (fine-tuning + RAG is *not always* better than RAG alone). A knowledge
leaf's questions are its held-out seed questions plus, when present, a ``carafe.heldout.yaml``
beside its ``qna.yaml``: questions about facts that appear only in the document, written apart
from the recipe, each with the key facts a right answer must carry. The RAG cells retrieve the
leaf's own document chunks (MiniLM, top k) and put them in the gateway's prompt format.
The headline is key-fact accuracy: the share of answers carrying every key fact.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from carafe.tuning.documents import Chunk

HELDOUT_FILE = "carafe.heldout.yaml"
CELLS = ("base", "adapter", "base+rag", "adapter+rag")
Answerer = Callable[[list[str], list[str | None], bool], list[str]]  # (questions, systems, adapter) -> answers
Retriever = Callable[[str], list[Chunk]]


@dataclass
class Question:
    leaf: str
    question: str
    answer: str
    key_facts: list[str]
    source: str  # "seed" (held-out seed) or "document" (written apart, facts only in the document)


@dataclass
class CellItem:
    question: Question
    answers: dict[str, str] = field(default_factory=dict)
    correct: dict[str, bool] = field(default_factory=dict)


def read_heldout(leaf: str, folder: Path) -> list[Question]:
    """The leaf's written-apart questions (``carafe.heldout.yaml``: a list of question/answer/key_facts)."""
    path = folder / HELDOUT_FILE
    if not path.is_file():
        return []
    rows = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    return [
        Question(leaf, str(r["question"]), str(r.get("answer", "")), [str(k) for k in r["key_facts"]], "document")
        for r in rows
    ]


_VALUE = re.compile(r"\b[A-Z][A-Za-z]*[A-Z0-9][A-Za-z0-9-]*\b|\d[\d,.:]*\d|\b\d\b")


def seed_key_facts(question: str, answer: str) -> list[str]:
    """Key facts of a held-out seed: the numbers and names of its answer that the question does not give."""
    asked = question.lower()
    return [v for v in dict.fromkeys(_VALUE.findall(answer)) if v.lower() not in asked]


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.lower().replace(",", "")).strip()


def carries(answer: str, key_facts: list[str]) -> bool:
    """True when the answer contains every key fact (case and thousands separators ignored)."""
    got = _norm(answer)
    return all(re.search(rf"(?<![\w.]){re.escape(_norm(k))}(?![\w])", got) for k in key_facts)


def run_cells(questions: list[Question], answer: Answerer, retrieve: Retriever, system: Callable) -> list[CellItem]:
    """Every question in the four cells; ``system(chunks)`` renders the gateway's RAG system prompt."""
    items = [CellItem(q) for q in questions]
    texts = [q.question for q in questions]
    contexts: list[str | None] = [system(retrieve(q.question)) for q in questions]
    plain: list[str | None] = [None] * len(questions)
    for cell in CELLS:
        got = answer(texts, contexts if cell.endswith("+rag") else plain, cell.startswith("adapter"))
        for item, text in zip(items, got):
            item.answers[cell] = text
            item.correct[cell] = carries(text, item.question.key_facts)
    return items


def cell_metrics(items: list[CellItem]) -> dict[str, Any]:
    """Key-fact accuracy per cell, overall and per question source, with counts."""
    out: dict[str, Any] = {"questions": len(items)}
    for cell in CELLS:
        out[cell] = round(sum(i.correct[cell] for i in items) / len(items), 4) if items else 0.0
    for source in ("seed", "document"):
        part = [i for i in items if i.question.source == source]
        if part:
            out[source] = {cell: round(sum(i.correct[cell] for i in part) / len(part), 4) for cell in CELLS}
            out[source]["questions"] = len(part)
    return out


def items_dict(items: list[CellItem]) -> list[dict[str, Any]]:
    return [{**asdict(i.question), "answers": i.answers, "correct": i.correct} for i in items]

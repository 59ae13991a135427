"""Teacher prompts for each generation task, and the parsers that check the answers.

Each prompt's system message opens with ``Task: <name>`` so a log (or a rule-based
stand-in teacher) can tell the tasks apart. A parser raises :class:`JunkAnswer` when
the teacher's text is unusable; the caller retries, then counts a format drop.
"""

from __future__ import annotations

import json
import re
from typing import Any

from carafe.tuning.recipe import Recipe, SeedExample

Messages = list[dict[str, str]]


class JunkAnswer(ValueError):
    """The teacher answered, but not in the asked format."""


def _examples(seeds: list[SeedExample], with_context: bool = False) -> str:
    parts = []
    for s in seeds:
        ctx = f"Context: {s.context}\n" if with_context and s.context else ""
        parts.append(f"{ctx}Question: {s.question}\nAnswer: {s.answer}")
    return "\n\n".join(parts)


def knowledge_qa(recipe: Recipe, seeds: list[SeedExample], chunk: str, n: int) -> Messages:
    system = (
        "Task: knowledge_qa\nYou write question-answer pairs that teach facts from a document. "
        "Every answer must be supported by the document chunk alone. Reply with a JSON list of "
        'objects {"question": ..., "answer": ...} and nothing else.'
    )
    user = (
        f"Domain: {recipe.domain}\nDocument outline: {recipe.document_outline}\n\n"
        f"Examples of good pairs:\n<examples>\n{_examples(seeds[:6])}\n</examples>\n\n"
        f"Document chunk:\n<chunk>\n{chunk}\n</chunk>\n\nWrite {n} new pairs about this chunk."
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def skill_instructions(recipe: Recipe, seeds: list[SeedExample], n: int, context: str | None = None) -> Messages:
    system = (
        "Task: skill_instructions\nYou write new user requests for a skill, varied but similar in kind to the "
        "examples. Reply with a JSON list of strings and nothing else."
    )
    ctx = f"\nThe requests must be answerable from this context:\n<context>\n{context}\n</context>\n" if context else ""
    user = (
        f"Skill: {recipe.task_description}\n\nExamples:\n<examples>\n{_examples(seeds)}\n</examples>\n{ctx}\n"
        f"Write {n} new requests."
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def grounded_contexts(recipe: Recipe, seeds: list[SeedExample], n: int) -> Messages:
    system = (
        "Task: grounded_contexts\nYou write short new contexts (documents, emails, tables) like the examples' "
        "contexts. Reply with a JSON list of strings and nothing else."
    )
    user = (
        f"Skill: {recipe.task_description}\n\nExamples:\n<examples>\n{_examples(seeds, True)}\n</examples>\n\n"
        f"Write {n} new contexts."
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def skill_response(recipe: Recipe, seeds: list[SeedExample], instruction: str, context: str | None = None) -> Messages:
    system = (
        f"Task: skill_response\n{recipe.task_description}\nAnswer exactly in the manner of the examples.\n"
        f"<examples>\n{_examples(seeds, True)}\n</examples>"
    )
    user = f"Context: {context}\n\n{instruction}" if context else instruction
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def judge(question: str, answer: str, source: str | None) -> Messages:
    system = (
        "Task: judge\nYou grade a training sample from 1 (bad) to 5 (excellent) on faithfulness (the answer "
        "is supported by the source), relevance (the answer addresses the question) and quality (clear, "
        'correct, well written). Reply with JSON {"faithfulness": n, "relevance": n, "quality": n} only.'
    )
    src = (
        f"Source:\n<source>\n{source}\n</source>\n\n"
        if source
        else "Source: none (grade faithfulness 5 unless the answer invents facts)\n\n"
    )
    user = f"{src}Question: {question}\n\nAnswer: {answer}"
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def _json_block(text: str) -> Any:
    text = text.strip()
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.S)
    if fenced:
        text = fenced.group(1).strip()
    start = min((i for i in (text.find("["), text.find("{")) if i >= 0), default=-1)
    if start < 0:
        raise JunkAnswer("no JSON in the answer")
    try:
        return json.JSONDecoder().raw_decode(text[start:])[0]
    except json.JSONDecodeError as exc:
        raise JunkAnswer(f"invalid JSON: {exc}") from None


def parse_pairs(text: str) -> list[dict[str, str]]:
    data = _json_block(text)
    if not isinstance(data, list):
        raise JunkAnswer("expected a JSON list of pairs")
    pairs = [
        {"question": str(d["question"]).strip(), "answer": str(d["answer"]).strip()}
        for d in data
        if isinstance(d, dict) and d.get("question") and d.get("answer")
    ]
    if not pairs:
        raise JunkAnswer("no question/answer pair in the list")
    return pairs


def parse_strings(text: str) -> list[str]:
    data = _json_block(text)
    if not isinstance(data, list):
        raise JunkAnswer("expected a JSON list of strings")
    items = [str(d).strip() for d in data if isinstance(d, (str, int, float)) and str(d).strip()]
    if not items:
        raise JunkAnswer("empty list")
    return items


def parse_text(text: str) -> str:
    text = (text or "").strip()
    if not text:
        raise JunkAnswer("empty answer")
    return text


def parse_scores(text: str) -> dict[str, float]:
    data = _json_block(text)
    if not isinstance(data, dict):
        raise JunkAnswer("expected a JSON object of scores")
    try:
        scores = {k: float(data[k]) for k in ("faithfulness", "relevance", "quality")}
    except (KeyError, TypeError, ValueError):
        raise JunkAnswer("scores must hold faithfulness, relevance and quality numbers") from None
    if not all(1 <= v <= 5 for v in scores.values()):
        raise JunkAnswer("scores must be between 1 and 5")
    return scores

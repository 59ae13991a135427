"""Sample filters, applied in order, each counting what it drops and why."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from carafe.tuning.config import FilterConfig


@dataclass
class Candidate:
    """A generated question/answer before it becomes a training sample."""

    question: str
    answer: str
    stage: str  # knowledge_qa, skill, grounded_skill
    source: str | None = None  # the chunk or context the answer must be faithful to
    chunk: str | None = None  # chunk id
    context: str | None = None  # grounded-skill context shown to the model
    facts: tuple[str, ...] = ()  # the facts the answer states (offline generator), for per-fact coverage
    scores: dict[str, float] = field(default_factory=dict)

    def key(self) -> str:
        return f"{self.stage}\x1f{self.context or ''}\x1f{self.question.strip().lower()}"


@dataclass
class DropReport:
    """How many samples one leaf generated, and which filter dropped how many (with examples why)."""

    leaf: str
    generated: int = 0
    format_failures: int = 0  # teacher answers unusable after retries
    dropped: Counter = field(default_factory=Counter)
    reasons: dict[str, list[str]] = field(default_factory=dict)
    kept: int = 0
    per_fact: Counter = field(default_factory=Counter)  # samples stating each fact, RAFT copies included

    def drop(self, stage: str, why: str) -> None:
        self.dropped[stage] += 1
        examples = self.reasons.setdefault(stage, [])
        if len(examples) < 3:
            examples.append(why[:160])

    def to_dict(self) -> dict[str, Any]:
        return {
            "leaf": self.leaf,
            "generated": self.generated,
            "format_failures": self.format_failures,
            "dropped": dict(self.dropped),
            "reasons": self.reasons,
            "kept": self.kept,
            "facts": len(self.per_fact),
            "samples_per_fact_min": min(self.per_fact.values(), default=0),
            "samples_per_fact_mean": round(sum(self.per_fact.values()) / max(len(self.per_fact), 1), 1),
        }

    def emptied_by(self) -> str:
        """The stage that left nothing (for the empty-leaf error)."""
        if self.generated == 0:
            return (
                "format (no teacher answer could be parsed)"
                if self.format_failures
                else "generation (the teacher produced nothing)"
            )
        last = next(
            reversed(
                [
                    s
                    for s in ("length", "unfaithful", "exact_duplicate", "near_duplicate", "judge")
                    if self.dropped.get(s)
                ]
            ),
            "filters",
        )
        return last


def length_filter(cands: list[Candidate], cfg: FilterConfig, report: DropReport) -> list[Candidate]:
    kept = []
    for c in cands:
        if len(c.question) < cfg.min_question_chars:
            report.drop("length", f"question shorter than {cfg.min_question_chars} chars: {c.question!r}")
        elif not cfg.min_answer_chars <= len(c.answer) <= cfg.max_answer_chars:
            report.drop(
                "length", f"answer of {len(c.answer)} chars outside [{cfg.min_answer_chars}, {cfg.max_answer_chars}]"
            )
        else:
            kept.append(c)
    return kept


def faithful_filter(cands: list[Candidate], report: DropReport) -> list[Candidate]:
    """Drop a knowledge answer naming a number or name its source chunk does not contain."""
    from carafe.tuning.facts import unsupported

    kept = []
    for c in cands:
        missing = unsupported(c.answer, c.source) if c.source and c.chunk else []
        if missing:
            report.drop("unfaithful", f"{', '.join(missing[:3])} not in {c.chunk}: {c.answer!r}")
        else:
            kept.append(c)
    return kept


def exact_dedup(cands: list[Candidate], report: DropReport, seen: set[str] | None = None) -> list[Candidate]:
    seen = set() if seen is None else seen
    kept = []
    for c in cands:
        if c.key() in seen:
            report.drop("exact_duplicate", c.question)
        else:
            seen.add(c.key())
            kept.append(c)
    return kept


Encoder = Callable[[list[str]], Any]  # texts -> normalised embedding matrix (numpy)


def near_dedup(
    cands: list[Candidate], cfg: FilterConfig, report: DropReport, encode: Encoder | None
) -> list[Candidate]:
    """Drop a sample whose question+answer is too close (cosine) to an earlier kept one."""
    if encode is None or len(cands) < 2:
        return cands
    vecs = encode([f"{c.context or ''} {c.question} {c.answer}" for c in cands])
    kept_idx: list[int] = []
    for i, c in enumerate(cands):
        if kept_idx:
            sims = vecs[kept_idx] @ vecs[i]
            j = int(sims.argmax())
            if float(sims[j]) >= cfg.near_duplicate:
                report.drop(
                    "near_duplicate", f"{c.question!r} ~ {cands[kept_idx[j]].question!r} ({float(sims[j]):.3f})"
                )
                continue
        kept_idx.append(i)
    return [cands[i] for i in kept_idx]


def judge_filter(cands: list[Candidate], cfg: FilterConfig, report: DropReport) -> list[Candidate]:
    """Drop candidates whose lowest judge score is under the threshold (unscored ones pass)."""
    kept = []
    for c in cands:
        if c.scores and min(c.scores.values()) < cfg.min_judge_score:
            worst = min(c.scores, key=c.scores.get)  # type: ignore[arg-type]
            report.drop("judge", f"{worst}={c.scores[worst]:g} < {cfg.min_judge_score:g}: {c.question!r}")
        else:
            kept.append(c)
    return kept

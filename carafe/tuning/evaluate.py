"""Evaluation before publishing: held-out recipe questions, forgetting, and the gate.

Base and adapter answer the same held-out seed questions (never used for generation), with
greedy decoding; scores are exact match, ROUGE-L (token LCS), sign-off adherence for style
recipes and key-fact recall for knowledge recipes; with a teacher, teacher-as-judge
scores too (faithfulness to the reference answer, relevance, quality; 1-5). Forgetting is
measured as perplexity on a small general text and ROUGE-L on general questions, base vs
adapter.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from carafe.tuning import prompts
from carafe.tuning.cells import CellItem, Question, cell_metrics, items_dict, read_heldout, run_cells, seed_key_facts
from carafe.tuning.config import GateConfig
from carafe.tuning.documents import Chunk
from carafe.tuning.filters import Encoder
from carafe.tuning.recipe import Recipe, SeedExample

if TYPE_CHECKING:
    from carafe.tuning.teacher import Teacher

_TOKEN = re.compile(r"[a-z0-9]+(?:[.:-][a-z0-9]+)*")
_STOP = set(
    [
        "the",
        "a",
        "an",
        "of",
        "to",
        "in",
        "on",
        "and",
        "or",
        "is",
        "are",
        "be",
        "for",
        "with",
        "by",
        "at",
        "it",
        "this",
        "that",
        "what",
        "how",
        "who",
        "when",
        "where",
        "do",
        "does",
        "can",
        "i",
        "my",
        "your",
        "you",
        "we",
        "our",
        "yes",
        "no",
        "per",
        "every",
        "each",
        "from",
    ]
)


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def rouge_l(reference: str, candidate: str) -> float:
    """ROUGE-L F1 over lowercase word tokens."""
    ref, cand = tokens(reference), tokens(candidate)
    if not ref or not cand:
        return 0.0
    prev = [0] * (len(cand) + 1)
    for r in ref:
        cur = [0]
        for j, c in enumerate(cand):
            cur.append(prev[j] + 1 if r == c else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    p, rec = lcs / len(cand), lcs / len(ref)
    return 2 * p * rec / (p + rec)


def key_facts(answer: str, question: str) -> set[str]:
    """The answer's content words that the question does not give away (numbers, names, terms)."""
    q = set(tokens(question))
    return {
        t for t in tokens(answer) if t not in _STOP and t not in q and (any(ch.isdigit() for ch in t) or len(t) > 3)
    }


def fact_recall(reference: str, question: str, candidate: str) -> float:
    facts = key_facts(reference, question)
    if not facts:
        return 1.0
    got = set(tokens(candidate))
    return len(facts & got) / len(facts)


def _norm(text: str) -> str:
    return " ".join(tokens(text))


@dataclass
class EvalItem:
    leaf: str
    kind: str
    question: str
    reference: str
    base: str
    adapter: str


@dataclass
class EvalReport:
    items: list[EvalItem]
    metrics: dict[str, Any]  # {"base": {...}, "adapter": {...}, "cells": {...}}
    gate: dict[str, Any] = field(default_factory=dict)
    cells: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics,
            "gate": self.gate,
            "items": [asdict(i) for i in self.items],
            "cells": self.cells,
        }


def general_questions() -> list[dict[str, str]]:
    text = resources.files("carafe.tuning").joinpath("data/general_eval.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def general_text() -> list[str]:
    text = resources.files("carafe.tuning").joinpath("data/general_text.txt").read_text(encoding="utf-8")
    return [p.strip() for p in text.split("\n\n") if p.strip()]


def score(items: list[EvalItem], signoffs: dict[str, str], which: str) -> dict[str, float]:
    """Aggregate metrics of one side (`base` or `adapter`)."""
    out: dict[str, float] = {}
    recipe = [i for i in items if i.kind != "general"]
    if recipe:
        out["rougeL"] = sum(rouge_l(i.reference, getattr(i, which)) for i in recipe) / len(recipe)
        out["exact"] = sum(_norm(i.reference) == _norm(getattr(i, which)) for i in recipe) / len(recipe)
    style = [i for i in items if i.kind == "style" and i.leaf in signoffs]
    if style:
        out["style_adherence"] = sum(_norm(signoffs[i.leaf]) in _norm(getattr(i, which)) for i in style) / len(style)
    know = [i for i in items if i.kind == "knowledge"]
    if know:
        out["fact_recall"] = sum(fact_recall(i.reference, i.question, getattr(i, which)) for i in know) / len(know)
    general = [i for i in items if i.kind == "general"]
    if general:
        out["general_rougeL"] = sum(rouge_l(i.reference, getattr(i, which)) for i in general) / len(general)
    return {k: round(v, 4) for k, v in out.items()}


async def _judge_all(teacher: Teacher, items: list[EvalItem], concurrency: int) -> dict[str, list[float | None]]:
    sem = asyncio.Semaphore(concurrency)

    async def one(item: EvalItem, which: str) -> float | None:
        messages = prompts.judge(item.question, getattr(item, which), item.reference)
        async with sem:
            for _ in range(2):  # one retry on a junk verdict
                try:
                    scores = prompts.parse_scores(await teacher.complete(messages))
                except prompts.JunkAnswer:
                    continue
                return sum(scores.values()) / len(scores)
        return None

    sides = ("base", "adapter")
    got = await asyncio.gather(*(one(i, which) for which in sides for i in items))
    return {which: list(got[k * len(items) : (k + 1) * len(items)]) for k, which in enumerate(sides)}


def judge_scores(teacher: Teacher, items: list[EvalItem], *, concurrency: int = 4) -> dict[str, dict[str, float]]:
    """Teacher-as-judge on the held-out recipe questions, the reference answer as the source.

    Per side: ``judge`` (mean of the faithfulness/relevance/quality means, 1-5) over the
    answers the judge scored, and ``judge_unscored`` (junk verdicts even after a retry).
    A teacher that cannot be reached raises :class:`TeacherUnavailable`.
    """
    recipe = [i for i in items if i.kind != "general"]
    out: dict[str, dict[str, float]] = {}
    for which, got in asyncio.run(_judge_all(teacher, recipe, concurrency)).items():
        scored = [g for g in got if g is not None]
        out[which] = {"judge_unscored": float(len(got) - len(scored))}
        if scored:
            out[which]["judge"] = round(sum(scored) / len(scored), 4)
    return out


def apply_gate(metrics: dict[str, dict[str, float]], gate: GateConfig) -> dict[str, Any]:
    """Decide whether the adapter may be published; every failed check is listed."""
    base, ad = metrics["base"], metrics["adapter"]
    failed: list[str] = []
    if "rougeL" in ad and ad["rougeL"] - base.get("rougeL", 0.0) < gate.min_rougel_gain:
        failed.append(
            f"ROUGE-L gain {ad['rougeL'] - base.get('rougeL', 0.0):+.3f} < {gate.min_rougel_gain:+.3f} on held-out "
            f"recipe questions"
        )
    if "style_adherence" in ad and ad["style_adherence"] < gate.min_style_rate:
        failed.append(f"style adherence {ad['style_adherence']:.0%} < {gate.min_style_rate:.0%}")
    if gate.min_judge_gain is not None and "judge" not in ad:
        failed.append(
            "no judge score to gate on (eval_judge off, the teacher is the embedded model, or it was unreachable)"
        )
    elif gate.min_judge_gain is not None:
        gain = ad["judge"] - base.get("judge", 0.0)
        if gain < gate.min_judge_gain:
            failed.append(f"judge score gain {gain:+.2f} < {gate.min_judge_gain:+.2f} on held-out recipe questions")
    failed += _cell_failures(metrics.get("cells"), gate)
    if "perplexity" in ad and base.get("perplexity"):
        increase = ad["perplexity"] / base["perplexity"] - 1
        if increase > gate.max_perplexity_increase:
            failed.append(f"general-text perplexity +{increase:.1%} > +{gate.max_perplexity_increase:.0%} (forgetting)")
    return {"passed": not failed, "failed": failed, "enforced": gate.enforce}


def _cell_failures(cells: dict[str, Any] | None, gate: GateConfig) -> list[str]:
    """The four cells' checks: adapter + RAG against base + RAG, and the adapter alone."""
    if not cells or not cells.get("questions"):
        return []
    failed = []
    gain = cells["adapter+rag"] - cells["base+rag"]
    if gain < gate.min_rag_gain:
        failed.append(
            f"adapter + RAG key-fact accuracy {cells['adapter+rag']:.0%} is {gain * 100:+.0f} points from base + RAG "
            f"{cells['base+rag']:.0%} (needs {gate.min_rag_gain * 100:+.0f})"
        )
    if gate.min_adapter_accuracy is not None and cells["adapter"] < gate.min_adapter_accuracy:
        failed.append(f"adapter key-fact accuracy {cells['adapter']:.0%} < {gate.min_adapter_accuracy:.0%}")
    return failed


class Evaluator:
    """Runs base and adapter on the same prompts; the adapter is switched off for the base."""

    def __init__(self, models_dir: Path, adapter_dir: Path, device: Any = "cpu", base_model: str = "smollm2") -> None:
        from peft import PeftModel

        from carafe.tuning.base_model import load_base

        base, self.tok, _ = load_base(models_dir, device, base_model)
        self.model = PeftModel.from_pretrained(base, str(adapter_dir))
        self.model.eval()
        self.device = device

    def answers(
        self,
        questions: list[str],
        max_new_tokens: int,
        *,
        adapter: bool,
        batch: int = 8,
        systems: list[str | None] | None = None,
    ) -> list[str]:
        """Greedy answers; ``systems`` gives each question a system message (the RAG prompt)."""
        import torch

        self.tok.padding_side = "left"
        sys_msgs = systems or [None] * len(questions)
        chats = [
            ([{"role": "system", "content": s}] if s else []) + [{"role": "user", "content": q}]
            for q, s in zip(questions, sys_msgs)
        ]
        out: list[str] = []
        for i in range(0, len(questions), batch):
            prompts = [
                self.tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
                for chat in chats[i : i + batch]
            ]
            enc = self.tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
            with torch.no_grad():
                if adapter:
                    gen = self.model.generate(
                        **enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=self.tok.pad_token_id
                    )
                else:
                    with self.model.disable_adapter():
                        gen = self.model.generate(
                            **enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=self.tok.pad_token_id
                        )
            out += self.tok.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        return [o.strip() for o in out]

    def perplexity(self, texts: list[str], *, adapter: bool) -> float:
        import torch

        nll, count = 0.0, 0
        for text in texts:
            ids = self.tok(text, return_tensors="pt").input_ids.to(self.device)
            with torch.no_grad():
                if adapter:
                    loss = self.model(input_ids=ids, labels=ids).loss
                else:
                    with self.model.disable_adapter():
                        loss = self.model(input_ids=ids, labels=ids).loss
            n = ids.shape[1] - 1
            nll += float(loss) * n
            count += n
        return math.exp(nll / max(count, 1))


def evaluate(
    recipes: list[Recipe],
    heldout: list[tuple[Recipe, SeedExample]],
    models_dir: Path,
    adapter_dir: Path,
    gate: GateConfig,
    *,
    max_new_tokens: int = 64,
    device: Any = "cpu",
    base_model: str = "smollm2",
    judge: Teacher | None = None,
    judge_concurrency: int = 4,
    knowledge: KnowledgeEval | None = None,
) -> EvalReport:
    """Score base vs adapter (and let ``judge`` grade both when given), the four cells on knowledge
    questions when ``knowledge`` is given, then apply the gate."""
    ev = Evaluator(models_dir, adapter_dir, device, base_model)
    qs: list[tuple[str, str, str, str]] = [
        (r.leaf, r.kind, s.question if not s.context or r.is_knowledge else f"{s.context}\n\n{s.question}", s.answer)
        for r, s in heldout
    ]
    qs += [("general", "general", g["question"], g["answer"]) for g in general_questions()]
    prompts = [q for _, _, q, _ in qs]
    base = ev.answers(prompts, max_new_tokens, adapter=False)
    tuned = ev.answers(prompts, max_new_tokens, adapter=True)
    items = [EvalItem(leaf, kind, q, ref, b, a) for (leaf, kind, q, ref), b, a in zip(qs, base, tuned)]
    signoffs = {r.leaf: r.sidecar.signoff for r in recipes if r.kind == "style" and r.sidecar.signoff}
    metrics = {"base": score(items, signoffs, "base"), "adapter": score(items, signoffs, "adapter")}
    texts = general_text()
    metrics["base"]["perplexity"] = round(ev.perplexity(texts, adapter=False), 4)
    metrics["adapter"]["perplexity"] = round(ev.perplexity(texts, adapter=True), 4)
    if judge is not None:
        for side, values in judge_scores(judge, items, concurrency=judge_concurrency).items():
            metrics[side].update(values)
    report = EvalReport(items, metrics)
    if knowledge is not None and knowledge.questions:
        cells = knowledge.run(ev, max_new_tokens)
        metrics["cells"] = cell_metrics(cells)
        report.cells = items_dict(cells)
    report.gate = apply_gate(metrics, gate)
    return report


@dataclass
class KnowledgeEval:
    """The knowledge questions of the four cells and the chunks their RAG cells retrieve from."""

    questions: list[Question]
    chunks: list[tuple[str, Chunk]]  # (document title, chunk)
    top_k: int = 4
    encode: Encoder | None = None  # the sentence encoder (MiniLM, given by the CLI); None: word overlap

    @classmethod
    def of(
        cls,
        recipes: list[Recipe],
        holdout_seeds: int,
        read: Callable[[Recipe], list[Chunk]],
        top_k: int = 4,
        encode: Encoder | None = None,
    ) -> KnowledgeEval:
        questions: list[Question] = []
        chunks: list[tuple[str, Chunk]] = []
        for r in (r for r in recipes if r.is_knowledge):
            for s in r.split_seeds(holdout_seeds)[1]:
                questions.append(Question(r.leaf, s.question, s.answer, seed_key_facts(s.question, s.answer), "seed"))
            questions += read_heldout(r.leaf, r.path.parent)
            chunks += [(r.domain or r.leaf, c) for c in read(r)]
        return cls([q for q in questions if q.key_facts], chunks, top_k, encode)

    def _scorer(self) -> Callable[[str], list[float]]:
        """Question -> a score per chunk: cosine with the encoder, else shared words."""
        if self.encode is None:
            words = [set(tokens(c.text)) for _, c in self.chunks]
            return lambda q: [float(len(set(tokens(q)) & w)) for w in words]
        encode = self.encode
        vectors = encode([c.text for _, c in self.chunks])
        return lambda q: [float(x) for x in vectors @ encode([q])[0]]

    def run(self, ev: Evaluator, max_new_tokens: int) -> list[CellItem]:
        from carafe.indexer.prompt import Passage, rag_system_prompt

        score = self._scorer()
        titles = {c.id: t for t, c in self.chunks}

        def retrieve(question: str) -> list[Chunk]:
            scores = score(question)
            best = sorted(range(len(self.chunks)), key=lambda i: -float(scores[i]))[: self.top_k]
            return [self.chunks[i][1] for i in best]

        def system(found: list[Chunk]) -> str:
            return rag_system_prompt(
                [Passage(c.id.split("#")[0], titles[c.id], "1", int(c.id.rsplit("#", 1)[1]), c.text) for c in found]
            )

        def answer(questions: list[str], systems: list[str | None], adapter: bool) -> list[str]:
            return ev.answers(questions, max_new_tokens, adapter=adapter, systems=systems)

        return run_cells(self.questions, answer, retrieve, system)

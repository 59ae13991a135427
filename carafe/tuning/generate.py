"""Synthetic data generation: teacher calls per leaf, resumable, filtered, with a drop report.

Every teacher answer is appended to the leaf's ``units.jsonl`` the moment it arrives, so an
interrupted run resumes where it stopped and never pays for the same call twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from carafe.tuning import prompts
from carafe.tuning.config import TuningConfig
from carafe.tuning.documents import DocumentSource, chunk_documents
from carafe.tuning.errors import EmptyLeaf, TeacherUnavailable
from carafe.tuning.filters import (
    Candidate,
    DropReport,
    Encoder,
    exact_dedup,
    faithful_filter,
    judge_filter,
    length_filter,
    near_dedup,
)
from carafe.tuning.raft import raft_available, raft_messages
from carafe.tuning.recipe import Recipe, SeedExample
from carafe.tuning.teacher import Amplifier, Teacher

Advance = Callable[[str, int], None]  # (stage, how many units finished)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def leaf_slug(leaf: str) -> str:
    return leaf.replace("/", "__")


class UnitLog:
    """The append-only checkpoint of one leaf's teacher answers (unit id → raw text)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.done: dict[str, str] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                    self.done[rec["unit"]] = rec["text"]
                except (json.JSONDecodeError, KeyError):
                    continue  # a line cut by an interruption
        self._fh = path.open("a", encoding="utf-8")

    def put(self, unit: str, text: str) -> None:
        self.done[unit] = text
        self._fh.write(json.dumps({"unit": unit, "text": text}) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


@dataclass
class LeafResult:
    leaf: str
    phase: str
    samples: list[dict[str, Any]]
    report: DropReport


def estimate(recipes: list[Recipe], cfg: TuningConfig, docs: DocumentSource | None = None) -> list[dict[str, Any]]:
    """Before starting: teacher calls and samples expected per leaf."""
    g, rows, docs = cfg.generation, [], docs or DocumentSource(cfg.document_mirrors)
    for r in recipes:
        seeds, _ = r.split_seeds(g.holdout_seeds)
        if r.is_knowledge and cfg.teacher.endpoint in (None, "offline"):  # no calls: ~25 forms a fact
            from carafe.tuning.facts import extract_facts

            chunked = chunk_documents(docs.read(r), g.chunk_words)
            samples = round(len(extract_facts(chunked)) * 25 * (1 + g.raft_share))
            calls = len(chunked) + (samples if cfg.filters.judge else 0)
        elif r.is_knowledge:
            chunks = len(chunk_documents(docs.read(r), g.chunk_words))
            samples = chunks * g.qa_per_chunk
            calls = chunks + (samples if cfg.filters.judge else 0)
        else:
            grounded = any(s.context for s in seeds)
            samples = len(seeds) * g.instructions_per_seed
            calls = len(seeds) + samples * (2 if cfg.filters.judge else 1) + (1 if grounded else 0)
        rows.append(
            {"leaf": r.leaf, "kind": r.kind, "teacher_calls": calls, "samples": samples, "approx_bytes": samples * 400}
        )
    return rows


class LeafGenerator:
    """Generates, filters and renders one leaf's samples."""

    def __init__(
        self,
        recipe: Recipe,
        cfg: TuningConfig,
        teacher: Teacher,
        out: Path,
        sem: asyncio.Semaphore,
        encode: Encoder | None,
        advance: Advance | None,
        docs: DocumentSource,
    ) -> None:
        self.r, self.cfg, self.teacher, self.sem, self.encode, self.docs = recipe, cfg, teacher, sem, encode, docs
        self.advance = advance or (lambda stage, n: None)
        self.folder = out / leaf_slug(recipe.leaf)
        self.report = DropReport(recipe.leaf)
        self.seeds, _ = recipe.split_seeds(cfg.generation.holdout_seeds)

    async def ask(self, unit: str, messages: prompts.Messages, parse: Callable[[str], Any], stage: str) -> Any:
        """One teacher call, from the checkpoint when done before; None after junk on every retry."""
        log = self.log
        if unit in log.done:
            try:
                return parse(log.done[unit])
            finally:
                self.advance(stage, 1)
        tries = self.cfg.teacher.retries + 1
        try:
            for attempt in range(tries):
                try:
                    async with self.sem:
                        text = await self.teacher.complete(messages)
                    value = parse(text)
                except prompts.JunkAnswer:
                    continue
                except TeacherUnavailable as exc:
                    if attempt + 1 == tries:
                        raise TeacherUnavailable(
                            f"leaf {self.r.leaf}: {exc.message} (after {tries} tries). The {len(log.done)} answers "
                            f"received so "
                            f"far are kept in {log.path}; run again to resume."
                        ) from exc
                    await asyncio.sleep(min(0.2 * 2**attempt, 5.0))
                    continue
                log.put(unit, text)
                return value
            self.report.format_failures += 1
            return None
        finally:
            self.advance(stage, 1)

    async def _knowledge(self) -> tuple[list[Candidate], dict[str, str]]:
        g = self.cfg.generation
        chunks = chunk_documents(self.docs.read(self.r), g.chunk_words)
        if isinstance(self.teacher, Amplifier):  # the offline generator: candidates straight from the text
            self.advance("generate", len(chunks))
            return await asyncio.to_thread(self.teacher.amplify, self.r, chunks), {c.id: c.text for c in chunks}
        answers = await asyncio.gather(
            *(
                self.ask(
                    f"qa:{c.id}:{_sha(c.text)}",
                    prompts.knowledge_qa(self.r, self.seeds, c.text, g.qa_per_chunk),
                    prompts.parse_pairs,
                    "generate",
                )
                for c in chunks
            )
        )
        cands = [
            Candidate(p["question"], p["answer"], "knowledge_qa", source=c.text, chunk=c.id)
            for c, pairs in zip(chunks, answers)
            for p in (pairs or [])
        ]
        return cands, {c.id: c.text for c in chunks}

    async def _skill(self) -> list[Candidate]:
        g = self.cfg.generation
        contexts: list[str | None] = [None]
        if any(s.context for s in self.seeds):
            found = await self.ask(
                "contexts",
                prompts.grounded_contexts(self.r, self.seeds, len(self.seeds)),
                prompts.parse_strings,
                "generate",
            )
            contexts = list(found or [])
        jobs = []
        for i in range(len(self.seeds) if contexts == [None] else len(contexts)):
            ctx = contexts[0] if contexts == [None] else contexts[i]
            rotated = self.seeds[i % len(self.seeds) :] + self.seeds[: i % len(self.seeds)]
            jobs.append(
                (
                    ctx,
                    self.ask(
                        f"instr:{i}:{_sha(str(ctx))}",
                        prompts.skill_instructions(self.r, rotated, g.instructions_per_seed, ctx),
                        prompts.parse_strings,
                        "generate",
                    ),
                )
            )
        instructions = [
            (ctx, q)
            for (ctx, _), found in zip(jobs, await asyncio.gather(*(j for _, j in jobs)))
            for q in (found or [])
        ]
        responses = await asyncio.gather(
            *(
                self.ask(
                    f"resp:{_sha(str(ctx) + q)}",
                    prompts.skill_response(self.r, self.seeds, q, ctx),
                    prompts.parse_text,
                    "generate",
                )
                for ctx, q in instructions
            )
        )
        stage = "grounded_skill" if contexts != [None] else "skill"
        return [Candidate(q, a, stage, source=ctx, context=ctx) for (ctx, q), a in zip(instructions, responses) if a]

    async def _judge(self, cands: list[Candidate]) -> None:
        scores = await asyncio.gather(
            *(
                self.ask(
                    f"judge:{_sha(c.key() + c.answer)}",
                    prompts.judge(c.question, c.answer, c.source),
                    prompts.parse_scores,
                    "judge",
                )
                for c in cands
            )
        )
        for c, s in zip(cands, scores):
            c.scores = s or {}

    def _filter(self, cands: list[Candidate]) -> list[Candidate]:
        f = self.cfg.filters
        cands = length_filter(cands, f, self.report)
        cands = faithful_filter(cands, self.report)
        cands = exact_dedup(cands, self.report)
        return near_dedup(cands, f, self.report, self.encode)

    def _seed_samples(self) -> list[dict[str, Any]]:
        ctx = (lambda s: None) if self.r.is_knowledge else (lambda s: s.context)  # knowledge contexts are the document
        return [self._sample(_plain(s.question, s.answer, ctx(s)), "seed", {}) for s in self.seeds]

    def _sample(self, messages: list[dict[str, str]], stage: str, extra: dict[str, Any]) -> dict[str, Any]:
        return {
            "messages": messages,
            "phase": "knowledge" if self.r.is_knowledge else "skills",
            "provenance": {
                "leaf": self.r.leaf,
                "recipe_sha256": self.r.sha256,
                "teacher": self.teacher.name,
                "stage": stage,
                **extra,
            },
        }

    async def run(self) -> LeafResult:
        self.log = UnitLog(self.folder / "units.jsonl")
        try:
            chunks: dict[str, str] = {}
            if self.r.is_knowledge:
                cands, chunks = await self._knowledge()
            else:
                cands = await self._skill()
            self.report.generated = len(cands)
            cands = self._filter(cands)
            if self.cfg.filters.judge and cands:
                await self._judge(cands)
                cands = judge_filter(cands, self.cfg.filters, self.report)
        finally:
            self.log.close()
        if not cands:
            raise EmptyLeaf(
                f"leaf {self.r.leaf}: no sample left after the {self.report.emptied_by()} stage "
                f"(generated {self.report.generated}, dropped {dict(self.report.dropped)}); "
                f"see the teacher's answers in {self.folder / 'units.jsonl'}"
            )
        self.report.kept = len(cands)
        samples = self._seed_samples() + self._render(cands, chunks)
        for s in samples:  # a gold-removed RAFT sample does not state its fact
            if s["provenance"]["stage"] != "raft_no_answer":
                self.report.per_fact.update(s["provenance"].get("facts", []))
        return LeafResult(self.r.leaf, "knowledge" if self.r.is_knowledge else "skills", samples, self.report)

    def _render(self, cands: list[Candidate], chunks: dict[str, str]) -> list[dict[str, Any]]:
        """Each candidate as a plain sample; a `raft_share` of knowledge ones also with retrieved passages."""
        g = self.cfg.generation
        rng = random.Random(f"{g.seed}/{self.r.leaf}")
        use_raft = self.r.is_knowledge and g.raft_share > 0 and len(chunks) > 1 and raft_available()
        out = []
        for c in cands:
            extra = {"chunk": c.chunk, "scores": c.scores, **({"facts": list(c.facts)} if c.facts else {})}
            out.append(self._sample(_plain(c.question, c.answer, c.context), c.stage, extra))
            if use_raft and c.chunk and rng.random() < g.raft_share:
                no_answer = rng.random() < g.raft_no_answer_share
                msgs = raft_messages(
                    c,
                    chunks,
                    rng,
                    distractors=g.raft_distractors,
                    no_answer=no_answer,
                    title=self.r.domain or self.r.leaf,
                )
                out.append(self._sample(msgs, "raft_no_answer" if no_answer else "raft", extra))
        return out


def _plain(question: str, answer: str, context: str | None) -> list[dict[str, str]]:
    user = f"{context}\n\n{question}" if context else question
    return [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]


async def generate_leaves(
    recipes: list[Recipe],
    cfg: TuningConfig,
    teacher: Teacher,
    out: Path,
    *,
    encode: Encoder | None = None,
    advance: Advance | None = None,
    docs: DocumentSource | None = None,
) -> list[LeafResult]:
    """Generate every leaf concurrently under one bound on teacher requests in flight."""
    sem = asyncio.Semaphore(cfg.teacher.concurrency)
    docs = docs or DocumentSource(cfg.document_mirrors)
    gens = [LeafGenerator(r, cfg, teacher, out, sem, encode, advance, docs) for r in recipes]
    results = await asyncio.gather(*(g.run() for g in gens), return_exceptions=True)
    for res in results:
        if isinstance(res, BaseException):
            raise res
    for g, res in zip(gens, results):
        (g.folder / "report.json").write_text(json.dumps(res.report.to_dict(), indent=2))  # type: ignore[union-attr]
    return results  # type: ignore[return-value]


def write_dataset(results: list[LeafResult], path: Path) -> tuple[str, int]:
    """Write all samples as messages JSONL; return (sha256, count)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(s, sort_keys=True) for r in results for s in r.samples]
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest(), len(lines)


def holdout(recipes: list[Recipe], cfg: TuningConfig) -> list[tuple[Recipe, SeedExample]]:
    return [(r, s) for r in recipes for s in r.split_seeds(cfg.generation.holdout_seeds)[1]]

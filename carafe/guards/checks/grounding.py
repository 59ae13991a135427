"""Grounding: how well is each answer sentence supported by the retrieved
passages? Per sentence the max cosine similarity to any passage (passages are
split in sentences too, so one supporting sentence is enough)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import numpy as np

from carafe.guards.checks import Subject, decide
from carafe.guards.config import CheckSettings
from carafe.guards.registry import CheckContext, register
from carafe.guards.verdict import GuardVerdict, skipped

_SENT = re.compile(r"(?<=[.!?])\s+|\n+")


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENT.split(text) if s and s.strip()]


def passage_text(p: Any) -> str:
    return p if isinstance(p, str) else str(getattr(p, "text", "") or "")


class PassageIndex:
    """Embeddings of one request's passages (split in sentences plus whole),
    computed once per output stream."""

    def __init__(self, passages: list[Any], embedder: Any) -> None:
        self.units: list[str] = []
        for p in passages:
            text = passage_text(p)
            self.units += [text[:2000]] + [s for s in sentences(text) if len(s.split()) >= 3]
        self.embedder = embedder
        self.support: dict[str, float] = {}  # sentence -> best similarity, so finish() re-embeds nothing
        self._emb: np.ndarray | None = None
        self._lock = asyncio.Lock()

    async def embeddings(self) -> np.ndarray:
        async with self._lock:
            if self._emb is None:
                emb: np.ndarray = await asyncio.to_thread(self.embedder.encode, self.units)
                self._emb = emb
                return emb
            return self._emb


class GroundingCheck:
    """Scores a piece of answer; fires when support is BELOW the threshold."""

    name = "grounding"
    cost = 5

    def __init__(self, min_words: int = 4) -> None:
        self.min_words = min_words

    async def support(self, text: str, index: PassageIndex, threshold: float = 0.35) -> tuple[float, int, int]:
        """(lowest support over scored sentences, sentences scored, sentences below ``threshold``)."""
        sents = [s for s in sentences(text) if len(s.split()) >= self.min_words]
        if not sents or not index.units:
            return 1.0, 0, 0
        todo = [s for s in dict.fromkeys(sents) if s not in index.support]
        if todo:
            emb = await asyncio.to_thread(index.embedder.encode, todo)
            for sent, sim in zip(todo, (emb @ (await index.embeddings()).T).max(axis=1)):
                index.support[sent] = float(sim)
        sims = np.array([index.support[s] for s in sents])
        return float(sims.min()), len(sents), int((sims < threshold).sum())

    async def check(self, subject: Subject, settings: CheckSettings) -> GuardVerdict:
        index: PassageIndex | None = subject.passage_index
        if index is None or not index.units:
            return skipped(self.name, "no passages were retrieved for this answer", stage=subject.stage)
        low, n, _ = await self.support(subject.text, index)
        if n == 0:
            return GuardVerdict(
                check=self.name,
                category="none",
                score=low,
                stage=subject.stage,
                reason="no sentence long enough to score",
            )
        return decide(
            self.name,
            "ungrounded",
            low,
            settings,
            f"a sentence of the answer is weakly supported by the passages (similarity {low:.2f})",
            stage=subject.stage,
            below=True,
        )


@register("grounding", stages=("output",))
def build(ctx: CheckContext) -> GroundingCheck:
    return GroundingCheck(ctx.config.min_grounding_words)

"""Deny-listed topics per policy: keyword phrases, then embedding similarity to
the topic's descriptions."""

from __future__ import annotations

import asyncio
import re

import numpy as np

from carafe.guards.checks import Subject, decide
from carafe.guards.config import CheckSettings, TopicConfig
from carafe.guards.registry import CheckContext, register
from carafe.guards.verdict import GuardVerdict


class TopicsCheck:
    """Fires when the text is about a topic the policy denies."""

    name = "topics"
    cost = 4

    def __init__(self, topics: dict[str, TopicConfig]) -> None:
        self.topics = topics
        self._phrases = {
            name: re.compile(r"\b(" + "|".join(re.escape(p) for p in t.phrases) + r")\b", re.IGNORECASE)
            for name, t in topics.items()
            if t.phrases
        }
        self._desc: dict[str, np.ndarray] = {}
        self._lock = asyncio.Lock()

    async def _descriptions(self, embedder: object, names: list[str]) -> dict[str, np.ndarray]:
        async with self._lock:
            todo = [n for n in names if n not in self._desc and self.topics[n].descriptions]
            for name in todo:
                self._desc[name] = await asyncio.to_thread(embedder.encode, self.topics[name].descriptions)  # type: ignore[attr-defined]
        return {n: self._desc[n] for n in names if n in self._desc}

    async def check(self, subject: Subject, settings: CheckSettings) -> GuardVerdict:
        deny = subject.policy.deny_topics if subject.policy is not None else []
        names = [n for n in deny if n in self.topics]
        if not names:
            return GuardVerdict(check=self.name, category="none", stage=subject.stage, reason="no denied topics")
        for name in names:
            rx = self._phrases.get(name)
            if rx is not None and rx.search(subject.normalized):
                return decide(
                    self.name,
                    name,
                    1.0,
                    settings,
                    f"the text is about a denied topic: {name.replace('_', ' ')}",
                    stage=subject.stage,
                )
        if subject.embedder is None:
            return GuardVerdict(
                check=self.name, category="none", stage=subject.stage, reason="phrases only: no embedder"
            )
        emb = await subject.embedding()
        best, best_name = 0.0, "none"
        for name, desc in (await self._descriptions(subject.embedder, names)).items():
            sim = float((emb @ desc.T).max())
            if sim > best:
                best, best_name = sim, name
        return decide(
            self.name,
            best_name,
            best,
            settings,
            f"the text is close ({best:.2f}) to the denied topic {best_name.replace('_', ' ')}",
            stage=subject.stage,
        )


@register("topics", stages=("input",))
def build(ctx: CheckContext) -> TopicsCheck:
    return TopicsCheck(ctx.config.topics)

"""Prompt injection / jailbreak check: rule families (also on decoded payloads)
plus classifiers trained on Carafe's labelled set and public corpora (see carafe.guards.corpora)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from carafe.guards.checks import Subject, decide, off_loop
from carafe.guards.checks.injection_rules import match_rules
from carafe.guards.classifier import LinearClassifier, NgramClassifier, load_jsonl, load_or_fit, load_or_fit_ngram
from carafe.guards.config import CheckSettings
from carafe.guards.corpora import training_rows
from carafe.guards.registry import CheckContext, register
from carafe.guards.verdict import GuardVerdict

RULE_SCORE = 0.97


class InjectionCheck:
    """Score = rule hit, else the classifier's probability; category names the family.

    ``kind`` picks the classifier: ``ngram`` (TF-IDF word/char n-grams, the default: no model
    call, and the best left-out-corpus recall at FPR <= 0.02 in bench/guard_select.py),
    ``embedding`` (MiniLM + logistic regression) or ``ensemble`` (the mean of the two)."""

    name = "injection"
    cost = 3

    def __init__(
        self,
        embedder_model_id: str = "all-MiniLM-L6-v2",
        *,
        extra_train: str | None = None,
        cache_dir: str | Path | None = None,
        kind: str = "ngram",
    ) -> None:
        self.rows = training_rows()
        if extra_train:
            self.rows += load_jsonl(extra_train)
        self.model_id = embedder_model_id
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._clf: LinearClassifier | None = None
        self._lock = threading.Lock()
        self.kind = kind
        self._ngram: NgramClassifier | None = (
            load_or_fit_ngram(self.rows, self.cache_dir) if kind != "embedding" else None
        )

    def classifier(self, embedder: Any) -> LinearClassifier:
        with self._lock:
            if self._clf is None:
                self._clf = load_or_fit("injection", self.rows, embedder, self.model_id, self.cache_dir)
            return self._clf

    async def check(self, subject: Subject, settings: CheckSettings) -> GuardVerdict:
        hit = await off_loop(len(subject.normalized), match_rules, subject.normalized)
        if hit is not None:
            via = "" if hit.via == "plain" else f" (in a {hit.via}-encoded payload)"
            return decide(
                self.name,
                hit.family,
                RULE_SCORE,
                settings,
                f"the text matches the {hit.family.replace('_', ' ')} rules{via}",
                stage=subject.stage,
            )
        if self.kind == "ngram":
            score = await self._ngram_score(subject)
            return decide(
                self.name,
                "classifier",
                score,
                settings,
                f"the injection classifier (n-grams) scores the text {score:.2f}",
                stage=subject.stage,
            )
        if subject.embedder is None:
            return GuardVerdict(
                check=self.name,
                category="none",
                stage=subject.stage,
                reason="rules only: no embedder for the classifier",
            )
        emb = await subject.embedding()
        score = float(self.classifier(subject.embedder).proba(emb).max())
        if self.kind == "ensemble":
            score = (score + await self._ngram_score(subject)) / 2
        return decide(
            self.name,
            "classifier",
            score,
            settings,
            f"the injection classifier scores the text {score:.2f}",
            stage=subject.stage,
        )

    async def _ngram_score(self, subject: Subject) -> float:
        assert self._ngram is not None
        return float((await off_loop(len(subject.normalized), self._ngram.proba, [subject.normalized]))[0])


@register("injection", stages=("input",))
def build(ctx: CheckContext) -> InjectionCheck:
    c = ctx.config
    check = InjectionCheck(
        getattr(ctx.embedder, "model_id", "all-MiniLM-L6-v2"),
        extra_train=c.injection_train_data,
        cache_dir=Path(c.cache_dir).expanduser() if c.cache_dir else None,
        kind=c.injection_classifier,
    )
    if c.injection_classifier != "ngram":
        check.classifier(ctx.embedder)  # shipped/cached weights load at once; a refit happens here, not on a request
    return check

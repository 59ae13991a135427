"""Restricted-content leak: an adapter may have memorized documents the caller
may not see. Each answer piece is compared with indexed chunks the caller is
NOT allowed to read (``leak_index.restricted_matches``); a close match is
redacted or blocked.

Text the caller dictated themselves (present verbatim in their own request: a
``guided_choice`` option, a quoted passage) is never a leak and is not even
compared: otherwise *withheld* vs *released* on a forced output would tell the
caller whether their guess resembles a document they may not read (an oracle).
A failure of the index fails closed (``protects_data``)."""

from __future__ import annotations

import re
from typing import Any, Protocol

from carafe.guards.checks import Subject, decide
from carafe.guards.config import CheckSettings
from carafe.guards.registry import CheckContext, register
from carafe.guards.verdict import GuardVerdict, skipped

WITHHELD = "[withheld: this passage matches content you are not permitted to see]"


class LeakIndex(Protocol):
    async def restricted_matches(self, text: str, principal: Any) -> list[tuple[str, float, str]]:
        """(doc_id, similarity, chunk text) of indexed chunks the principal may NOT see."""
        ...


def _overlap(answer: str, chunk: str, n: int = 5) -> float:
    """Share of the answer's word 5-grams found verbatim in the chunk (memorization shows as copying)."""
    a, c = answer.lower().split(), chunk.lower().split()
    grams = {tuple(a[i : i + n]) for i in range(len(a) - n + 1)}
    if not grams:
        return 0.0
    chunk_grams = {tuple(c[i : i + n]) for i in range(len(c) - n + 1)}
    return len(grams & chunk_grams) / len(grams)


def _folded(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.casefold()))


def dictated_by_caller(text: str, caller_texts: tuple[str, ...]) -> bool:
    """Whether ``text`` (words only, case-folded) appears whole in one of the caller's own texts."""
    words = _folded(text)
    return bool(words) and any(words in _folded(t) for t in caller_texts)


class LeakCheck:
    """Score = max(similarity, verbatim 5-gram overlap) over restricted chunks."""

    name = "leak"
    cost = 6
    protects_data = True

    def __init__(self, index: LeakIndex | None) -> None:
        self.index = index

    async def check(self, subject: Subject, settings: CheckSettings) -> GuardVerdict:
        if self.index is None:
            return skipped(self.name, "no leak index is configured", stage=subject.stage)
        if len(subject.text.split()) < 4:
            return GuardVerdict(check=self.name, category="none", stage=subject.stage, reason="too short to compare")
        if dictated_by_caller(subject.text, subject.caller_texts):
            return GuardVerdict(
                check=self.name,
                category="none",
                stage=subject.stage,
                reason="the caller's own text, from their request",
            )
        matches = await self.index.restricted_matches(subject.text, subject.principal)
        best, _best_doc = 0.0, ""
        for doc_id, sim, chunk in matches:
            score = max(float(sim), _overlap(subject.text, chunk))
            if score > best:
                best, _best_doc = score, doc_id
        # Never name the restricted document in the reason: its id may itself be sensitive.
        return decide(
            self.name,
            "restricted_content",
            best,
            settings,
            f"the text closely matches a document you may not see (similarity {best:.2f})",
            stage=subject.stage,
            can_redact=True,
            redacted=WITHHELD,
        )


@register("leak", stages=("output",))
def build(ctx: CheckContext) -> LeakCheck:
    return LeakCheck(ctx.leak_index)

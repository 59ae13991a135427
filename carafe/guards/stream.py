"""Streaming-aware output guarding: text is released sentence by sentence,
each sentence only after the output checks passed it."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from carafe.guards.checks.grounding import PassageIndex
from carafe.guards.checks.leak import WITHHELD
from carafe.guards.config import PolicyConfig
from carafe.guards.verdict import GuardVerdict

if TYPE_CHECKING:
    from carafe.guards.pipeline import GuardPipeline

# A sentence ends at . ! ? … possibly followed by closing quotes/brackets,
# then whitespace (which must have arrived: "3." may still become "3.14"); at a
# CJK full stop (no space follows those); or at a line break.
_BOUNDARY = re.compile(r"[.!?…]+[\"'”’)\]]*\s+|[。！？]+[」』”’）]*|\n+")


@dataclass
class Release:
    """What the caller may send now: ``text`` passed the checks (redactions
    applied). With ``blocked`` set the answer ends here (finish_reason
    ``content_filter``); ``text`` then holds what passed before the block."""

    text: str
    verdicts: list[GuardVerdict] = field(default_factory=list)
    blocked: GuardVerdict | None = None


def apply_redactions(text: str, verdicts: list[GuardVerdict]) -> str:
    """The text after the verdicts' redactions: a leak withholds the whole
    piece; otherwise the PII redaction (the only span-level one) applies."""
    redacting = [v for v in verdicts if v.action == "redact" and v.redacted is not None]
    if any(v.check == "leak" for v in redacting):
        return WITHHELD + (" " if text.endswith((" ", "\n")) else "")
    for v in redacting:
        return v.redacted  # type: ignore[return-value]
    return text


def split_complete(buffer: str, max_pending: int) -> tuple[list[str], str]:
    """(complete sentences, remainder) of ``buffer``; a remainder longer than
    ``max_pending`` without a sentence end is cut at its last space."""
    pieces: list[str] = []
    start = 0
    for m in _BOUNDARY.finditer(buffer):
        pieces.append(buffer[start : m.end()])
        start = m.end()
    rest = buffer[start:]
    if len(rest) > max_pending:
        cut = rest.rfind(" ", 0, max_pending) + 1 or max_pending
        pieces.append(rest[:cut])
        rest = rest[cut:]
    return pieces, rest


class OutputStream:
    """Guards one answer. ``feed`` deltas as they come, then ``finish``."""

    def __init__(
        self,
        pipeline: GuardPipeline,
        policy: PolicyConfig,
        *,
        principal: Any = None,
        passages: list[Any] | None = None,
        caller_texts: tuple[str, ...] = (),
    ) -> None:
        self.pipeline = pipeline
        self.policy = policy
        self.principal = principal
        self.caller_texts = caller_texts
        self._index = PassageIndex(passages, pipeline.embedder) if passages else None
        self._buffer = ""
        self._released: list[str] = []
        self._verdicts: list[GuardVerdict] = []
        self._blocked: GuardVerdict | None = None
        self._finished = False
        self._skip_all = not pipeline.config.enabled

    @property
    def verdicts(self) -> list[GuardVerdict]:
        """Every verdict so far, in order (for the trace)."""
        return list(self._verdicts)

    @property
    def blocked(self) -> GuardVerdict | None:
        return self._blocked

    async def feed(self, delta: str) -> Release:
        """Add generated text; returns the sentences that passed since the last call."""
        if self._blocked is not None or self._finished:
            return Release("", [], self._blocked)
        self._buffer += delta
        if self._skip_all:
            text, self._buffer = self._buffer, ""
            return Release(text)
        pieces, self._buffer = split_complete(self._buffer, self.pipeline.config.stream_max_pending_chars)
        return await self._check(pieces)

    async def finish(self) -> Release:
        """Check and release the remainder; then score the whole answer's grounding."""
        if self._blocked is not None or self._finished:
            return Release("", [], self._blocked)
        self._finished = True
        rest, self._buffer = self._buffer, ""
        release = await self._check([rest] if rest else [])
        if release.blocked is None and not self._skip_all:
            summary = await self._answer_grounding()
            if summary is not None:
                self._verdicts.append(summary)
                release.verdicts.append(summary)
        return release

    async def _check(self, pieces: list[str]) -> Release:
        if not pieces:
            return Release("")
        # Pieces are checked concurrently but released in order, up to the first block.
        results = await asyncio.gather(*(self._check_piece(p) for p in pieces))
        out: list[str] = []
        new: list[GuardVerdict] = []
        for piece, verdicts in zip(pieces, results):
            new += verdicts
            blocked = next((v for v in verdicts if v.action == "block"), None)
            if blocked is not None:
                self._blocked = blocked
                break
            out.append(apply_redactions(piece, verdicts))
        self._verdicts += new
        text = "".join(out)
        self._released.append(text)
        return Release(text, new, self._blocked)

    async def _check_piece(self, piece: str) -> list[GuardVerdict]:
        if not piece.strip():
            return []
        subject = self.pipeline.subject(
            piece,
            "output",
            self.policy,
            principal=self.principal,
            passage_index=self._index,
            role="assistant",
            caller_texts=self.caller_texts,
        )
        return await self.pipeline.run(subject, "output", self.policy)

    async def _answer_grounding(self) -> GuardVerdict | None:
        """A log-only verdict with the share of the answer's sentences the passages support."""
        settings = self.policy.output.get("grounding")
        check = self.pipeline.checks.get("grounding")
        if settings is None or not settings.enabled or check is None or self._index is None:
            return None
        answer = "".join(self._released)
        low, scored, weak = await check.support(answer, self._index, settings.threshold)  # type: ignore[attr-defined]
        share = 1.0 if scored == 0 else (scored - weak) / scored
        return GuardVerdict(
            check="grounding",
            category="answer",
            score=share,
            stage="output",
            flagged=low < settings.threshold,
            reason=f"{scored - weak} of {scored} scored sentences are supported by the passages",
        )

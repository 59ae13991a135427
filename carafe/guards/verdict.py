"""What a check says about a text: :class:`GuardVerdict`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

VerdictAction = Literal["allow", "redact", "block"]


@dataclass(frozen=True)
class Span:
    """A detected stretch of text (PII entity, leaked chunk) in the checked text."""

    start: int
    end: int
    kind: str
    score: float = 1.0


@dataclass
class GuardVerdict:
    """One check's verdict on one text.

    ``action`` is what the gateway must do (``allow`` also covers a hit the
    policy only logs: then ``flagged`` is true). ``redacted`` holds the text with
    redactions applied when ``action == "redact"``. Never put raw text in
    trace attributes: :meth:`to_attributes` only exports numbers and labels.
    """

    check: str
    category: str
    action: VerdictAction = "allow"
    score: float = 0.0
    reason: str = ""
    latency_ms: float = 0.0
    redacted: str | None = None
    flagged: bool = False
    skipped: bool = False
    error: bool = False  # the check itself failed (``action`` then says how it failed: open or closed)
    stage: Literal["input", "output"] = "input"
    spans: list[Span] = field(default_factory=list, repr=False)

    def to_attributes(self) -> dict[str, str | float | int | bool]:
        """Trace attributes ``carafe.guard.<check>.*`` (no raw text)."""
        p = f"carafe.guard.{self.check}"
        return {
            f"{p}.action": self.action,
            f"{p}.category": self.category,
            f"{p}.score": round(float(self.score), 4),
            f"{p}.latency_ms": round(float(self.latency_ms), 3),
            f"{p}.flagged": self.flagged,
            f"{p}.skipped": self.skipped,
            f"{p}.error": self.error,
            f"{p}.stage": self.stage,
        }


def skipped(check: str, reason: str, *, stage: Literal["input", "output"] = "input") -> GuardVerdict:
    """A verdict for a check that could not run (no passages, no leak index...)."""
    return GuardVerdict(check=check, category="skipped", reason=reason, skipped=True, stage=stage)

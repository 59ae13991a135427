"""PII check: detect validated PII and redact it (mask / hash / type tag)."""

from __future__ import annotations

import hashlib
import unicodedata

from carafe.guards.checks import Subject, decide, off_loop
from carafe.guards.checks.pii_recognizers import find_pii
from carafe.guards.config import CheckSettings, PiiMode
from carafe.guards.normalize import INVISIBLE
from carafe.guards.registry import CheckContext, register
from carafe.guards.verdict import GuardVerdict, Span


def _cleaned_with_map(text: str) -> tuple[str, list[int]]:
    """``text`` without invisible characters and with fullwidth digits/letters
    folded, plus each cleaned character's index in the original (so spans found
    in the cleaned text redact the original)."""
    out: list[str] = []
    where: list[int] = []
    for i, ch in enumerate(text):
        if INVISIBLE.match(ch):
            continue
        folded = unicodedata.normalize("NFKC", ch) if not ch.isascii() else ch
        out.append(folded if len(folded) == 1 else ch)
        where.append(i)
    return "".join(out), where


def redact(text: str, spans: list[Span], mode: PiiMode, salt: str = "carafe") -> str:
    """``text`` with each span replaced according to ``mode``."""
    parts: list[str] = []
    last = 0
    for s in spans:
        value = text[s.start : s.end]
        if mode == "mask":
            repl = "".join("*" if ch.isalnum() else ch for ch in value)
        elif mode == "hash":
            digest = hashlib.sha256((salt + value).encode()).hexdigest()[:10]
            repl = f"<{s.kind}:{digest}>"
        else:
            repl = f"<{s.kind}>"
        parts.append(text[last : s.start])
        parts.append(repl)
        last = s.end
    parts.append(text[last:])
    return "".join(parts)


def detect(text: str, kinds: frozenset[str]) -> list[Span]:
    """PII spans in the ORIGINAL ``text`` (detected on a cleaned copy)."""
    cleaned, where = _cleaned_with_map(text)
    spans = find_pii(cleaned, kinds)
    if cleaned == text:
        return spans
    return [Span(where[s.start], where[s.end - 1] + 1, s.kind, s.score) for s in spans]


class PiiCheck:
    """Email, phone, payment cards (Luhn), IBAN (mod 97), national ids, IPs."""

    name = "pii"
    cost = 1

    def __init__(self, kinds: list[str], mode: PiiMode = "tag", salt: str = "carafe", max_chars: int = 8000) -> None:
        self.kinds = frozenset(kinds)
        self.mode = mode
        self.salt = salt
        self.max_chars = max_chars

    def scan(self, text: str) -> list[Span]:
        if len(text) > self.max_chars:
            # Long texts: scan in windows so the cost stays linear and bounded
            # per window; spans keep their position in the full text.
            spans: list[Span] = []
            step = self.max_chars
            for off in range(0, len(text), step):
                piece = text[off : off + step + 64]
                spans += [
                    Span(s.start + off, s.end + off, s.kind)
                    for s in detect(piece, self.kinds)
                    if not spans or s.start + off >= spans[-1].end
                ]
            return spans
        return detect(text, self.kinds)

    async def check(self, subject: Subject, settings: CheckSettings) -> GuardVerdict:
        mode = subject.policy.pii_mode if subject.policy is not None else None
        spans = await off_loop(len(subject.text), self.scan, subject.text)
        if not spans:
            return GuardVerdict(check=self.name, category="none", stage=subject.stage)
        kinds = sorted({s.kind for s in spans})
        redacted = redact(subject.text, spans, mode or self.mode, self.salt)
        verdict = decide(
            self.name,
            ",".join(kinds),
            1.0,
            settings,
            f"found {len(spans)} PII item(s): {', '.join(kinds)}",
            stage=subject.stage,
            can_redact=True,
            redacted=redacted,
        )
        verdict.spans = spans
        return verdict


@register("pii", stages=("input", "output"))
def build(ctx: CheckContext) -> PiiCheck:
    c = ctx.config
    return PiiCheck(c.pii_entities, c.pii_mode, c.pii_hash_salt, c.max_check_chars)

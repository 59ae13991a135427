"""The checks: one module per check behind the small :class:`Check` protocol."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from carafe.guards.config import CheckSettings
from carafe.guards.verdict import GuardVerdict

Stage = Literal["input", "output"]


class EmbedderLike(Protocol):
    def encode(self, texts: list[str], *, normalize: bool = True) -> np.ndarray: ...


@dataclass
class Subject:
    """The text under check plus what checks share about it.

    ``text`` is the original (what redactions apply to; lone surrogates already
    replaced, length kept), ``normalized`` the folded copy checks match against.
    ``role`` is the message's role (``user``, ``system``, ``tool``, ``passage``...);
    ``caller_texts`` what the caller wrote in their own request (output stage: text
    they dictated cannot be a leak). The embedding is computed once, on demand, off
    the event loop, and shared by every check that needs it.
    """

    text: str
    normalized: str
    stage: Stage
    role: str = "user"
    caller_texts: tuple[str, ...] = ()
    principal: Any = None
    passages: list[Any] = field(default_factory=list)
    embedder: Any = None
    policy: Any = None  # the PolicyConfig in force (deny_topics, pii_mode)
    passage_index: Any = None  # grounding.PassageIndex of the request's passages (output only)
    _embedding: asyncio.Future[np.ndarray] | None = field(default=None, repr=False)

    async def embedding(self) -> np.ndarray:
        """L2-normalized embedding(s) of the normalized text: shape (windows, dim)."""
        if self._embedding is None:
            self._embedding = asyncio.ensure_future(
                asyncio.to_thread(self.embedder.encode, embedding_windows(self.normalized))
            )
        return await asyncio.shield(self._embedding)


def embedding_windows(text: str, size: int = 1000, limit: int = 3) -> list[str]:
    """Pieces of a long text to embed (MiniLM reads ~256 tokens): head, tail, middle."""
    if len(text) <= size:
        return [text or " "]
    starts = [0, max(0, len(text) - size), max(0, len(text) // 2 - size // 2)][:limit]
    return [text[s : s + size] for s in dict.fromkeys(starts)]


INLINE_CHARS = 2000


async def off_loop(size: int, fn: Any, *args: Any) -> Any:
    """``fn(*args)`` inline for short texts (~1 ms or less), in a worker thread
    for long ones so the event loop keeps serving other requests."""
    if size <= INLINE_CHARS:
        return fn(*args)
    return await asyncio.to_thread(fn, *args)


@runtime_checkable
class Check(Protocol):
    """One guard check. ``cost`` orders checks: cheap ones start first."""

    name: str
    cost: int

    async def check(self, subject: Subject, settings: CheckSettings) -> GuardVerdict:
        """The verdict on ``subject`` under ``settings`` (latency is filled in by the pipeline)."""
        ...


@runtime_checkable
class ClosableCheck(Check, Protocol):
    """A check that holds a connection (e.g. the guardian's HTTP client)."""

    async def aclose(self) -> None: ...


def decide(
    check: str,
    category: str,
    score: float,
    settings: CheckSettings,
    reason: str,
    *,
    stage: Stage,
    can_redact: bool = False,
    redacted: str | None = None,
    below: bool = False,
) -> GuardVerdict:
    """Turn a score into a verdict under a policy's settings.

    A hit with action ``redact`` on a check that cannot redact blocks (fail safe).
    ``below`` flips the comparison (grounding fires on LOW scores).
    """
    hit = score < settings.threshold if below else score >= settings.threshold
    if not hit:
        return GuardVerdict(check=check, category="none", score=score, reason="", stage=stage)
    action = settings.action
    if action == "log":
        return GuardVerdict(
            check=check, category=category, action="allow", score=score, reason=reason, flagged=True, stage=stage
        )
    if action == "redact" and can_redact and redacted is not None:
        return GuardVerdict(
            check=check,
            category=category,
            action="redact",
            score=score,
            reason=reason,
            redacted=redacted,
            flagged=True,
            stage=stage,
        )
    return GuardVerdict(
        check=check, category=category, action="block", score=score, reason=reason, flagged=True, stage=stage
    )

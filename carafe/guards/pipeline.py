"""The guard pipeline: runs a policy's checks on input and, through
:class:`~carafe.guards.stream.OutputStream`, on streamed output."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal

from opentelemetry import trace

from carafe.guards.checks import Check, ClosableCheck, EmbedderLike, Subject
from carafe.guards.checks.leak import LeakIndex
from carafe.guards.config import CheckSettings, GuardsConfig, PolicyConfig
from carafe.guards.errors import UnknownPolicy
from carafe.guards.normalize import normalize, scrub
from carafe.guards.registry import CheckContext, available
from carafe.guards.stream import OutputStream, apply_redactions
from carafe.guards.verdict import GuardVerdict

log = logging.getLogger(__name__)
Stage = Literal["input", "output"]


@dataclass
class InputResult:
    """The input guards' outcome: the text to use (possibly redacted)."""

    text: str
    verdicts: list[GuardVerdict] = field(default_factory=list)
    blocked: GuardVerdict | None = None


def verdict_key(policy: str, principal: Any, role: str, text: str) -> str:
    """Cache key of one message's input verdicts (the text only as a digest)."""
    who = getattr(principal, "user", "") or ""
    return hashlib.sha256(f"{policy}\0{who}\0{role}\0{text}".encode("utf-8", "surrogatepass")).hexdigest()


def fails_closed(check: Check, settings: CheckSettings) -> bool:
    """Whether a failure of ``check`` blocks: ``on_error`` if set, else the check's own
    default (``protects_data``: injection, indirect and leak fail closed)."""
    if settings.on_error is not None:
        return settings.on_error == "block"
    return bool(getattr(check, "protects_data", False))


async def timed(check: Check, subject: Subject, settings: CheckSettings) -> GuardVerdict:
    """``check`` on ``subject`` with its latency; a check that raises gives an error
    verdict (recorded in the trace, never a silent release) that blocks or allows
    as :func:`fails_closed` says."""
    start = time.perf_counter()
    try:
        verdict = await check.check(subject, settings)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a broken check is reported, and blocks where it protects data
        log.exception("guard check %s failed", check.name)
        closed = fails_closed(check, settings)
        verdict = GuardVerdict(
            check=check.name,
            category="error",
            action="block" if closed else "allow",
            flagged=True,
            error=True,
            reason=f"the {check.name} check failed ({type(exc).__name__}: {exc}); "
            + ("the text is withheld (on_error: block)" if closed else "the text was let through (on_error: allow)"),
            stage=subject.stage,
        )
    verdict.latency_ms = (time.perf_counter() - start) * 1000
    verdict.stage = subject.stage
    return verdict


class LazyEmbedder:
    """Loads the packaged MiniLM on first use (when no shared embedder is given)."""

    model_id = "all-MiniLM-L6-v2"

    def __init__(self) -> None:
        self._embedder: Any = None
        self._lock = threading.Lock()

    def encode(self, texts: list[str], *, normalize: bool = True) -> Any:
        with self._lock:
            if self._embedder is None:
                from carafe.indexer.embedding import Embedder

                self._embedder = Embedder()
        return self._embedder.encode(texts, normalize=normalize)


class GuardPipeline:
    """Runs a policy's checks; cheap checks start first, a block cancels the rest."""

    def __init__(
        self,
        config: GuardsConfig,
        checks: dict[str, Check],
        *,
        embedder: Any = None,
        leak_index: LeakIndex | None = None,
    ) -> None:
        self.config = config
        self.checks = checks
        self.embedder = embedder
        self.leak_index = leak_index
        self._tracer = trace.get_tracer(__name__)
        self._verdicts: OrderedDict[str, InputResult] = OrderedDict()

    @classmethod
    def from_config(
        cls, config: GuardsConfig, *, embedder: EmbedderLike | None = None, leak_index: LeakIndex | None = None
    ) -> GuardPipeline:
        """Build every registered check the config can use (the policy picks per request)."""
        emb = embedder if embedder is not None else LazyEmbedder()
        checks: dict[str, Check] = {}
        for name, spec in available(config).items():
            options = config.plugins[name].options if name in config.plugins else {}
            check = spec.build(CheckContext(config, emb, leak_index, options))
            if check is not None:
                checks[name] = check
        return cls(config, checks, embedder=emb, leak_index=leak_index)

    def policy(self, name: str | None) -> PolicyConfig:
        key = name or self.config.default_policy
        try:
            return self.config.policies[key]
        except KeyError:
            raise UnknownPolicy(
                f"unknown guard policy {key!r}; defined policies: {', '.join(self.config.policies)} "
                f"(add it under guards.policies in carafe.yaml)",
                param="guard_policy",
            ) from None

    def subject(
        self,
        text: str,
        stage: Stage,
        policy: PolicyConfig,
        *,
        principal: Any = None,
        passage_index: Any = None,
        role: str = "user",
        caller_texts: tuple[str, ...] = (),
    ) -> Subject:
        text = scrub(text)
        return Subject(
            text=text,
            normalized=normalize(text),
            stage=stage,
            role=role,
            caller_texts=caller_texts,
            principal=principal,
            embedder=self.embedder,
            policy=policy,
            passage_index=passage_index,
        )

    async def run(self, subject: Subject, stage: Stage, policy: PolicyConfig) -> list[GuardVerdict]:
        """Every enabled check of ``policy`` for ``stage`` on ``subject``, concurrently.

        Checks are started cheapest first; the first block cancels the checks
        still running (their verdicts are then not needed)."""
        settings = policy.input if stage == "input" else policy.output
        names = [n for n, s in settings.items() if s.enabled and n in self.checks]
        missing = [n for n, s in settings.items() if s.enabled and n not in self.checks]
        names.sort(key=lambda n: self.checks[n].cost)
        verdicts: list[GuardVerdict] = [
            GuardVerdict(
                check=n,
                category="skipped",
                skipped=True,
                stage=stage,
                reason=f"the {n} check is not configured (see guards.{n} in carafe.yaml)",
            )
            for n in missing
        ]
        tasks = [asyncio.ensure_future(timed(self.checks[n], subject, settings[n])) for n in names]
        pending = set(tasks)
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if any(t.result().action == "block" for t in done):
                    break
        finally:
            for t in pending:
                t.cancel()
        verdicts += [t.result() for t in tasks if t.done() and not t.cancelled()]
        span = trace.get_current_span()
        for v in verdicts:
            span.add_event(f"carafe.guard.{v.check}", attributes=v.to_attributes())
        return verdicts

    async def check_input(
        self, text: str, *, policy: str | None = None, principal: Any = None, role: str = "user"
    ) -> InputResult:
        """Run the policy's input checks on ``text`` (a message of ``role``)."""
        pol = self.policy(policy)
        if not self.config.enabled or not text:
            return InputResult(text=text)
        text = scrub(text)
        verdicts = await self.run(self.subject(text, "input", pol, principal=principal, role=role), "input", pol)
        blocked = next((v for v in verdicts if v.action == "block"), None)
        return InputResult(
            text=text if blocked else apply_redactions(text, verdicts), verdicts=verdicts, blocked=blocked
        )

    async def check_messages(
        self, messages: list[tuple[str, str]], *, policy: str | None = None, principal: Any = None
    ) -> list[InputResult]:
        """Every client-supplied message (``(role, text)``: system, developer, earlier
        user and assistant turns, tool results) through the input checks, concurrently.

        Verdicts are cached per (policy, caller, role, text): a conversation resent
        with each turn costs one check per new message."""
        return list(
            await asyncio.gather(
                *(self._cached_input(text, role, policy=policy, principal=principal) for role, text in messages)
            )
        )

    async def _cached_input(self, text: str, role: str, *, policy: str | None, principal: Any) -> InputResult:
        key = verdict_key(policy or self.config.default_policy, principal, role, text)
        hit = self._verdicts.get(key)
        if hit is not None:
            self._verdicts.move_to_end(key)
            return hit
        result = await self.check_input(text, policy=policy, principal=principal, role=role)
        if not any(v.error for v in result.verdicts):  # a failed check is retried next time
            self._verdicts[key] = result
            while len(self._verdicts) > max(self.config.verdict_cache_size, 0):
                self._verdicts.popitem(last=False)
        return result

    def output_stream(
        self,
        *,
        policy: str | None = None,
        principal: Any = None,
        passages: list[Any] | None = None,
        caller_texts: tuple[str, ...] = (),
    ) -> OutputStream:
        """A guard for one streamed (or whole) answer; ``caller_texts``: what the
        caller's request itself holds (messages, forced choices), never a leak."""
        return OutputStream(
            self,
            self.policy(policy),
            principal=principal,
            passages=list(passages or []),
            caller_texts=tuple(scrub(t) for t in caller_texts),
        )

    async def aclose(self) -> None:
        """Close the checks that hold connections (those with an ``aclose``)."""
        for check in self.checks.values():
            if isinstance(check, ClosableCheck):
                await check.aclose()

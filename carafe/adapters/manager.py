"""The resident set: which adapter versions an engine holds, kept in line with the
registry.

- At most ``max_resident`` registry versions are resident; a request for another
  one loads it on demand and evicts the least recently used *idle* one. Loading
  takes a lock per adapter name only, so other adapters keep serving meanwhile.
- Load, unload, promote and rollback of one name are serialized and idempotent.
- A version still generating is never unloaded: requests run through
  :attr:`AdapterManager.engine` (an :class:`Engine` that counts requests in flight
  per adapter); a retired version is unloaded once its last request finishes.
- :meth:`AdapterManager.reconcile` makes the engine hold what the registry's
  channels point at (desired state) and drops versions no channel needs (after an
  engine restart, after another replica promoted, ...). :meth:`start` runs it
  every ``reconcile_interval_s``.
- A version the engine refuses (bad weights, shapes it cannot serve: an
  :class:`InvalidAdapter`, or any error that is not a Carafe one) is *broken*: it is
  logged once, listed in :attr:`AdapterManager.broken` (the admin view shows it),
  never retried by the loop, and requests for it get a 503 at once; the rest keep
  serving. An admin retries it with a promote or ``POST /admin/adapters/sync``.

Engine adapter names are ``<name>@<version>``; adapters loaded under other names
(e.g. through ``/v1/load_lora_adapter``) are left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from carafe.adapters.engine import AdapterInfo, ChatMessage, Engine, GenerationChunk, SamplingParams
from carafe.adapters.errors import EngineUnavailable, InvalidAdapter
from carafe.adapters.registry import STABLE, Channels, Registry
from carafe.errors import CarafeError, NotFound

log = logging.getLogger("carafe.adapters")
_REF = re.compile(r"^(?P<name>[a-z0-9][a-z0-9._-]*)@(?P<version>\d+)$")


def parse_ref(ref: str) -> tuple[str, int] | None:
    """``("hr-style", 3)`` for ``"hr-style@3"``; None for other names."""
    m = _REF.fullmatch(ref)
    return (m["name"], int(m["version"])) if m else None


@dataclass
class ReconcileReport:
    loaded: list[str] = field(default_factory=list)
    unloaded: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # broken versions, not retried
    resident: list[str] = field(default_factory=list)


class AdapterUnavailable(EngineUnavailable):
    """A registry version that cannot be served now (broken, or no slot for an off-channel pin)."""


class AdapterManager:
    """Keeps an engine's resident adapters in line with the registry."""

    def __init__(
        self,
        engine: Engine,
        registry: Registry,
        *,
        max_resident: int = 8,
        reconcile_interval_s: float = 10.0,
        retire_grace_s: float = 5.0,
        retry_failed_s: float = 30.0,
        warm_rollback: bool = True,
    ) -> None:
        self.raw_engine = engine
        self.engine = TrackedEngine(engine, self)
        self.registry = registry
        self.max_resident = max_resident
        self.reconcile_interval_s = reconcile_interval_s
        self.retire_grace_s = retire_grace_s
        self.retry_failed_s = retry_failed_s
        self.warm_rollback = warm_rollback
        self.failed: dict[str, tuple[float, str]] = {}  # ref -> (when, why): not retried for a while
        self.broken: dict[str, str] = {}  # ref -> why: refused by the engine, not retried unless asked
        self._locks: dict[str, asyncio.Lock] = {}
        self._evict_lock = asyncio.Lock()
        self._in_flight: Counter[str] = Counter()
        self._last_used: dict[str, float] = {}
        self._retiring: set[str] = set()
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()

    # bookkeeping -----------------------------------------------------------
    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    def resident(self) -> list[str]:
        """Registry versions (``name@version``) the engine holds now."""
        return [a.name for a in self.raw_engine.adapters() if parse_ref(a.name)]

    def in_flight(self, ref: str) -> int:
        return self._in_flight[ref]

    def touch(self, ref: str) -> None:
        self._last_used[ref] = time.monotonic()

    def begin(self, ref: str | None) -> None:
        if ref is not None:
            self._in_flight[ref] += 1
            self.touch(ref)

    def end(self, ref: str | None) -> None:
        if ref is None:
            return
        self._in_flight[ref] -= 1
        if self._in_flight[ref] <= 0:
            del self._in_flight[ref]
            self._idle.set()
            if ref in self._retiring:
                self._spawn(self._unload_if_idle(ref))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # loading ---------------------------------------------------------------
    def unusable(self, ref: str) -> str | None:
        """Why ``ref`` is not loaded on demand now (broken, or failed moments ago); None if it may be."""
        if ref in self.broken:
            return self.broken[ref]
        failure = self.failed.get(ref)
        return failure[1] if failure and time.monotonic() - failure[0] < self.retry_failed_s else None

    async def ensure(self, name: str, version: int, *, retry: bool = False, evict: bool = True) -> str:
        """Make ``name@version`` resident (loading it on demand); returns the engine name.

        A broken version fails at once with :class:`AdapterUnavailable` unless ``retry``
        (an admin's promote or sync); without ``evict`` it loads only into a free slot."""
        ref = f"{name}@{version}"
        if ref in self.resident():
            self._retiring.discard(ref)
            self.touch(ref)
            return ref
        async with self._lock(name):
            if ref in self.resident():
                self._retiring.discard(ref)
                self.touch(ref)
                return ref
            if ref in self.broken and not retry:
                raise AdapterUnavailable(f"{ref} cannot be served: {self.broken[ref]}", param="model")
            failure = self.failed.get(ref)
            if failure and time.monotonic() - failure[0] < self.retry_failed_s and not retry:
                raise EngineUnavailable(f"{ref} failed to load recently: {failure[1]}", param="model")
            await self._load(ref, name, version, evict)
            self.failed.pop(ref, None)
            self.broken.pop(ref, None)
            self._retiring.discard(ref)
            self.touch(ref)
            return ref

    async def _load(self, ref: str, name: str, version: int, evict: bool) -> None:
        """Load one version; a refusal of its files marks it broken (logged once), others fail for a while."""
        try:
            av = await asyncio.to_thread(self.registry.verify, name, version)
            await self._make_room(evict=evict, ref=ref)
            await self.raw_engine.load_adapter(ref, str(av.path))
        except EngineUnavailable:
            raise
        except InvalidAdapter as exc:
            self._mark_broken(ref, exc.message)
            raise
        except CarafeError as exc:
            self.failed[ref] = (time.monotonic(), exc.message)
            log.warning("loading %s failed: %s", ref, exc.message)
            raise
        except Exception as exc:  # an engine error that is not a Carafe one: the adapter is at fault, not the request
            why = f"the engine refused its weights ({type(exc).__name__}: {exc})"
            self._mark_broken(ref, why)
            raise InvalidAdapter(f"{ref} cannot be loaded: {why}", param="model") from exc

    def _mark_broken(self, ref: str, why: str) -> None:
        if self.broken.get(ref) != why:
            log.warning("skipping adapter %s: %s (fix or remove it; a promote or sync retries it)", ref, why)
        self.broken[ref] = why

    async def _make_room(self, timeout: float = 30.0, *, evict: bool = True, ref: str = "") -> None:
        """Evict least-recently-used idle versions until one more fits (without ``evict``: a free slot or 503)."""
        deadline = time.monotonic() + timeout
        if not evict and len(self.raw_engine.adapters()) >= self.max_resident:
            raise AdapterUnavailable(
                f"no free adapter slot for {ref}, which is on no channel: pinning such a version never "
                "evicts another; retry later, or promote it to a channel",
                param="model",
            )
        async with self._evict_lock:
            # Every adapter counts against the engine's slots; only registry versions are evicted.
            while len(self.raw_engine.adapters()) >= self.max_resident:
                idle = [r for r in self.resident() if self._in_flight[r] == 0]
                if idle:
                    victim = min(idle, key=lambda r: self._last_used.get(r, 0.0))
                    await self._unload(victim)
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self.resident():
                    raise EngineUnavailable(
                        f"all {self.max_resident} adapter slots are busy; retry shortly "
                        "(or raise adapters.engine.max_loras)"
                    )
                self._idle.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._idle.wait(), remaining)

    async def _unload(self, ref: str) -> None:
        with contextlib.suppress(NotFound):
            await self.raw_engine.unload_adapter(ref)
        self._retiring.discard(ref)
        self._last_used.pop(ref, None)
        log.info("unloaded %s", ref)

    async def _unload_if_idle(self, ref: str) -> None:
        parsed = parse_ref(ref)
        if parsed is None:
            return
        async with self._lock(parsed[0]):
            if ref not in self._retiring or self._in_flight[ref] or ref not in self.resident():
                return
            # A request routed here moments ago may not have reached the engine yet
            # (input guards, retrieval run in between): wait until it has had its chance.
            wait = self.retire_grace_s - (time.monotonic() - self._last_used.get(ref, 0.0))
            if wait > 0:
                self._spawn(self._unload_later(ref, wait))
                return
            await self._unload(ref)

    async def _unload_later(self, ref: str, delay: float) -> None:
        await asyncio.sleep(delay)
        await self._unload_if_idle(ref)

    def retire(self, ref: str, *, delay: float | None = None) -> None:
        """Unload ``ref`` once no request uses it and none was routed to it for
        ``retire_grace_s`` (so a request routed just before a promote still finds it)."""
        self._retiring.add(ref)
        self._spawn(self._unload_later(ref, self.retire_grace_s if delay is None else delay))

    # channel changes that go through the engine first ------------------------
    async def promote(self, name: str, version: int, *, actor: str, channel: str = STABLE) -> Channels:
        """Load ``version`` first (a broken one fails here and nothing changes), then
        move the channel; the replaced version retires when idle."""
        await self.ensure(name, version, retry=True)
        async with self._lock(name):
            before = self.registry.channels(name)
            after = await asyncio.to_thread(self.registry.promote, name, version, actor=actor, channel=channel)
        self._retire_unreferenced(name, before, after)
        return after

    async def rollback(self, name: str, *, actor: str) -> Channels:
        before = self.registry.channels(name)
        if before.previous:
            await self.ensure(name, before.previous[-1], retry=True)
        async with self._lock(name):
            after = await asyncio.to_thread(self.registry.rollback, name, actor=actor)
        self._retire_unreferenced(name, before, after)
        return after

    async def split(self, name: str, version: int, weight: int, *, actor: str) -> Channels:
        if weight > 0:
            await self.ensure(name, version, retry=True)
        async with self._lock(name):
            before = self.registry.channels(name)
            after = await asyncio.to_thread(self.registry.split, name, version, weight, actor=actor)
        self._retire_unreferenced(name, before, after)
        return after

    def _warm(self, ch: Channels) -> int | None:
        """The rollback target kept resident (warm_rollback), if any."""
        return ch.previous[-1] if self.warm_rollback and ch.previous else None

    def _kept(self, ch: Channels) -> set[int]:
        """Versions to keep resident: every channel's, plus the warm rollback target."""
        warm = self._warm(ch)
        return ch.referenced() | ({warm} if warm is not None else set())

    def _retire_unreferenced(self, name: str, before: Channels, after: Channels) -> None:
        for v in self._kept(before) - self._kept(after):
            ref = f"{name}@{v}"
            if ref in self.resident():
                self.retire(ref)

    # reconcile -------------------------------------------------------------
    def desired(self) -> list[str]:
        """What the registry's channels ask engines to hold, most important first."""
        first, rest, warm = [], [], []
        for name in self.registry.names():
            try:
                ch = self.registry.channels(name)
            except Exception as exc:  # a damaged channels.json stops this adapter, not the gateway
                self._mark_broken(f"{name}@?", f"its channels cannot be read ({exc})")
                continue
            if ch.stable is not None:
                first.append(f"{name}@{ch.stable}")
            if ch.canary is not None and ch.canary_weight > 0:
                rest.append(f"{name}@{ch.canary}")
            rest.extend(f"{name}@{v}" for v in ch.named.values())
            if (target := self._warm(ch)) is not None:  # last in line: only while slots are free
                warm.append(f"{name}@{target}")
        return list(dict.fromkeys(first + rest + warm))[: self.max_resident]

    async def reconcile(self, *, retry: bool = False) -> ReconcileReport:
        """Bring the engine to the desired state; returns what changed. Broken versions
        are skipped (kept in ``report.skipped``) unless ``retry``."""
        report = ReconcileReport()
        await asyncio.to_thread(self.registry.recover, blocking=False)  # a CLI writer may have been killed
        await self.raw_engine.refresh()  # a remote engine (vLLM) may have restarted since we last looked
        desired = self.desired()
        for ref in desired:
            if ref in self.resident():
                continue
            if ref in self.broken and not retry:
                report.skipped[ref] = self.broken[ref]
                continue
            name, version = parse_ref(ref)  # type: ignore[misc]
            try:
                await self.ensure(name, version, retry=retry)
                report.loaded.append(ref)
            except CarafeError as exc:
                report.failed[ref] = exc.message
        wanted = set(desired)
        names = set(self.registry.names())
        failed_names = {parse_ref(r)[0] for r in [*report.failed, *report.skipped]}  # type: ignore[index]
        stale_before = time.monotonic() - max(self.reconcile_interval_s, self.retire_grace_s)
        for ref in self.resident():
            name, _ = parse_ref(ref)  # type: ignore[misc]
            if ref in wanted or self._in_flight[ref]:
                continue
            if name in failed_names:
                continue  # the desired version did not load: the old one keeps serving
            if name in names and self._last_used.get(ref, 0.0) > stale_before:
                continue  # pinned (name@version) recently: keep it a while
            await self._unload_if_idle_now(ref)
            report.unloaded.append(ref)
        report.resident = self.resident()
        return report

    async def _unload_if_idle_now(self, ref: str) -> None:
        self._retiring.add(ref)
        await self._unload_if_idle(ref)

    async def start(self) -> None:
        """Reconcile once now, then every ``reconcile_interval_s`` (0: never again)."""
        try:
            await self.reconcile()
        except Exception as exc:  # the gateway starts whatever the registry holds; the loop tries again
            log.warning("first reconcile failed: %s", getattr(exc, "message", exc))
        if self.reconcile_interval_s > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.reconcile_interval_s)
            try:
                report = await self.reconcile()
                if report.loaded or report.unloaded or report.failed:
                    log.info(
                        "reconciled: loaded=%s unloaded=%s failed=%s", report.loaded, report.unloaded, report.failed
                    )
            except CarafeError as exc:  # e.g. vLLM down: try again next time
                log.warning("reconcile failed: %s", exc.message)
            except Exception:  # the loop must survive one bad pass
                log.exception("reconcile failed")

    async def close(self) -> None:
        tasks = [t for t in (self._task, *self._background) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._task = None


class TrackedEngine:
    """The :class:`Engine` requests generate through: it tells the manager which
    adapter each request uses, so a version is never unloaded under a running
    generation. Everything else passes straight to the engine it wraps."""

    def __init__(self, engine: Engine, manager: AdapterManager) -> None:
        self.inner = engine
        self._manager = manager

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def model_digest(self) -> str:
        return self.inner.model_digest

    @property
    def max_model_len(self) -> int:
        return self.inner.max_model_len

    @property
    def ready(self) -> bool:
        return self.inner.ready

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def chat_prompt(self, messages: list[ChatMessage]) -> str:
        return self.inner.chat_prompt(messages)

    async def load_adapter(self, name: str, path: str) -> AdapterInfo:
        return await self.inner.load_adapter(name, path)

    async def unload_adapter(self, name: str) -> None:
        await self.inner.unload_adapter(name)

    def adapters(self) -> list[AdapterInfo]:
        return self.inner.adapters()

    async def refresh(self) -> list[AdapterInfo]:
        return await self.inner.refresh()

    def stats(self) -> dict[str, int]:
        return self.inner.stats()

    async def _tracked(
        self, make: Callable[[], AsyncIterator[GenerationChunk]], adapter: str | None
    ) -> AsyncIterator[GenerationChunk]:
        self._manager.begin(adapter)
        try:
            stream = make()
            try:
                async for chunk in stream:
                    yield chunk
            finally:
                with contextlib.suppress(Exception):
                    await stream.aclose()  # type: ignore[attr-defined]
        finally:
            self._manager.end(adapter)

    def chat(
        self,
        messages: list[ChatMessage],
        params: SamplingParams,
        *,
        adapter: str | None = None,
        request_id: str | None = None,
    ) -> AsyncIterator[GenerationChunk]:
        return self._tracked(lambda: self.inner.chat(messages, params, adapter=adapter, request_id=request_id), adapter)

    def complete(
        self, prompt: str, params: SamplingParams, *, adapter: str | None = None, request_id: str | None = None
    ) -> AsyncIterator[GenerationChunk]:
        return self._tracked(
            lambda: self.inner.complete(prompt, params, adapter=adapter, request_id=request_id), adapter
        )

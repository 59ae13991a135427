"""From a request's ``model`` to an adapter version plus policies.

``model`` may be the base model id, an adapter name (its stable version, or its
canary for a sticky share of users), ``name@version`` (pinned: for non-admin keys
only a version some channel points at, so a rolled-back or never-promoted version
stays out of reach; an admin's pin of another version loads only into a free slot
and never evicts one that serves a channel), a route alias from
the config, or ``auto`` (the adapter whose manifest description best matches the
query, above a threshold; else the base model). The chosen version is made
resident in the engine before :meth:`Router.resolve` returns.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from carafe.adapters.engine import Engine
from carafe.adapters.errors import AdapterNotFound, EngineUnavailable, InvalidAdapter
from carafe.adapters.manager import AdapterManager, AdapterUnavailable, parse_ref
from carafe.adapters.manifest import BaseModelRef
from carafe.adapters.registry import Registry
from carafe.errors import CarafeError, Forbidden, NotFound
from carafe.gateway.auth import Principal
from carafe.gateway.routing.config import RetrievalPolicyConfig, RouteAlias, RoutingConfig

if TYPE_CHECKING:
    from carafe.config import CarafeConfig
    from carafe.indexer.embedding import Embedder

log = logging.getLogger("carafe.gateway.routing")


@dataclass(frozen=True)
class RetrievalPolicy:
    enabled: bool = False
    top_k: int = 4

    @classmethod
    def of(cls, cfg: RetrievalPolicyConfig) -> RetrievalPolicy:
        return cls(enabled=cfg.enabled, top_k=cfg.top_k)


@dataclass(frozen=True)
class RouteDecision:
    requested: str  # the `model` field as sent
    adapter: str | None  # the engine adapter name, e.g. "hr-style@3"; None = base model
    served_model: str  # what the response reports, e.g. "hr-style@3" or the base id
    route: str  # alias name, adapter name, "auto" or "base"
    retrieval: RetrievalPolicy
    guard_policy: str | None
    record_content: bool = False


def canary_bucket(user: str, name: str) -> int:
    """0-99, stable for a (user, adapter) pair: the same user stays on the same side."""
    digest = hashlib.sha256(f"{user}\0{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100


def _not_found(model: str) -> NotFound:
    return AdapterNotFound(
        f"the model {model!r} does not exist (see GET /v1/models)", param="model", code="model_not_found"
    )


def _unservable(ref: str) -> AdapterUnavailable:
    """A 503 for a broken version that names no host path (the admin view says why)."""
    return AdapterUnavailable(
        f"adapter {ref} cannot be served: it failed its checks when loaded; an admin can see why in "
        "GET /admin/adapters and fix or remove it",
        param="model",
        code="adapter_unavailable",
    )


def _forbidden(model: str) -> Forbidden:
    return Forbidden(f"this key may not use model {model!r}", param="model", code="model_not_allowed")


class Router:
    """Resolves ``model`` names; owns the registry view and the resident-set manager."""

    def __init__(self, config: RoutingConfig, manager: AdapterManager, *, embedder: Embedder | None = None) -> None:
        self.config = config
        self.registry = manager.registry
        self.manager = manager
        self.engine = manager.engine  # counts requests per adapter: generate through this one
        self.embedder = embedder  # for ``auto``; set once the gateway has loaded it
        self._description_vectors: dict[tuple[str, str], np.ndarray] = {}

    @classmethod
    def from_config(cls, config: CarafeConfig, engine: Engine, *, embedder: Embedder | None = None) -> Router:
        """Registry + resident-set manager + router over ``engine`` (not started)."""
        adapters = config.adapters
        registry = Registry(config.registry_dir, max_rank=adapters.engine.max_lora_rank)
        manager = AdapterManager(
            engine,
            registry,
            max_resident=adapters.engine.max_loras,
            reconcile_interval_s=adapters.registry.reconcile_interval_s,
            retire_grace_s=adapters.registry.retire_grace_s,
            retry_failed_s=adapters.registry.retry_failed_s,
            warm_rollback=adapters.registry.warm_rollback,
        )
        return cls(config.routing, manager, embedder=embedder)

    @property
    def base_id(self) -> str:
        return self.engine.model_id

    def record_base(self) -> None:
        """Tell the registry which base the (started) engine serves, and its module shapes when the
        engine's weights are local: adapters are checked against them at add."""
        files = getattr(self.manager.raw_engine, "files", None)  # LocalEngine: the base model's folder
        self.registry.record_base(
            BaseModelRef(id=self.engine.model_id, digest=self.engine.model_digest),
            getattr(files, "folder", None),
        )

    async def start(self) -> None:
        """Record the served base, then reconcile the resident set (and keep doing so)."""
        self.record_base()
        await self.manager.start()

    async def close(self) -> None:
        await self.manager.close()

    # resolving -------------------------------------------------------------
    async def resolve(self, model: str, principal: Principal, *, query: str = "") -> RouteDecision:
        """The decision for ``model``: NotFound (404), Forbidden (403), EngineUnavailable (503)."""
        cfg = self.config
        if model == self.base_id:
            if not principal.may_use(model):
                raise _forbidden(model)
            return self._base(model, "base", RetrievalPolicy.of(cfg.retrieval), None, cfg.record_content)
        if model in cfg.aliases:
            return await self._alias(model, cfg.aliases[model], principal)
        if cfg.auto.enabled and model == cfg.auto.name:
            return await self._auto(model, principal, query)
        name, _, pinned = model.partition("@")
        if not name or not self.registry.exists(name) or (pinned and not pinned.isdigit()):
            if model and model in self._loaded_outside_registry():
                if not principal.may_use(model):
                    raise _forbidden(model)
                return RouteDecision(
                    model, model, model, model, RetrievalPolicy.of(cfg.retrieval), None, cfg.record_content
                )
            raise _not_found(model)
        if not principal.may_use(name):
            raise _forbidden(model)
        ref = await self._select(name, int(pinned) if pinned else None, principal)
        return RouteDecision(model, ref, ref, name, RetrievalPolicy.of(cfg.retrieval), None, cfg.record_content)

    def _loaded_outside_registry(self) -> dict[str, str]:
        """Adapters loaded into the engine directly (``/v1/load_lora_adapter``): name -> path."""
        return {a.name: a.path for a in self.engine.adapters() if parse_ref(a.name) is None}

    def _base(
        self, model: str, route: str, retrieval: RetrievalPolicy, guard: str | None, record: bool
    ) -> RouteDecision:
        return RouteDecision(model, None, self.base_id, route, retrieval, guard, record)

    async def _alias(self, alias: str, spec: RouteAlias, principal: Principal) -> RouteDecision:
        target = spec.adapter
        target_name = target.partition("@")[0] if target else self.base_id
        if not (principal.may_use(alias) or principal.may_use(target_name)):
            raise _forbidden(alias)
        retrieval = RetrievalPolicy.of(spec.retrieval)
        if target is None or target == self.base_id:
            return self._base(alias, alias, retrieval, spec.guard_policy, spec.record_content)
        name, _, pinned = target.partition("@")
        if not self.registry.exists(name):
            raise AdapterNotFound(
                f"route {alias!r} points at adapter {name!r}, which is not in the registry",
                param="model",
                code="model_not_found",
            )
        version = int(pinned) if pinned.isdigit() else None
        ref = await self._select(name, version, principal, config_pin=True)  # the config's pin: an admin's
        return RouteDecision(alias, ref, ref, alias, retrieval, spec.guard_policy, spec.record_content)

    async def _select(self, name: str, pinned: int | None, principal: Principal, *, config_pin: bool = False) -> str:
        """The resident engine name of the version ``principal`` gets for ``name`` (``config_pin``: an
        alias's ``name@version`` from the config, which admins wrote, so pinnable off a channel)."""
        if pinned is not None:
            self.registry.get(name, pinned)  # 404 for a missing version
            on_channel = pinned in self.registry.channels(name).referenced()
            if not on_channel and not principal.is_admin and not config_pin:
                raise Forbidden(
                    f"{name}@{pinned} is on no channel of {name!r}; only versions on a channel (stable, canary "
                    f"or a named one) may be pinned: use {name!r} or ask an admin to promote it",
                    param="model",
                    code="version_not_pinnable",
                )
            return await self._ensure_served(name, pinned, evict=on_channel or config_pin)
        ch = self.registry.channels(name)
        if ch.stable is None:
            raise AdapterNotFound(f"adapter {name!r} has no stable version yet", param="model", code="model_not_found")
        version = ch.stable
        if ch.canary is not None and ch.canary_weight > 0:
            bucket = canary_bucket(principal.user, name) if self.config.canary_sticky else random.randrange(100)
            if bucket < ch.canary_weight:
                version = ch.canary
        fallbacks = [v for v in (ch.stable, *reversed(ch.previous)) if v != version]
        try:
            return await self._ensure_or_fall_back(name, version, fallbacks)
        except (AdapterUnavailable, InvalidAdapter) as exc:
            raise _unservable(f"{name}@{version}") from exc

    async def _ensure_served(self, name: str, version: int, *, evict: bool) -> str:
        try:
            return await self.manager.ensure(name, version, evict=evict)
        except InvalidAdapter as exc:
            raise _unservable(f"{name}@{version}") from exc
        except AdapterUnavailable as exc:
            if f"{name}@{version}" in self.manager.broken:
                raise _unservable(f"{name}@{version}") from exc
            raise

    async def _ensure_or_fall_back(self, name: str, version: int, fallbacks: list[int]) -> str:
        """Load ``version``; if it cannot load (corrupted, refused), keep serving the
        newest earlier version that can."""
        try:
            return await self.manager.ensure(name, version)
        except (NotFound, EngineUnavailable) as exc:
            error: CarafeError = exc
            if isinstance(exc, EngineUnavailable) and self.manager.unusable(f"{name}@{version}") is None:
                raise
        except CarafeError as exc:
            error = exc
        resident = set(self.manager.resident())
        ordered = sorted(fallbacks, key=lambda v: f"{name}@{v}" not in resident)
        for v in ordered:
            try:
                ref = await self.manager.ensure(name, v)
            except CarafeError:
                continue
            log.warning("%s@%s cannot be served (%s); serving %s instead", name, version, error.message, ref)
            return ref
        raise error

    async def _auto(self, model: str, principal: Principal, query: str) -> RouteDecision:
        cfg = self.config.auto
        retrieval = RetrievalPolicy.of(cfg.retrieval)
        best = await self._best_match(principal, query) if query.strip() else None
        if best is None or best[1] < cfg.threshold:
            if not principal.may_use(self.base_id):
                raise _forbidden(model)
            return self._base(model, "auto", retrieval, None, self.config.record_content)
        ref = await self._select(best[0], None, principal)
        return RouteDecision(model, ref, ref, "auto", retrieval, None, self.config.record_content)

    async def _best_match(self, principal: Principal, query: str) -> tuple[str, float] | None:
        if self.embedder is None:
            return None
        candidates: list[tuple[str, str]] = []
        for name in self.registry.names():
            if not principal.may_use(name):
                continue
            try:
                description = self.registry.stable(name).manifest.description.strip()
            except CarafeError:
                continue
            if description:
                candidates.append((name, description))
        if not candidates:
            return None
        missing = [d for n, d in candidates if (n, d) not in self._description_vectors]
        texts = [query, *missing]
        vectors = await asyncio.to_thread(self.embedder.encode, texts)
        for text, vec in zip(missing, vectors[1:]):
            for n, d in candidates:
                if d == text:
                    self._description_vectors[(n, d)] = np.asarray(vec)
        q = np.asarray(vectors[0])
        scores = [(n, float(np.dot(q, self._description_vectors[(n, d)]))) for n, d in candidates]
        return max(scores, key=lambda s: s[1])

    # listing ---------------------------------------------------------------
    def list_models(self, principal: Principal) -> list[dict[str, Any]]:
        """OpenAI/vLLM model cards of everything ``principal`` may use."""
        engine, base = self.engine, self.base_id
        common = {"object": "model", "owned_by": "carafe", "max_model_len": engine.max_model_len}
        cards: list[dict[str, Any]] = []
        if principal.may_use(base):
            cards.append(
                {"id": base, "created": 0, "parent": None, "root": base, "digest": engine.model_digest, **common}
            )
        for name in self.registry.names():
            if not principal.may_use(name):
                continue
            try:
                ch = self.registry.channels(name)
                stable = self.registry.stable(name)
            except CarafeError:
                continue
            canary = {"version": ch.canary, "weight": ch.canary_weight} if ch.canary is not None else None
            cards.append(
                {
                    "id": name,
                    "created": int(stable.manifest.created_at.timestamp()),
                    "parent": base,
                    "root": stable.ref,
                    "version": stable.version,
                    "canary": canary,
                    "kind": stable.manifest.kind,
                    "description": stable.manifest.description,
                    **common,
                }
            )
        for name, path in self._loaded_outside_registry().items():
            if principal.may_use(name):  # as vLLM lists runtime-loaded LoRAs
                cards.append({"id": name, "created": 0, "parent": base, "root": path, **common})
        for alias, spec in self.config.aliases.items():
            target = spec.adapter or base
            if principal.may_use(alias) or principal.may_use(target.partition("@")[0]):
                cards.append(
                    {
                        "id": alias,
                        "created": 0,
                        "parent": base,
                        "root": target,
                        "route": "alias",
                        "description": spec.description,
                        **common,
                    }
                )
        if self.config.auto.enabled:
            cards.append(
                {
                    "id": self.config.auto.name,
                    "created": 0,
                    "parent": base,
                    "root": None,
                    "route": "auto",
                    "description": "picks the adapter whose description best matches the question",
                    **common,
                }
            )
        return cards


def build_router(config: CarafeConfig, engine: Engine, *, embedder: Embedder | None = None) -> Router:
    """:meth:`Router.from_config` for an engine that is already started, with its
    base recorded, so adapters can be added before ``await router.start()``."""
    router = Router.from_config(config, engine, embedder=embedder)
    router.record_base()
    return router

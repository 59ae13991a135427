"""The composition root: every part one gateway process holds, built in one place
with its concrete type, started and closed together.

:func:`build_state` builds what needs no I/O (the engine handle, the adapter
registry, the resident-set manager and router, the state database and its
keys, limits and stored conversations); the app's
lifespan then calls :meth:`AppState.start`, which loads the model and the embedder
and builds the parts that need them (retrieval, guards). A late part asked for
before start-up finished answers 503, never ``None``.

There is one engine handle: :attr:`AppState.engine`, the adapter manager's
:class:`~carafe.adapters.manager.TrackedEngine`, which counts requests per adapter
version so that a version is never unloaded while it streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from carafe.adapters.engine import Engine, create_engine
from carafe.adapters.manager import AdapterManager, TrackedEngine
from carafe.adapters.registry import Registry
from carafe.config import CarafeConfig, private_dir
from carafe.errors import Unavailable
from carafe.gateway.admission import GenerationSlots
from carafe.gateway.auth import KeyStore
from carafe.gateway.counters_redis import RedisCounters
from carafe.gateway.oidc import OidcVerifier
from carafe.gateway.ratelimit import Counters, Limits, LocalCounters
from carafe.gateway.response_store import ResponseStore
from carafe.gateway.retrieval import Retriever
from carafe.gateway.routing.router import Router
from carafe.gateway.telemetry import metrics
from carafe.guards import GuardPipeline
from carafe.indexer.embedding import Embedder
from carafe.indexer.errors import IndexerError
from carafe.state import Conversations, State, open_state

log = logging.getLogger("carafe.gateway")


def _starting(part: str) -> Unavailable:
    return Unavailable(f"the gateway is still starting ({part} not loaded yet); retry shortly", code="not_ready")


@dataclass
class AppState:
    """What one gateway process holds, shared by all requests."""

    config: CarafeConfig
    router: Router
    store: State  # the state database: keys, directory, budgets and spend, conversations, records
    keys: KeyStore
    limits: Limits
    responses: ResponseStore  # conversations kept for previous_response_id
    slots: GenerationSlots  # generations running now, per key and in all
    oidc: OidcVerifier | None = None  # IdP bearer tokens, when auth.oidc.issuer is set
    owns_engine: bool = True  # close the engine with the app (False when a test shares one)
    guards: GuardPipeline | None = None  # None when ``guards.enabled`` is false
    index_sync_lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one /admin/index/sync at a time
    _embedder: Embedder | None = None
    _api_embedder: Embedder | None = None
    _retriever: Retriever | None = None
    _ledger_task: asyncio.Task[None] | None = None

    # the parts ---------------------------------------------------------------
    @property
    def engine(self) -> TrackedEngine:
        """The one engine handle requests generate through."""
        return self.router.engine

    @property
    def registry(self) -> Registry:
        return self.router.registry

    @property
    def adapters(self) -> AdapterManager:
        return self.router.manager

    @property
    def embedder(self) -> Embedder:
        """Retrieval, guards and ``auto`` routing (int8 when configured)."""
        if self._embedder is None:
            raise _starting("embedder")
        return self._embedder

    @property
    def api_embedder(self) -> Embedder:
        """What ``/v1/embeddings`` serves: the model's own vectors, full precision."""
        return self._api_embedder or self.embedder

    @property
    def retriever(self) -> Retriever:
        if self._retriever is None:
            raise _starting("retriever")
        return self._retriever

    @property
    def loaded(self) -> dict[str, bool]:
        """Whether each part is loaded and healthy (the engine's supervisor sets ``engine.ready``)."""
        return {"engine": self.engine.ready, "embedder": self._embedder is not None}

    async def shared_state(self) -> tuple[dict[str, bool], dict[str, str]]:
        """Readiness of the state database and the limit counters, with a word on each."""
        db_ok = await asyncio.to_thread(self.store.db.ping)
        limits_ok, limits_note = await self.limits.health()
        db_note = "sqlite" if self.store.db.is_sqlite else "postgresql"
        return {"state_db": db_ok, "limits": limits_ok}, {
            "state_db": db_note if db_ok else f"{db_note} unreachable",
            "limits": limits_note,
        }

    async def readiness(self) -> dict[str, bool]:
        """``/readyz``'s checks: the parts loaded, and the index this gateway searches open to it
        (not held by another process on the same data_dir)."""
        checks = self.loaded
        checks["index"] = self._retriever is not None and await asyncio.to_thread(self._retriever.available)
        return checks

    # life cycle ----------------------------------------------------------------
    async def start(self) -> None:
        """Load the model and the embedder, then build what needs them."""
        self._ledger_task = asyncio.create_task(self._flush_spend())
        await self.engine.start()
        if self._embedder is None:
            emb = self.config.indexer.embedding
            self._embedder = await asyncio.to_thread(Embedder.from_config, emb)
            if self._embedder.quantized:  # int8 serves retrieval and guards only
                self._api_embedder = await asyncio.to_thread(Embedder.from_config, emb, quantize=False)
        metrics.watch_engine(self.engine)
        self.router.embedder = self._embedder
        await self.router.start()
        if self._retriever is None:
            self._retriever = Retriever(self.config, self._embedder)
        await self._narrow_acls()
        if self.guards is None and self.config.guards.enabled:
            self.guards = GuardPipeline.from_config(
                self.config.guards, embedder=self._embedder, leak_index=self._retriever.leak_index
            )

    async def _narrow_acls(self) -> None:
        """Bring every stored document's ACL to its source's now, before serving (embeds nothing):
        a sync killed half-way must not leave a document readable by more people than its source says."""
        retriever = self._retriever
        if retriever is None or not retriever.configured:
            return
        try:
            report = await asyncio.to_thread(retriever.index.refresh_acls)
        except IndexerError as exc:  # another process holds the index, or a source is missing: readiness says so
            log.warning("index ACL refresh at start skipped: %s", exc)
            return
        changed = len(report.acl_updated) + len(report.acl_narrowed) + len(report.deleted)
        if changed:
            log.info("index ACL refresh at start: %d documents narrowed or removed", changed)

    async def _flush_spend(self, every_s: float = 5.0) -> None:
        """Each replica adds what it charged to the spend ledger every few seconds."""
        while True:
            await asyncio.sleep(every_s)
            try:
                await asyncio.to_thread(self.store.ledger.flush)
            except Exception:
                log.warning("spend ledger flush failed; retrying in %.0fs", every_s, exc_info=True)

    async def close(self) -> None:
        if self._ledger_task is not None:
            self._ledger_task.cancel()
        with contextlib.suppress(Exception):
            await self.limits.aclose()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.store.close)
        with contextlib.suppress(Exception):
            await self.router.close()
        if self._retriever is not None:
            with contextlib.suppress(Exception):
                self._retriever.close()
        if self.guards is not None:
            with contextlib.suppress(Exception):
                await self.guards.aclose()
        if self.owns_engine:
            await self.engine.close()


def build_state(
    config: CarafeConfig,
    *,
    engine: Engine | None = None,
    embedder: Embedder | None = None,
    retriever: Retriever | None = None,
) -> AppState:
    """Every part of a gateway from its config. ``engine``, ``embedder`` and
    ``retriever`` may be passed in (tests share one); the rest is always built here."""
    private_dir(config.data_dir)
    raw = engine if engine is not None else create_engine(config.adapters.engine, config.models_dir)
    store = open_state(config.state, config.data_dir, legacy_keys=config.keys_file)
    if store.imported is not None and store.imported.imported:
        log.warning("state: %s", store.imported.summary())
    server = config.server
    conversations = Conversations(
        store.db, retention_s=server.responses_retention_s, max_items=server.responses_max_stored
    )
    return AppState(
        config=config,
        router=Router.from_config(config, raw),
        store=store,
        keys=KeyStore(store.keys, store.directory, cache_ttl_s=config.state.cache_ttl_s),
        limits=Limits(_counters(config), budgets=store.budgets, ledger=store.ledger, prices=config.state.price),
        oidc=_oidc(config),
        owns_engine=engine is None,
        responses=ResponseStore(conversations),
        slots=GenerationSlots.from_config(config.server),
        _embedder=embedder,
        _retriever=retriever,
    )


def _counters(config: CarafeConfig) -> Counters:
    st = config.state
    if st.redis_url is None:
        return LocalCounters()
    return RedisCounters(st.redis_url.get_secret_value(), timeout_s=st.redis_timeout_s, on_error=st.on_redis_error)


def _oidc(config: CarafeConfig) -> OidcVerifier | None:
    auth = config.auth
    if not auth.oidc.enabled:
        return None
    return OidcVerifier(auth.oidc, default_rpm=auth.default_rpm, default_tpm=auth.default_tpm)

"""The composition root: every part one gateway process holds, built in one place
with its concrete type, started and closed together.

:func:`build_state` builds what needs no I/O (the engine handle, the adapter
registry, the resident-set manager and router, keys, rate limits); the app's
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
from carafe.gateway.ratelimit import RateLimiter
from carafe.gateway.response_store import ResponseStore
from carafe.gateway.retrieval import Retriever
from carafe.gateway.routing.router import Router
from carafe.gateway.telemetry import metrics
from carafe.guards import GuardPipeline
from carafe.indexer.embedding import Embedder

log = logging.getLogger("carafe.gateway")


def _starting(part: str) -> Unavailable:
    return Unavailable(f"the gateway is still starting ({part} not loaded yet); retry shortly", code="not_ready")


@dataclass
class AppState:
    """What one gateway process holds, shared by all requests."""

    config: CarafeConfig
    router: Router
    keys: KeyStore
    limiter: RateLimiter
    responses: ResponseStore  # conversations kept for previous_response_id
    slots: GenerationSlots  # generations running now, per key and in all
    owns_engine: bool = True  # close the engine with the app (False when a test shares one)
    guards: GuardPipeline | None = None  # None when ``guards.enabled`` is false
    index_sync_lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one /admin/index/sync at a time
    _embedder: Embedder | None = None
    _api_embedder: Embedder | None = None
    _retriever: Retriever | None = None

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

    async def readiness(self) -> dict[str, bool]:
        """``/readyz``'s checks: the parts loaded, and the index this gateway searches open to it
        (not held by another process on the same data_dir)."""
        checks = self.loaded
        checks["index"] = self._retriever is not None and await asyncio.to_thread(self._retriever.available)
        return checks

    # life cycle ----------------------------------------------------------------
    async def start(self) -> None:
        """Load the model and the embedder, then build what needs them."""
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
        if self.guards is None and self.config.guards.enabled:
            self.guards = GuardPipeline.from_config(
                self.config.guards, embedder=self._embedder, leak_index=self._retriever.leak_index
            )

    async def close(self) -> None:
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
    return AppState(
        config=config,
        router=Router.from_config(config, raw),
        keys=KeyStore(config.keys_file),
        limiter=RateLimiter(),
        owns_engine=engine is None,
        responses=ResponseStore(config.server.responses_retention_s, config.server.responses_max_stored),
        slots=GenerationSlots.from_config(config.server),
        _embedder=embedder,
        _retriever=retriever,
    )

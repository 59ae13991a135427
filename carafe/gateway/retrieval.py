"""The gateway side of retrieval: a Principal becomes the indexer's AccessScope,
searches run off the event loop, passages become citations."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from carafe.config import CarafeConfig
from carafe.errors import CarafeError
from carafe.gateway.auth import Principal
from carafe.indexer.acl import AccessScope
from carafe.indexer.index import Index
from carafe.indexer.prompt import Passage
from carafe.indexer.sync import Progress, SyncReport

log = logging.getLogger("carafe.gateway")


def scope_of(principal: Principal) -> AccessScope:
    """What ``principal`` may read: its groups or its own user name; everything if admin."""
    return AccessScope.of(principal.user, principal.groups, admin=principal.is_admin)


def citations(passages: Sequence[Passage]) -> list[dict[str, Any]]:
    """The ``citations`` extension field: one entry per passage, numbered as in the prompt."""
    return [
        {"index": n, "doc_id": p.doc_id, "title": p.title, "version": p.version, "chunk": p.chunk}
        for n, p in enumerate(passages, start=1)
    ]


def _screen() -> Any:
    """The guards' index-time injection screen (flags chunks that carry instructions to the model)."""
    from carafe.guards.checks.indirect import screen_content

    return screen_content


class Retriever:
    """Permission-filtered hybrid search for the gateway, over one :class:`Index`."""

    def __init__(self, config: CarafeConfig, embedder: Any, *, index: Index | None = None) -> None:
        self.config = config
        self.index = index or Index(config.indexer, embedder, data_dir=config.data_dir, screen=_screen())
        self._unavailable: str | None = None  # why the index did not open, last time it was tried

    @property
    def configured(self) -> bool:
        """Whether there is anything to search (sources, a server, or an index on disk)."""
        ix = self.index.config
        return bool(ix.sources) or bool(ix.qdrant.url) or self.index.store_path.exists()

    def available(self) -> bool:
        """Whether the index opens for this process (nothing configured: nothing to open)."""
        if not self.configured:
            return True
        try:
            _ = self.index.store
        except CarafeError as exc:
            if exc.message != self._unavailable:  # once per cause, not at every readiness probe
                log.warning("the document index is not available: %s", exc.message)
            self._unavailable = exc.message
            return False
        self._unavailable = None
        return True

    async def retrieve(self, query: str, principal: Principal, *, top_k: int | None = None) -> list[Passage]:
        """The passages ``principal`` may read that best answer ``query`` (ACL filter inside the query)."""
        if not query.strip() or not self.configured:
            return []
        return await asyncio.to_thread(self.index.search, query, scope_of(principal), top_k=top_k)

    @property
    def leak_index(self) -> Retriever:
        """What the output leak guard queries (:meth:`restricted_matches`)."""
        return self

    async def restricted_matches(self, text: str, principal: Principal) -> list[tuple[str, float, str]]:
        """Indexed chunks closest to ``text`` that ``principal`` may NOT read."""
        if not text.strip() or not self.configured:
            return []
        return await asyncio.to_thread(self.index.restricted_matches, text, scope_of(principal))

    async def sync(self, source: str | None = None, progress: Progress | None = None) -> SyncReport:
        return await asyncio.to_thread(self.index.sync, source, progress=progress)

    async def stats(self) -> dict[str, Any]:
        return await asyncio.to_thread(self.index.stats)

    def close(self) -> None:
        self.index.close()

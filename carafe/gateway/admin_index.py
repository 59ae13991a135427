"""Admin index API (``/admin/index``): trigger a sync, read the last report, stats."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from carafe.errors import Conflict, NotFound
from carafe.gateway.auth import Principal
from carafe.gateway.deps import get_state, require_admin
from carafe.gateway.retrieval import Retriever
from carafe.gateway.telemetry import metrics
from carafe.gateway.telemetry.attributes import admin_span

router = APIRouter(prefix="/admin/index", tags=["admin"], dependencies=[Depends(require_admin)])


class SyncRequest(BaseModel):
    source: str | None = Field(None, description="Sync only this source (default: all configured sources)")


def _retriever(request: Request) -> Retriever:
    return get_state(request).retriever


@router.post("/sync")
async def sync(
    request: Request, body: SyncRequest | None = None, principal: Principal = Depends(require_admin)
) -> dict[str, Any]:
    """Run a sync now and return its report (one sync at a time: 409 while one runs)."""
    retriever = _retriever(request)
    lock = get_state(request).index_sync_lock
    if lock.locked():
        raise Conflict("an index sync is already running; try again when it has finished", code="sync_running")
    async with lock:
        try:
            with admin_span("carafe.admin.index.sync", principal.user):
                report = await retriever.sync(body.source if body else None)
        except Exception:
            metrics.record_index_sync("failed")
            raise
    metrics.record_index_sync("partial" if report.failed else "ok")
    return report.to_dict()


@router.get("/report")
async def report(request: Request) -> dict[str, Any]:
    """The last sync's report (from this gateway or the CLI)."""
    last = await asyncio.to_thread(_retriever(request).index.last_report)
    if last is None:
        raise NotFound("no sync has run yet: POST /admin/index/sync or run `carafe index sync`")
    return last


@router.get("/stats")
async def stats(request: Request) -> dict[str, Any]:
    """Documents and chunks in the index, per source, and the last sync's counts."""
    return await _retriever(request).stats()

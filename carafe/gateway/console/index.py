"""The console's index page: the configured sources, the index's status and the last
sync report for admins and viewers; the documents with their ACL and sensitivity, and
the sync's failure reasons (which name files), for admins only."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from carafe.gateway.console.render import gate, page
from carafe.gateway.console.session import require
from carafe.gateway.deps import get_state

router = APIRouter(include_in_schema=False)


async def status(request: Request, *, with_failures: bool) -> dict[str, Any]:
    """Sources, store statistics and the last sync report; host paths and failures (which
    name files) only ``with_failures`` (admins)."""
    retriever = get_state(request).retriever
    sources = [
        {"name": s.name, "default_acl": s.default_acl.model_dump() if s.default_acl else None}
        | ({"path": str(s.path)} if with_failures else {})
        for s in retriever.index.config.sources
    ]
    stats = await retriever.stats() if retriever.configured else {}
    stats = {k: v for k, v in stats.items() if with_failures or k != "store"}  # the index's host path
    last = await asyncio.to_thread(retriever.index.last_report) or {}
    report = {k: last.get(k) for k in ("started_at", "duration_s", "counts", "chunks_embedded", "notes")}
    if with_failures:
        report["failed"] = last.get("failed", [])
    return {"sources": sources, "stats": stats, "last_sync": report if last else None}


async def documents(request: Request) -> list[dict[str, Any]]:
    retriever = get_state(request).retriever
    if not retriever.configured:
        return []
    return await asyncio.to_thread(retriever.index.documents)


@router.get("/console/index")
async def index_page(request: Request) -> Response:
    session = gate(request, "index")
    if isinstance(session, Response):
        return session
    admin = session.may("index.documents")
    return page(
        request,
        "index.html",
        session,
        overview=await status(request, with_failures=admin),
        documents=await documents(request) if admin else None,
    )


@router.get("/console/api/index")
async def index_json(request: Request) -> dict[str, Any]:
    session = require(request, "index")
    return await status(request, with_failures=session.may("index.documents"))


@router.get("/console/api/index/documents")
async def documents_json(request: Request) -> dict[str, Any]:
    require(request, "index.documents")
    return {"object": "list", "data": await documents(request)}

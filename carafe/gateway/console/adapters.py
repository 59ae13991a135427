"""The console's adapters page: every adapter's channels, versions, lineage from the
manifest and history; promote, roll back and canary split after a confirmation that
shows what changes (``/preview``). The changes go through the same adapter manager
and audited admin spans as ``/admin/adapters``."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from carafe.adapters.errors import AdapterConflict
from carafe.adapters.registry import Channels
from carafe.gateway.admin_adapters import adapter_attributes, adapter_detail
from carafe.gateway.console.render import gate, page
from carafe.gateway.console.session import require
from carafe.gateway.deps import get_state
from carafe.gateway.telemetry.attributes import admin_span

router = APIRouter(include_in_schema=False)
CHANNEL_FIELDS = ("stable", "canary", "canary_weight")


class Change(BaseModel):
    """One change an admin asks for on the adapters page."""

    action: Literal["promote", "rollback", "split"]
    version: int | None = Field(None, ge=1, description="promote: the new stable version; split: the canary")
    weight: int | None = Field(None, ge=0, le=100, description="split: percent of users sent to the canary")


def adapters(request: Request) -> list[dict[str, Any]]:
    state = get_state(request)
    return [adapter_detail(state.registry, state.adapters, n, history=20) for n in state.registry.names()]


def _after(ch: Channels, change: Change) -> Channels:
    """The channels once ``change`` is made (the registry's rules, without making it)."""
    if change.action == "rollback":
        if not ch.previous:
            raise AdapterConflict("there is no previous stable version to roll back to", param="action")
        return ch.model_copy(update={"stable": ch.previous[-1]})
    if change.version is None:
        raise AdapterConflict(f"{change.action} needs a version", param="version")
    if change.action == "split":
        return ch.model_copy(update={"canary": change.version, "canary_weight": change.weight or 0})
    canary = None if ch.canary == change.version else ch.canary
    return ch.model_copy(
        update={"stable": change.version, "canary": canary, "canary_weight": ch.canary_weight if canary else 0}
    )


def preview(request: Request, name: str, change: Change) -> dict[str, Any]:
    before = get_state(request).registry.channels(name)
    after = _after(before, change)
    moves = [
        {"channel": f, "from": getattr(before, f), "to": getattr(after, f)}
        for f in CHANNEL_FIELDS
        if getattr(before, f) != getattr(after, f)
    ]
    return {"name": name, "action": change.action, "changes": moves}


async def apply(request: Request, name: str, change: Change) -> dict[str, Any]:
    session = require(request, "adapters.change", change=True)
    manager, who = get_state(request).adapters, session.principal
    done = preview(request, name, change)
    attrs = adapter_attributes(name, version=change.version, canary_weight=change.weight, via="console")
    with admin_span(f"carafe.admin.adapters.{change.action}", who.user, **attrs):
        if change.action == "promote":
            await manager.promote(name, int(change.version or 0), actor=who.user)
        elif change.action == "rollback":
            await manager.rollback(name, actor=who.user)
        else:
            await manager.split(name, int(change.version or 0), change.weight or 0, actor=who.user)
    return done


@router.get("/console/adapters")
async def adapters_page(request: Request) -> Response:
    session = gate(request, "adapters")
    if isinstance(session, Response):
        return session
    return page(
        request, "adapters.html", session, adapters=adapters(request), may_change=session.may("adapters.change")
    )


@router.get("/console/api/adapters")
async def adapters_json(request: Request) -> dict[str, Any]:
    require(request, "adapters")
    return {"object": "list", "data": adapters(request)}


@router.post("/console/api/adapters/{name}/preview")
async def preview_json(name: str, change: Change, request: Request) -> dict[str, Any]:
    require(request, "adapters.change", change=True)
    return preview(request, name, change)


@router.post("/console/api/adapters/{name}/apply")
async def apply_json(name: str, change: Change, request: Request) -> dict[str, Any]:
    return await apply(request, name, change)

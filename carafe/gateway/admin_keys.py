"""Admin API for API keys: ``/admin/keys`` (admin role required)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from carafe.gateway.auth import Principal
from carafe.gateway.deps import get_state, require_admin
from carafe.gateway.telemetry import attributes as attr
from carafe.gateway.telemetry.attributes import admin_span

router = APIRouter(prefix="/admin/keys", tags=["admin"])


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str = Field(..., min_length=1, max_length=256)
    groups: list[str] = Field(default_factory=list)
    admin: bool = False
    models: list[str] | None = None
    rpm: int | None = Field(None, ge=1, le=1_000_000)
    tpm: int | None = Field(None, ge=1, le=1_000_000_000)
    team: str | None = Field(None, min_length=1, max_length=256)


@router.post("")
async def create_key(body: KeyCreate, request: Request, admin: Principal = Depends(require_admin)) -> dict[str, Any]:
    """Create a key; the response is the only place the clear key ever appears."""
    state = get_state(request)
    with admin_span("carafe.admin.keys.create", admin.user, **{"carafe.key.user": body.user}) as span:
        key, rec = await asyncio.to_thread(
            lambda: state.keys.create(
                body.user,
                groups=body.groups,
                admin=body.admin,
                models=body.models,
                rpm=body.rpm or state.config.auth.default_rpm,
                tpm=body.tpm or state.config.auth.default_tpm,
                team=body.team,
                actor=admin.user,
            )
        )
        span.set_attribute(attr.CARAFE_KEY_ID, rec.key_id)
    return {"key": key, **rec.public()}


@router.get("")
async def list_keys(request: Request, _: Principal = Depends(require_admin)) -> dict[str, Any]:
    records = await asyncio.to_thread(get_state(request).keys.list)
    return {"object": "list", "data": [r.public() for r in records]}


@router.delete("/{key_id}")
async def revoke_key(key_id: str, request: Request, admin: Principal = Depends(require_admin)) -> dict[str, Any]:
    with admin_span("carafe.admin.keys.revoke", admin.user, **{"carafe.key.id": key_id}):
        await asyncio.to_thread(get_state(request).keys.revoke, key_id, actor=admin.user)
    return {"id": key_id, "revoked": True}

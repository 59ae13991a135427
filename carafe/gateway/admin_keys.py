"""Admin API for API keys and their budgets: ``/admin/keys`` (admin role required).

A budget (tokens and/or cost per day or month) is set per key, user or team with
``PUT /admin/keys/budgets``; every replica enforces it within a few seconds."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from carafe.gateway.auth import Principal
from carafe.gateway.deps import get_state, require_admin
from carafe.gateway.telemetry import attributes as attr
from carafe.gateway.telemetry.attributes import admin_span
from carafe.state import BudgetRule
from carafe.state.budgets import MAX_BUDGET_COST, MAX_BUDGET_TOKENS

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


class KeyLimits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rpm: int | None = Field(None, ge=1, le=1_000_000)
    tpm: int | None = Field(None, ge=1, le=1_000_000_000)


class BudgetSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scope: str = Field(..., min_length=5, max_length=300, description="key:<key id>, user:<name> or team:<name>")
    window: Literal["day", "month"] = "day"
    max_tokens: int | None = Field(None, ge=1, le=MAX_BUDGET_TOKENS)
    max_cost: float | None = Field(None, gt=0, le=MAX_BUDGET_COST, description="in the currency of state.prices")


@router.put("/budgets")
async def set_budget(body: BudgetSet, request: Request, admin: Principal = Depends(require_admin)) -> dict[str, Any]:
    """Set a token and/or cost budget; a part left out keeps its current value."""
    budgets = get_state(request).store.budgets
    with admin_span("carafe.admin.budgets.set", admin.user, **{"carafe.budget.scope": body.scope}):
        rule = await asyncio.to_thread(
            lambda: budgets.set(body.scope, body.window, body.max_tokens, max_cost=body.max_cost, actor=admin.user)
        )
    return _budget(rule)


@router.get("/budgets")
async def list_budgets(request: Request, _: Principal = Depends(require_admin)) -> dict[str, Any]:
    rules = await asyncio.to_thread(get_state(request).store.budgets.rules)
    return {"object": "list", "data": [_budget(r) for r in rules]}


def _budget(rule: BudgetRule) -> dict[str, Any]:
    return {"scope": rule.scope, "window": rule.window, "max_tokens": rule.max_tokens, "max_cost": rule.max_cost}


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


@router.patch("/{key_id}")
async def set_limits(
    key_id: str, body: KeyLimits, request: Request, admin: Principal = Depends(require_admin)
) -> dict[str, Any]:
    """Change a key's rpm and/or tpm (a limit left out is kept); every replica applies it within state.cache_ttl_s."""
    keys = get_state(request).keys
    with admin_span("carafe.admin.keys.limits", admin.user, **{"carafe.key.id": key_id}):
        rec = await asyncio.to_thread(lambda: keys.set_limits(key_id, rpm=body.rpm, tpm=body.tpm, actor=admin.user))
    return rec.public()

"""The console's keys, users and limits page (admins only): API keys with their limits
and spend, create and revoke; token budgets per key, user or team over a day or a
month, with what each scope spent in the current period.

Every change goes through the state database's own functions (the same as
``/admin/keys`` and ``carafe keys``) inside an audited admin span; the clear key of a
new key is shown once and never kept.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from carafe.gateway.console.render import gate, page
from carafe.gateway.console.session import require
from carafe.gateway.deps import get_state
from carafe.gateway.state import AppState
from carafe.gateway.telemetry import attributes as attr
from carafe.gateway.telemetry.attributes import admin_span
from carafe.state import KeyRecord

router = APIRouter(include_in_schema=False)
WINDOWS = ("day", "month")


class NewKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str = Field(..., min_length=1, max_length=256)
    groups: list[str] = Field(default_factory=list)
    roles: list[Literal["admin", "auditor", "viewer"]] = Field(default_factory=list)
    team: str | None = Field(None, max_length=256)
    rpm: int | None = Field(None, ge=1, le=1_000_000)
    tpm: int | None = Field(None, ge=1, le=1_000_000_000)


class KeyLimits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key_id: str = Field(..., min_length=1, max_length=64)
    rpm: int | None = Field(None, ge=1, le=1_000_000)
    tpm: int | None = Field(None, ge=1, le=1_000_000_000)


class NewBudget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["key", "user", "team"]
    name: str = Field(..., min_length=1, max_length=256)
    window: Literal["day", "month"]
    max_tokens: int = Field(..., ge=1, le=2**31 - 1)


def _spent(state: AppState, scope: str) -> dict[str, int]:
    return {w: state.store.budgets.spent(scope, w) for w in WINDOWS}  # type: ignore[arg-type]


def overview(state: AppState) -> dict[str, Any]:
    """Keys, budgets and the spend of every key, user and team (blocking: the database)."""
    state.store.ledger.flush()  # what this replica charged, so the figures are current
    records: list[KeyRecord] = state.keys.list()
    rules = state.store.budgets.rules()
    people = {p.user_name for p in state.store.directory.users()}  # IdP users provisioned by SCIM
    users = sorted({r.user for r in records} | people | {b.scope[5:] for b in rules if b.scope.startswith("user:")})
    teams = sorted({r.team for r in records if r.team} | {b.scope[5:] for b in rules if b.scope.startswith("team:")})
    keys = [r.public() | {"spent": _spent(state, f"key:{r.key_id}")} for r in reversed(records)]
    budgets = [
        {"scope": b.scope, "window": b.window, "max_tokens": b.max_tokens, "spent": _spent(state, b.scope)[b.window]}
        for b in rules
    ]
    return {
        "keys": keys,
        "budgets": budgets,
        "users": [{"user": u, "spent": _spent(state, f"user:{u}")} for u in users],
        "teams": [{"team": t, "spent": _spent(state, f"team:{t}")} for t in teams],
    }


def _create(state: AppState, body: NewKey, actor: str) -> tuple[str, KeyRecord]:
    auth = state.config.auth
    return state.store.keys.create(
        body.user,
        groups=body.groups,
        roles=list(body.roles),
        rpm=body.rpm or auth.default_rpm,
        tpm=body.tpm or auth.default_tpm,
        team=body.team or None,
        actor=actor,
    )


@router.get("/console/keys")
async def keys_page(request: Request) -> Response:
    session = gate(request, "keys")
    if isinstance(session, Response):
        return session
    data = await asyncio.to_thread(overview, get_state(request))
    return page(request, "keys.html", session, **data)


@router.get("/console/api/keys")
async def keys_json(request: Request) -> dict[str, Any]:
    require(request, "keys")
    return {"object": "console.keys", **await asyncio.to_thread(overview, get_state(request))}


@router.post("/console/api/keys")
async def create_json(body: NewKey, request: Request) -> dict[str, Any]:
    who = require(request, "keys", change=True).principal
    state = get_state(request)
    attrs = {"carafe.key.user": body.user, "carafe.console": True}
    with admin_span("carafe.admin.keys.create", who.user, **attrs) as span:
        key, record = await asyncio.to_thread(_create, state, body, who.user)
        span.set_attribute(attr.CARAFE_KEY_ID, record.key_id)
    return {"key": key, **record.public()}


@router.post("/console/api/keys/{key_id}/revoke")
async def revoke_json(key_id: str, request: Request) -> dict[str, Any]:
    who = require(request, "keys", change=True).principal
    with admin_span("carafe.admin.keys.revoke", who.user, **{"carafe.key.id": key_id, "carafe.console": True}):
        await asyncio.to_thread(get_state(request).keys.revoke, key_id, actor=who.user)
    return {"id": key_id, "revoked": True}


@router.post("/console/api/limits")
async def limits_json(body: KeyLimits, request: Request) -> dict[str, Any]:
    who = require(request, "keys", change=True).principal
    keys = get_state(request).keys
    with admin_span("carafe.admin.keys.limits", who.user, **{"carafe.key.id": body.key_id, "carafe.console": True}):
        rec = await asyncio.to_thread(
            lambda: keys.set_limits(body.key_id.strip(), rpm=body.rpm, tpm=body.tpm, actor=who.user)
        )
    return rec.public()


@router.post("/console/api/budgets")
async def budget_json(body: NewBudget, request: Request) -> dict[str, Any]:
    who = require(request, "keys", change=True).principal
    scope = f"{body.kind}:{body.name.strip()}"
    attrs = {"carafe.budget.scope": scope, "carafe.budget.window": body.window, "carafe.console": True}
    with admin_span("carafe.admin.budgets.set", who.user, **attrs):
        rule = await asyncio.to_thread(
            get_state(request).store.budgets.set, scope, body.window, body.max_tokens, actor=who.user
        )
    return {"scope": rule.scope, "window": rule.window, "max_tokens": rule.max_tokens}

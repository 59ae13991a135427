"""Admin adapter API (``/admin/adapters``) and vLLM's runtime-LoRA endpoints.

``/admin/adapters`` manages the registry (list, show with manifests and history,
add, promote, rollback, split, remove, sync); every change goes through the
resident-set manager first, so a version that cannot load is refused before any
channel moves. The actor recorded is the calling principal's user.

``POST /v1/load_lora_adapter`` / ``/v1/unload_lora_adapter`` behave as vLLM's
(``vllm/entrypoints/openai/serving_models.py``): plain-text ``Success: ...`` on
200, 400 when the name is already loaded or a field is missing, 404 when
unloading an unknown name. They act on the engine directly, outside the registry.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse
from opentelemetry import trace
from pydantic import BaseModel, Field

from carafe.adapters.errors import AdapterConflict, AdapterNotFound
from carafe.adapters.manager import AdapterManager
from carafe.adapters.registry import STABLE, Registry
from carafe.errors import InvalidInput
from carafe.gateway.auth import Principal
from carafe.gateway.deps import get_state, require_admin
from carafe.gateway.telemetry import attributes as attr
from carafe.gateway.telemetry.attributes import admin_span

router = APIRouter(tags=["admin"])


def adapter_attributes(name: str | None, **attrs: Any) -> dict[str, Any]:
    """Span attributes of an adapter change; ``version`` becomes ``name@version``
    as on request spans, so `carafe audit --adapter NAME` finds both."""
    out: dict[str, Any] = {} if name is None else {attr.CARAFE_ADAPTER_NAME: name}
    for key, value in attrs.items():
        if value is None:
            continue
        if key == "version" and name is not None:
            value = f"{name}@{value}"
        out[f"carafe.adapter.{key}"] = value
    return out


def _admin_span(action: str, principal: Principal, name: str | None = None, **attrs: Any) -> Any:
    return admin_span(f"carafe.admin.adapters.{action}", principal.user, **adapter_attributes(name, **attrs))


class AddAdapter(BaseModel):
    path: str = Field(description="A PEFT adapter folder on the gateway's host")
    name: str | None = Field(None, description="Adapter name (default: the manifest's, else the folder's)")
    version: int | None = Field(None, ge=1, description="Version number (default: next free)")
    kind: str | None = None
    description: str | None = None


class Promote(BaseModel):
    version: int = Field(ge=1)
    channel: str = Field(STABLE, description="stable, canary or a named channel")


class Split(BaseModel):
    canary: int = Field(ge=1, description="The canary version")
    weight: int = Field(ge=0, le=100, description="Percent of users (sticky) routed to it")


class LoadLoRAAdapterRequest(BaseModel):
    lora_name: str = ""
    lora_path: str = ""


class UnloadLoRAAdapterRequest(BaseModel):
    lora_name: str = ""
    lora_int_id: int | None = None


def _parts(request: Request) -> tuple[Registry, AdapterManager]:
    state = get_state(request)
    return state.registry, state.adapters


def adapter_summary(registry: Registry, manager: AdapterManager | None, name: str) -> dict[str, Any]:
    ch = registry.channels(name)
    resident = set(manager.resident()) if manager is not None else set()
    return {
        "name": name,
        "stable": ch.stable,
        "canary": ch.canary,
        "canary_weight": ch.canary_weight,
        "channels": ch.named,
        "previous": ch.previous,
        "versions": registry.versions(name),
        "resident": sorted(r for r in resident if r.partition("@")[0] == name),
        "skipped": {r: why for r, why in (manager.broken if manager else {}).items() if r.partition("@")[0] == name},
    }


def adapter_detail(registry: Registry, manager: AdapterManager | None, name: str, history: int = 50) -> dict[str, Any]:
    detail = adapter_summary(registry, manager, name)
    detail["manifests"] = {v: registry.get(name, v).manifest.model_dump(mode="json") for v in detail["versions"]}
    detail["history"] = registry.history(name, history)
    return detail


@router.get("/admin/adapters")
async def list_adapters(request: Request, _: Principal = Depends(require_admin)) -> dict[str, Any]:
    registry, manager = _parts(request)
    return {"object": "list", "data": [adapter_summary(registry, manager, n) for n in registry.names()]}


@router.get("/admin/adapters/{name}")
async def show_adapter(name: str, request: Request, _: Principal = Depends(require_admin)) -> dict[str, Any]:
    registry, manager = _parts(request)
    return adapter_detail(registry, manager, name)


@router.post("/admin/adapters", status_code=201)
async def add_adapter(
    body: AddAdapter, request: Request, principal: Principal = Depends(require_admin)
) -> dict[str, Any]:
    registry, manager = _parts(request)
    with _admin_span("add", principal, body.name, version=body.version):
        av = await asyncio.to_thread(
            registry.add,
            Path(body.path),
            actor=principal.user,
            name=body.name,
            version=body.version,
            kind=body.kind,  # type: ignore[arg-type]
            description=body.description,
        )
        trace.get_current_span().set_attribute(attr.CARAFE_ADAPTER_VERSION, av.ref)
    return {
        "name": av.name,
        "version": av.version,
        "ref": av.ref,
        "manifest": av.manifest.model_dump(mode="json"),
        **{k: v for k, v in adapter_summary(registry, manager, av.name).items() if k != "name"},
    }


@router.post("/admin/adapters/{name}/promote")
async def promote_adapter(
    name: str, body: Promote, request: Request, principal: Principal = Depends(require_admin)
) -> dict[str, Any]:
    registry, manager = _parts(request)
    with _admin_span("promote", principal, name, version=body.version, channel=body.channel):
        await manager.promote(name, body.version, actor=principal.user, channel=body.channel)
    return adapter_summary(registry, manager, name)


@router.post("/admin/adapters/{name}/rollback")
async def rollback_adapter(
    name: str, request: Request, principal: Principal = Depends(require_admin)
) -> dict[str, Any]:
    registry, manager = _parts(request)
    with _admin_span("rollback", principal, name):
        await manager.rollback(name, actor=principal.user)
    return adapter_summary(registry, manager, name)


@router.post("/admin/adapters/{name}/split")
async def split_adapter(
    name: str, body: Split, request: Request, principal: Principal = Depends(require_admin)
) -> dict[str, Any]:
    registry, manager = _parts(request)
    with _admin_span("split", principal, name, version=body.canary, canary_weight=body.weight):
        await manager.split(name, body.canary, body.weight, actor=principal.user)
    return adapter_summary(registry, manager, name)


@router.delete("/admin/adapters/{name}")
async def remove_adapter(
    name: str, request: Request, version: int | None = None, principal: Principal = Depends(require_admin)
) -> dict[str, Any]:
    registry, manager = _parts(request)
    with _admin_span("remove", principal, name, version=version):
        await asyncio.to_thread(registry.remove, name, actor=principal.user, version=version)
        await manager.reconcile()
    return {"name": name, "version": version, "removed": True}


@router.post("/admin/adapters/sync")
async def sync_adapters(request: Request, principal: Principal = Depends(require_admin)) -> dict[str, Any]:
    """Reconcile the engine with the registry now (what the loop does periodically), retrying broken versions."""
    _, manager = _parts(request)
    with _admin_span("sync", principal):
        return asdict(await manager.reconcile(retry=True))


# vLLM-compatible runtime LoRA endpoints --------------------------------------
@router.post("/v1/load_lora_adapter", response_class=PlainTextResponse)
async def load_lora_adapter(
    body: LoadLoRAAdapterRequest, request: Request, principal: Principal = Depends(require_admin)
) -> str:
    if not body.lora_name or not body.lora_path:
        raise InvalidInput("Both 'lora_name' and 'lora_path' must be provided.", code="InvalidUserInput")
    engine = get_state(request).engine
    if any(a.name == body.lora_name for a in engine.adapters()):
        raise InvalidInput(
            f"The lora adapter '{body.lora_name}' has already been loaded.", param="lora_name", code="InvalidUserInput"
        )
    try:
        with _admin_span("load", principal, body.lora_name):
            await engine.load_adapter(body.lora_name, body.lora_path)
    except AdapterConflict as exc:  # a concurrent load of the same name won the race
        raise InvalidInput(
            f"The lora adapter '{body.lora_name}' has already been loaded.", param="lora_name", code="InvalidUserInput"
        ) from exc
    return f"Success: LoRA adapter '{body.lora_name}' added successfully."


@router.post("/v1/unload_lora_adapter", response_class=PlainTextResponse)
async def unload_lora_adapter(
    body: UnloadLoRAAdapterRequest, request: Request, principal: Principal = Depends(require_admin)
) -> str:
    if not body.lora_name and body.lora_int_id is None:
        raise InvalidInput("either 'lora_name' and 'lora_int_id' needs to be provided.", code="InvalidUserInput")
    engine = get_state(request).engine
    if not any(a.name == body.lora_name for a in engine.adapters()):
        raise AdapterNotFound(
            f"The lora adapter '{body.lora_name}' cannot be found.", param="lora_name", code="NotFoundError"
        )
    with _admin_span("unload", principal, body.lora_name):
        await engine.unload_adapter(body.lora_name)
    return f"Success: LoRA adapter '{body.lora_name}' removed successfully."

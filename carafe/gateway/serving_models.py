"""``GET /v1/models`` and ``/v1/models/{id}``: the base model and the adapters the
caller may use, each adapter with ``parent`` set to the base (as vLLM lists LoRAs)."""

from __future__ import annotations

from pathlib import PurePosixPath, PureWindowsPath

from fastapi import APIRouter, Depends, Request

from carafe.errors import NotFound
from carafe.gateway.auth import Principal
from carafe.gateway.deps import get_principal, get_state
from carafe.gateway.protocol import ModelCard, ModelList
from carafe.gateway.state import AppState

router = APIRouter()


def _host_path(root: object) -> bool:
    text = str(root or "")
    return PurePosixPath(text).is_absolute() or PureWindowsPath(text).is_absolute() or text.startswith(("~", "."))


def model_cards(state: AppState, principal: Principal) -> list[ModelCard]:
    """The cards ``principal`` may see; a runtime-loaded adapter's host path only for admins."""
    cards = state.router.list_models(principal)
    if not principal.is_admin:
        cards = [{**c, "root": c["id"]} if _host_path(c.get("root")) else c for c in cards]
    return [ModelCard(**card) for card in cards]


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request, principal: Principal = Depends(get_principal)) -> ModelList:
    return ModelList(data=model_cards(get_state(request), principal))


@router.get("/v1/models/{model_id:path}", response_model=ModelCard)
async def retrieve_model(model_id: str, request: Request, principal: Principal = Depends(get_principal)) -> ModelCard:
    for card in model_cards(get_state(request), principal):
        if card.id == model_id:
            return card
    raise NotFound(f"the model {model_id!r} does not exist", param="model", code="model_not_found")

"""``GET /v1/models`` and ``/v1/models/{id}``: the base model and the adapters the
caller may use, each adapter with ``parent`` set to the base (as vLLM lists LoRAs)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from carafe.errors import NotFound
from carafe.gateway.auth import Principal
from carafe.gateway.deps import get_principal, get_state
from carafe.gateway.protocol import ModelCard, ModelList
from carafe.gateway.state import AppState

router = APIRouter()


def model_cards(state: AppState, principal: Principal) -> list[ModelCard]:
    return [ModelCard(**card) for card in state.router.list_models(principal)]


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request, principal: Principal = Depends(get_principal)) -> ModelList:
    return ModelList(data=model_cards(get_state(request), principal))


@router.get("/v1/models/{model_id:path}", response_model=ModelCard)
async def retrieve_model(model_id: str, request: Request, principal: Principal = Depends(get_principal)) -> ModelCard:
    for card in model_cards(get_state(request), principal):
        if card.id == model_id:
            return card
    raise NotFound(f"the model {model_id!r} does not exist", param="model", code="model_not_found")

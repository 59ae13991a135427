"""``POST /v1/embeddings`` with the embedded MiniLM model."""

from __future__ import annotations

import asyncio
import base64

from fastapi import APIRouter, Depends, Request

from carafe.errors import InvalidInput, NotFound
from carafe.gateway.admission import check_embedding_input
from carafe.gateway.auth import Principal
from carafe.gateway.deps import get_principal, get_state
from carafe.gateway.protocol import EmbeddingData, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage

router = APIRouter()

ALIASES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "text-embedding-minilm"}


@router.post("/v1/embeddings", response_model=EmbeddingResponse)
async def create_embeddings(
    body: EmbeddingRequest, request: Request, principal: Principal = Depends(get_principal)
) -> EmbeddingResponse:
    state = get_state(request)
    embedder = state.api_embedder
    if body.model.lower() not in ALIASES and body.model != embedder.model_id:
        raise NotFound(
            f"the embedding model {body.model!r} does not exist; use {embedder.model_id!r}",
            param="model",
            code="model_not_found",
        )
    if body.dimensions is not None and body.dimensions != embedder.dim:
        raise InvalidInput(f"{embedder.model_id} only produces {embedder.dim} dimensions", param="dimensions")
    texts = body.inputs()
    check_embedding_input(texts, state.config.server)  # before any tokenizing
    tokens = await asyncio.to_thread(embedder.count_tokens, texts)
    too_long = [i for i, t in enumerate(tokens) if t > 8192]
    if too_long:
        raise InvalidInput(f"input[{too_long[0]}] has {tokens[too_long[0]]} tokens; the limit is 8192", param="input")
    vectors = await asyncio.to_thread(embedder.encode, texts)
    data = []
    for i, v in enumerate(vectors):
        emb = base64.b64encode(v.astype("<f4").tobytes()).decode() if body.encoding_format == "base64" else v.tolist()
        data.append(EmbeddingData(index=i, embedding=emb))
    total = int(sum(tokens))
    return EmbeddingResponse(
        data=data, model=embedder.model_id, usage=EmbeddingUsage(prompt_tokens=total, total_tokens=total)
    )

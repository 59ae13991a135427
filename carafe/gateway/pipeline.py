"""The request path shared by chat and completions, before the engine runs:
route → input guards → retrieval → prompt assembly. Every step is a span.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace

from carafe.adapters.engine import ChatMessage
from carafe.errors import ContentBlocked, Forbidden, NotFound
from carafe.gateway.auth import Principal
from carafe.gateway.protocol import Citation
from carafe.gateway.state import AppState

tracer = trace.get_tracer("carafe.gateway")


@dataclass(frozen=True)
class _Retrieval:
    enabled: bool = False
    top_k: int = 4


@dataclass(frozen=True)
class BaseRoute:
    """The decision made when no router is configured: base model or a resident adapter."""

    requested: str
    adapter: str | None
    served_model: str
    route: str
    retrieval: Any = field(default_factory=_Retrieval)
    guard_policy: str | None = None
    record_content: bool = False


async def resolve_route(state: AppState, model: str, principal: Principal, query: str) -> Any:
    """A RouteDecision (see ``carafe.gateway.routing``) for ``model``."""
    with tracer.start_as_current_span("carafe.route") as span:
        span.set_attribute("gen_ai.request.model", model)
        if state.router is not None:
            decision = await state.router.resolve(model, principal, query=query)
        else:
            decision = _base_route(state, model, principal)
        span.set_attribute("gen_ai.response.model", decision.served_model)
        span.set_attribute("carafe.route", decision.route)
        span.set_attribute("carafe.adapter.version", decision.adapter or "")
        return decision


def _base_route(state: AppState, model: str, principal: Principal) -> BaseRoute:
    engine = state.engine
    if model == engine.model_id:
        if not principal.may_use(model):
            raise Forbidden(f"this key may not use model {model!r}", param="model", code="model_not_allowed")
        return BaseRoute(model, None, engine.model_id, "base")
    names = {a.name for a in engine.adapters()}
    if model in names:
        if not principal.may_use(model):
            raise Forbidden(f"this key may not use model {model!r}", param="model", code="model_not_allowed")
        return BaseRoute(model, model, model, model)
    raise NotFound(f"the model {model!r} does not exist", param="model", code="model_not_found")


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class Prepared:
    decision: Any
    messages: list[ChatMessage]
    passages: list[Any] = field(default_factory=list)
    citations: list[Citation] | None = None
    input_verdicts: list[Any] = field(default_factory=list)
    principal: Principal | None = None
    output_guards: list[Any] = field(default_factory=list)


async def guard_input(state: AppState, text: str, decision: Any, principal: Principal) -> tuple[str, list[Any]]:
    """Run the input guards; returns the (possibly redacted) text. Raises ContentBlocked."""
    if state.guards is None or not text:
        return text, []
    with tracer.start_as_current_span("carafe.guard.input") as span:
        result = await state.guards.check_input(text, policy=decision.guard_policy, principal=principal)
        metrics = state.extras.get("metrics")
        for v in result.verdicts:
            for k, val in v.to_attributes().items():
                span.set_attribute(k, val)
            if metrics is not None:
                metrics.record_guard(v.check, v.action)
        if result.blocked is not None:
            b = result.blocked
            span.set_attribute("carafe.guard.blocked", b.check)
            raise ContentBlocked(
                f"the request was blocked by the {b.check} guard ({b.category}): {b.reason}",
                param="messages", code="content_filter",
            )
        return result.text, list(result.verdicts)


async def retrieve(state: AppState, query: str, decision: Any, principal: Principal) -> list[Any]:
    policy = decision.retrieval
    if state.retriever is None or not policy.enabled or not query.strip():
        return []
    with tracer.start_as_current_span("carafe.retrieve") as span:
        t0 = time.perf_counter()
        passages = await state.retriever.retrieve(query, principal, top_k=policy.top_k)
        metrics = state.extras.get("metrics")
        if metrics is not None:
            metrics.record_retrieval(time.perf_counter() - t0, len(passages))
        span.set_attribute("gen_ai.data_source.id", state.config.indexer.qdrant.collection)
        span.set_attribute("gen_ai.operation.name", "retrieval")
        span.set_attribute("carafe.retrieval.doc_ids", [f"{p.doc_id}@{p.version}" for p in passages])
        span.set_attribute("carafe.retrieval.hits", len(passages))
        return passages


async def prepare_chat(state: AppState, principal: Principal, model: str, messages: list[ChatMessage]) -> Prepared:
    """Route, guard the newest user turn, retrieve for it and assemble the prompt."""
    last_user = next((i for i in range(len(messages) - 1, -1, -1) if messages[i].role == "user"), None)
    query = messages[last_user].content if last_user is not None else ""
    decision = await resolve_route(state, model, principal, query)
    guarded, verdicts = await guard_input(state, query, decision, principal)
    if last_user is not None and guarded != query:
        messages = list(messages)
        messages[last_user] = ChatMessage(role="user", content=guarded)
        query = guarded
    # tool results that came after the user's turn are new input too: the same input guards see them
    for i in range(0 if last_user is None else last_user + 1, len(messages)):
        if messages[i].role == "tool":
            text, more = await guard_input(state, messages[i].content, decision, principal)
            verdicts = [*verdicts, *more]
            if text != messages[i].content:
                messages = list(messages)
                messages[i] = ChatMessage(role="tool", content=text)
    passages = await retrieve(state, query, decision, principal)
    citations = None
    if passages:
        from carafe.indexer.prompt import rag_system_prompt

        with tracer.start_as_current_span("carafe.prompt"):
            system = [m.content for m in messages if m.role in ("system", "developer")]
            rest = [m for m in messages if m.role not in ("system", "developer")]
            prompt = rag_system_prompt(passages, "\n\n".join(system) or None)
            messages = [ChatMessage(role="system", content=prompt), *rest]
        citations = [
            Citation(index=i + 1, doc_id=p.doc_id, title=p.title, version=str(p.version), chunk=p.chunk)
            for i, p in enumerate(passages)
        ]
    return Prepared(decision, messages, passages, citations, verdicts, principal)

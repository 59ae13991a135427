"""The request path shared by chat and completions, before the engine runs:
route → input guards → retrieval → prompt assembly. Every step is a span.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from opentelemetry import trace

from carafe.adapters.engine import ChatMessage
from carafe.errors import ContentBlocked
from carafe.gateway.auth import Principal
from carafe.gateway.protocol import Citation
from carafe.gateway.retrieval import citations
from carafe.gateway.routing import RouteDecision
from carafe.gateway.state import AppState
from carafe.gateway.telemetry import attributes as attr
from carafe.gateway.telemetry import metrics
from carafe.guards import GuardVerdict, OutputStream
from carafe.indexer.prompt import Passage, rag_system_prompt

tracer = trace.get_tracer("carafe.gateway")


async def resolve_route(state: AppState, model: str, principal: Principal, query: str) -> RouteDecision:
    """The :class:`RouteDecision` for ``model`` (404, 403 or 503 when it cannot be served)."""
    with tracer.start_as_current_span("carafe.route") as span:
        span.set_attribute(attr.GEN_AI_REQUEST_MODEL, model)
        decision = await state.router.resolve(model, principal, query=query)
        span.set_attribute(attr.GEN_AI_RESPONSE_MODEL, decision.served_model)
        span.set_attribute(attr.CARAFE_ROUTE, decision.route)
        span.set_attribute(attr.CARAFE_ADAPTER_VERSION, decision.adapter or "")
        return decision


@dataclass
class Prepared:
    """A request routed, guarded and given its passages: what the engine call needs."""

    decision: RouteDecision
    messages: list[ChatMessage]
    principal: Principal
    passages: list[Passage] = field(default_factory=list)
    citations: list[Citation] | None = None
    input_verdicts: list[GuardVerdict] = field(default_factory=list)
    output_guards: list[OutputStream] = field(default_factory=list)


async def guard_input(
    state: AppState, text: str, decision: RouteDecision, principal: Principal
) -> tuple[str, list[GuardVerdict]]:
    """Run the input guards; returns the (possibly redacted) text. Raises ContentBlocked."""
    if state.guards is None or not text:
        return text, []
    with tracer.start_as_current_span("carafe.guard.input") as span:
        span.set_attribute(attr.CARAFE_PRINCIPAL, principal.user)  # a blocked request is audited with its user
        result = await state.guards.check_input(text, policy=decision.guard_policy, principal=principal)
        for v in result.verdicts:
            span.set_attributes(v.to_attributes())
            metrics.record_guard(v.check, v.action)
        if result.blocked is not None:
            b = result.blocked
            span.set_attribute(attr.CARAFE_GUARD_BLOCKED, b.check)
            raise ContentBlocked(
                f"the request was blocked by the {b.check} guard ({b.category}): {b.reason}",
                param="messages",
                code="content_filter",
            )
        return result.text, list(result.verdicts)


async def retrieve(state: AppState, query: str, decision: RouteDecision, principal: Principal) -> list[Passage]:
    """The passages the route's retrieval policy asks for, filtered by what ``principal`` may read."""
    policy = decision.retrieval
    if not policy.enabled or not query.strip():
        return []
    with tracer.start_as_current_span("carafe.retrieve") as span:
        t0 = time.perf_counter()
        passages = await state.retriever.retrieve(query, principal, top_k=policy.top_k)
        metrics.record_retrieval(time.perf_counter() - t0, len(passages))
        span.set_attribute(attr.GEN_AI_DATA_SOURCE_ID, state.config.indexer.qdrant.collection)
        span.set_attribute(attr.GEN_AI_OPERATION_NAME, "retrieval")
        span.set_attribute(attr.CARAFE_RETRIEVAL_DOC_IDS, [f"{p.doc_id}@{p.version}" for p in passages])
        span.set_attribute(attr.CARAFE_RETRIEVAL_HITS, len(passages))
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
    cited = None
    if passages:
        with tracer.start_as_current_span("carafe.prompt"):
            system = [m.content for m in messages if m.role in ("system", "developer")]
            rest = [m for m in messages if m.role not in ("system", "developer")]
            prompt = rag_system_prompt(passages, "\n\n".join(system) or None)
            messages = [ChatMessage(role="system", content=prompt), *rest]
        cited = [Citation(**c) for c in citations(passages)]
    return Prepared(decision, messages, principal, passages, cited, verdicts)

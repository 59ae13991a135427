"""The request path shared by chat and completions, before the engine runs:
route → input guards → retrieval → prompt assembly. Every step is a span.
"""

from __future__ import annotations

import json
import re
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
    request_texts: tuple[str, ...] = ()  # what the caller sent: text they dictated is never a leak


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


_TOOLS_PREAMBLE = re.compile(r"You may call one or more functions.*?<tools>\n(.*?)\n</tools>.*?</tool_call>", re.DOTALL)


def client_text(message: ChatMessage) -> str:
    """What the client wrote in ``message``: the gateway's own tools preamble (carafe.gateway.tools)
    is left out, the tool names and descriptions inside it are kept (a tool description can carry
    an injection too)."""

    def described(m: re.Match[str]) -> str:
        out = []
        for line in m.group(1).splitlines():
            try:
                fn = json.loads(line).get("function", {})
            except ValueError:
                continue
            out.append(f"{fn.get('name', '')}: {fn.get('description', '')}")
        return "\n".join(out)

    return _TOOLS_PREAMBLE.sub(described, message.content)


async def guard_messages(
    state: AppState, messages: list[ChatMessage], decision: RouteDecision, principal: Principal
) -> tuple[list[ChatMessage], list[GuardVerdict]]:
    """Every client-supplied message through the input guards: system, developer, earlier
    user and assistant turns, tool results (verdicts cached, so resent history is cheap).
    Returns the messages with redactions applied. Raises ContentBlocked naming the message."""
    if state.guards is None or not messages:
        return messages, []
    with tracer.start_as_current_span("carafe.guard.input") as span:
        span.set_attribute(attr.CARAFE_PRINCIPAL, principal.user)  # a blocked request is audited with its user
        results = await state.guards.check_messages(
            [(m.role, client_text(m)) for m in messages], policy=decision.guard_policy, principal=principal
        )
        verdicts = [v for r in results for v in r.verdicts]
        for v in verdicts:
            span.set_attributes(v.to_attributes())
            metrics.record_guard(v.check, v.action)
        for i, (m, r) in enumerate(zip(messages, results)):
            if r.blocked is not None:
                b = r.blocked
                span.set_attribute(attr.CARAFE_GUARD_BLOCKED, b.check)
                raise ContentBlocked(
                    f"the request was blocked by the {b.check} guard ({b.category}) in messages[{i}] "
                    f"(role {m.role}): {b.reason}",
                    param=f"messages[{i}]",
                    code="content_filter",
                )
        guarded = [
            m if r.text == m.content else ChatMessage(role=m.role, content=r.text) for m, r in zip(messages, results)
        ]
        return guarded, verdicts


async def prepare_chat(state: AppState, principal: Principal, model: str, messages: list[ChatMessage]) -> Prepared:
    """Route, guard every message, retrieve for the newest user turn and assemble the prompt."""
    request_texts = tuple(m.content for m in messages)
    last_user = next((i for i in range(len(messages) - 1, -1, -1) if messages[i].role == "user"), None)
    query = messages[last_user].content if last_user is not None else ""
    decision = await resolve_route(state, model, principal, query)
    messages, verdicts = await guard_messages(state, list(messages), decision, principal)
    if last_user is not None:
        query = messages[last_user].content
    passages = await retrieve(state, query, decision, principal)
    cited = None
    if passages:
        with tracer.start_as_current_span("carafe.prompt"):
            system = [m.content for m in messages if m.role in ("system", "developer")]
            rest = [m for m in messages if m.role not in ("system", "developer")]
            prompt = rag_system_prompt(passages, "\n\n".join(system) or None)
            messages = [ChatMessage(role="system", content=prompt), *rest]
        cited = [Citation(**c) for c in citations(passages)]
    return Prepared(decision, messages, principal, passages, cited, verdicts, request_texts=request_texts)

"""Span attribute names: OpenTelemetry GenAI semantic conventions plus Carafe's own.

GenAI names follow the conventions now kept in open-telemetry/semantic-conventions-genai
(`gen_ai.provider.name` replaced the older `gen_ai.system`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span

# OpenTelemetry GenAI semantic conventions
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"  # chat | text_completion | embeddings | retrieval
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_REQUEST_TOOLS = "gen_ai.request.tools"  # names of the functions offered
GEN_AI_DATA_SOURCE_ID = "gen_ai.data_source.id"  # the store searched (e.g. the Qdrant collection)

# HTTP semantic conventions (root SERVER span)
HTTP_REQUEST_METHOD = "http.request.method"
HTTP_RESPONSE_STATUS_CODE = "http.response.status_code"
URL_PATH = "url.path"

# Carafe's own
CARAFE_PRINCIPAL = "carafe.principal"
CARAFE_ROUTE = "carafe.route"
CARAFE_ADAPTER_VERSION = "carafe.adapter.version"  # the engine name served, "name@version"
CARAFE_ADAPTER_NAME = "carafe.adapter.name"  # an admin change to a whole adapter (rollback, remove)
CARAFE_KEY_ID = "carafe.key.id"
CARAFE_INBOUND_TRACEPARENT = "carafe.inbound.traceparent"  # the caller's trace context, kept as a link only
CARAFE_ADMIN_VIA = "carafe.admin.via"  # "cli" for changes made with the CLI
CARAFE_TTFT_MS = "carafe.ttft_ms"
CARAFE_TOOL_CHOICE = "carafe.tool_choice"
CARAFE_TOOL_CALLS = "carafe.tool_calls"  # names of the functions the model called
CARAFE_API = "carafe.api"  # "responses" for POST /v1/responses
CARAFE_PREVIOUS_RESPONSE_ID = "carafe.previous_response_id"
CARAFE_OUTPUT_CONSTRAINT = "carafe.output_constraint"  # json_object | json_schema | regex | grammar
CARAFE_GUARD_PREFIX = "carafe.guard."
CARAFE_GUARD_BLOCKED = "carafe.guard.blocked"
CARAFE_RETRIEVAL_DOC_IDS = "carafe.retrieval.doc_ids"  # ["doc_id@version", ...]
CARAFE_RETRIEVAL_HITS = "carafe.retrieval.hits"
CARAFE_PROMPT_SHA256 = "carafe.prompt.sha256"
CARAFE_PROMPT_CONTENT = "carafe.prompt.content"
CARAFE_COMPLETION_SHA256 = "carafe.completion.sha256"
CARAFE_COMPLETION_CONTENT = "carafe.completion.content"

PROVIDER = "carafe"

# Header names never copied into spans, whatever a caller or a library does.
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "api-key"})


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def content_attributes(text: str, record_content: bool, *, kind: str = "prompt") -> dict[str, str]:
    """Attributes describing a prompt or completion: always its sha256, the text only when opted in.

    ``kind`` is ``prompt`` or ``completion``.
    """
    if kind not in ("prompt", "completion"):
        raise ValueError(f"kind must be 'prompt' or 'completion', not {kind!r}")
    attrs = {f"carafe.{kind}.sha256": sha256_hex(text)}
    if record_content:
        attrs[f"carafe.{kind}.content"] = text
    return attrs


@contextmanager
def admin_span(name: str, principal: str, **attrs: Any) -> Iterator[Span]:
    """One span per admin change, who made it and what (None-valued attributes are left out):
    the audit trail of keys, adapters and index syncs, from the admin API and the CLI alike."""
    with trace.get_tracer("carafe.admin").start_as_current_span(name) as span:
        span.set_attribute(CARAFE_PRINCIPAL, principal)
        for key, value in attrs.items():
            if value is not None:
                span.set_attribute(key, value)
        yield span

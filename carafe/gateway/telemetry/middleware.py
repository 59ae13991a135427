"""``TraceMiddleware``: the root SERVER span of every HTTP request (pure ASGI, so
streamed responses pass through untouched and the span covers the whole stream).

The trace is the audit record, so it is the server's: every request starts a new
trace with an id and a sampling decision of the gateway's own, whatever the
caller sends. An incoming W3C ``traceparent`` (or a span some outer framework
opened) is kept as a span *link* and as ``carafe.inbound.traceparent``, never as
the parent: a caller cannot fold two requests into one record, attribute its
retrieval to someone else's request, or switch its own record off with flags
``00``. The trace id goes back to the client in ``x-carafe-trace-id`` (and
``traceparent``); no request header reaches a span except that one.
"""

from __future__ import annotations

import time

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, format_span_id, format_trace_id
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from carafe.gateway.telemetry import metrics
from carafe.gateway.telemetry.attributes import (
    CARAFE_INBOUND_TRACEPARENT,
    HTTP_REQUEST_METHOD,
    HTTP_RESPONSE_STATUS_CODE,
    URL_PATH,
)

TRACE_ID_HEADER = "x-carafe-trace-id"
_ADAPTER_HEADER = b"x-carafe-adapter"
_PROPAGATOR = TraceContextTextMapPropagator()
_tracer = trace.get_tracer(__name__)


def _caller_links(scope: Scope) -> tuple[list[Link], dict[str, str]]:
    """The caller's trace context (a valid ``traceparent``, an outer framework's span) as links."""
    carrier: dict[str, str] = {}
    for name, value in scope.get("headers", ()):
        if name in (b"traceparent", b"tracestate"):
            carrier[name.decode("latin-1")] = value.decode("latin-1")
    links: list[Link] = []
    attrs: dict[str, str] = {}
    if carrier:
        remote = trace.get_current_span(_PROPAGATOR.extract(carrier)).get_span_context()
        if remote.is_valid:
            links.append(Link(remote, {"carafe.link": "caller"}))
            flags = "01" if remote.trace_flags.sampled else "00"
            attrs[CARAFE_INBOUND_TRACEPARENT] = (
                f"00-{format_trace_id(remote.trace_id)}-{format_span_id(remote.span_id)}-{flags}"
            )
    outer = trace.get_current_span().get_span_context()
    if outer.is_valid:
        links.append(Link(outer, {"carafe.link": "outer"}))
    return links, attrs


def _trace_headers(span: trace.Span) -> list[tuple[bytes, bytes]]:
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return []
    trace_id = format_trace_id(ctx.trace_id)
    flags = "01" if ctx.trace_flags.sampled else "00"
    return [
        (TRACE_ID_HEADER.encode(), trace_id.encode()),
        (b"traceparent", f"00-{trace_id}-{format_span_id(ctx.span_id)}-{flags}".encode()),
    ]


def _route_of(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class TraceMiddleware:
    """Pure-ASGI middleware; add it outermost (``app.add_middleware(TraceMiddleware)``)."""

    def __init__(self, app: ASGIApp, *, record_metrics: bool = True) -> None:
        self.app = app
        self.record_metrics = record_metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        method = scope.get("method", "GET")
        links, inbound = _caller_links(scope)
        span = _tracer.start_span(
            method,
            context=otel_context.Context(),  # a new root: the record's identity and sampling are the server's
            kind=SpanKind.SERVER,
            attributes={HTTP_REQUEST_METHOD: method, URL_PATH: scope.get("path", ""), **inbound},
            links=links,
        )
        extra = _trace_headers(span)
        status = 500
        adapter: str | None = None

        async def traced_send(message: Message) -> None:
            nonlocal status, adapter
            if message["type"] == "http.response.start":
                status = int(message["status"])
                span.set_attribute(HTTP_RESPONSE_STATUS_CODE, status)
                headers = list(message.get("headers", ()))
                for name, value in headers:
                    if name == _ADAPTER_HEADER:
                        adapter = value.decode("latin-1")
                message = {**message, "headers": headers + extra}
            await send(message)

        with trace.use_span(span, end_on_exit=True, record_exception=True, set_status_on_exception=True):
            try:
                await self.app(scope, receive, traced_send)
            finally:
                route = _route_of(scope)
                if route != "unmatched":
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
                span.set_attribute(HTTP_RESPONSE_STATUS_CODE, status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))
                if self.record_metrics:
                    metrics.record_request(route, adapter, status, time.perf_counter() - t0)

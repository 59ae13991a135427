"""``TraceMiddleware``: the root SERVER span of every HTTP request (pure ASGI, so
streamed responses pass through untouched and the span covers the whole stream).

It honours an incoming W3C ``traceparent``, returns the trace id to the client
in ``x-carafe-trace-id`` (and ``traceparent``), records request metrics, and
records no header at all — the Authorization header never reaches a span.
When FastAPI's native telemetry already opened the SERVER span, that span is
used instead of a second one.
"""

from __future__ import annotations

import time

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, format_span_id, format_trace_id
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from carafe.gateway.telemetry import metrics
from carafe.gateway.telemetry.attributes import HTTP_REQUEST_METHOD, HTTP_RESPONSE_STATUS_CODE, URL_PATH

TRACE_ID_HEADER = "x-carafe-trace-id"
_ADAPTER_HEADER = b"x-carafe-adapter"
_PROPAGATOR = TraceContextTextMapPropagator()
_tracer = trace.get_tracer(__name__)


def _incoming_context(scope: Scope) -> otel_context.Context | None:
    carrier: dict[str, str] = {}
    for name, value in scope.get("headers", ()):
        if name in (b"traceparent", b"tracestate"):
            carrier[name.decode("latin-1")] = value.decode("latin-1")
    return _PROPAGATOR.extract(carrier) if carrier else None


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
        outer = trace.get_current_span()
        # FastAPI >= 0.160 opens the SERVER span itself once an SDK is installed
        # (honouring traceparent); then this middleware adds to that span.
        owns_span = getattr(outer, "kind", None) is not SpanKind.SERVER or not outer.is_recording()
        if owns_span:
            span = _tracer.start_span(
                method,
                context=_incoming_context(scope),
                kind=SpanKind.SERVER,
                attributes={HTTP_REQUEST_METHOD: method, URL_PATH: scope.get("path", "")},
            )
        else:
            span = outer
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

        if not owns_span:
            try:
                await self.app(scope, receive, traced_send)
            finally:
                if self.record_metrics:
                    metrics.record_request(_route_of(scope), adapter, status, time.perf_counter() - t0)
            return
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

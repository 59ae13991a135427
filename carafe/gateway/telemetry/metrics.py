"""Prometheus metrics of a gateway process, in their own registry.

The gateway calls the small ``record_*`` / ``observe_*`` helpers; they never
raise, so a metrics bug cannot fail a request.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from carafe.adapters.engine import Engine

log = logging.getLogger("carafe.telemetry")

REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
_RETRIEVAL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

REQUESTS = Counter(
    "carafe_requests_total",
    "Requests served, by route, adapter and HTTP status",
    ["route", "adapter", "status"],
    registry=REGISTRY,
)
REQUEST_DURATION = Histogram(
    "carafe_request_duration_seconds",
    "Request wall time, by route and adapter",
    ["route", "adapter"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
TTFT = Histogram(
    "carafe_time_to_first_token_seconds",
    "Time from engine call to first token, by adapter",
    ["adapter"],
    buckets=_TTFT_BUCKETS,
    registry=REGISTRY,
)
TOKENS = Counter(
    "carafe_tokens_total",
    "Tokens in (prompt) and out (completion), by adapter",
    ["direction", "adapter"],
    registry=REGISTRY,
)
GUARD_ACTIONS = Counter(
    "carafe_guard_actions_total", "Guardrail decisions, by check and action", ["check", "action"], registry=REGISTRY
)
RETRIEVAL_DURATION = Histogram(
    "carafe_retrieval_duration_seconds",
    "Permission-filtered retrieval latency",
    buckets=_RETRIEVAL_BUCKETS,
    registry=REGISTRY,
)
RETRIEVAL_HITS = Counter("carafe_retrieval_hits_total", "Passages returned by retrieval", registry=REGISTRY)
ADAPTERS_RESIDENT = Gauge("carafe_adapters_resident", "LoRA adapters resident in the engine", registry=REGISTRY)
ENGINE_QUEUE_DEPTH = Gauge("carafe_engine_queue_depth", "Requests waiting for the engine", registry=REGISTRY)
INDEX_SYNC = Counter(
    "carafe_index_sync_total", "Index sync runs, by result (ok, failed, partial)", ["result"], registry=REGISTRY
)
SPANS_DROPPED = Counter(
    "carafe_telemetry_spans_dropped_total",
    "Spans lost because the trace destination failed or the queue was full",
    ["exporter", "reason"],
    registry=REGISTRY,
)


def _safe(fn: Any) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except Exception:  # a metrics bug must never fail a request
            log.debug("metric %s failed", fn.__name__, exc_info=True)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def _adapter(adapter: str | None) -> str:
    return adapter or "base"


@_safe
def record_request(route: str, adapter: str | None, status: int | str, duration_s: float) -> None:
    """One finished request: its route (e.g. ``/v1/chat/completions``), adapter, HTTP status, wall time."""
    REQUESTS.labels(route=route, adapter=_adapter(adapter), status=str(status)).inc()
    REQUEST_DURATION.labels(route=route, adapter=_adapter(adapter)).observe(max(0.0, duration_s))


@_safe
def record_tokens(adapter: str | None, *, input_tokens: int = 0, output_tokens: int = 0) -> None:
    """Prompt tokens in, completion tokens out."""
    if input_tokens:
        TOKENS.labels(direction="in", adapter=_adapter(adapter)).inc(input_tokens)
    if output_tokens:
        TOKENS.labels(direction="out", adapter=_adapter(adapter)).inc(output_tokens)


@_safe
def observe_ttft(adapter: str | None, seconds: float) -> None:
    TTFT.labels(adapter=_adapter(adapter)).observe(max(0.0, seconds))


@_safe
def record_guard(check: str, action: str) -> None:
    """A guardrail decision, e.g. ``record_guard("pii", "redact")``."""
    GUARD_ACTIONS.labels(check=check, action=action).inc()


@_safe
def record_retrieval(duration_s: float, hits: int) -> None:
    RETRIEVAL_DURATION.observe(max(0.0, duration_s))
    RETRIEVAL_HITS.inc(max(0, hits))


@_safe
def record_index_sync(result: str) -> None:
    INDEX_SYNC.labels(result=result).inc()


def record_spans_dropped(count: int, *, exporter: str, reason: str) -> None:
    if count > 0:
        SPANS_DROPPED.labels(exporter=exporter, reason=reason).inc(count)


def spans_dropped() -> float:
    """Total spans lost so far (all exporters and reasons)."""
    return sum(s.value for m in SPANS_DROPPED.collect() for s in m.samples if s.name.endswith("_total"))


def on_generation(adapter: str, *, prompt_tokens: int, completion_tokens: int, ttft_s: float | None) -> None:
    """One finished generation on ``adapter`` (the served model): tokens and time to first token."""
    record_tokens(adapter, input_tokens=prompt_tokens, output_tokens=completion_tokens)
    if ttft_s is not None:
        observe_ttft(adapter, ttft_s)


def watch_engine(engine: Engine) -> None:
    """Read resident adapters and queue depth from ``engine`` at each scrape."""

    def resident() -> float:
        with contextlib.suppress(Exception):
            return float(len(engine.adapters()))
        return 0.0

    def queue_depth() -> float:
        with contextlib.suppress(Exception):
            return float(engine.stats().get("queue_depth", 0))
        return 0.0

    ADAPTERS_RESIDENT.set_function(resident)
    ENGINE_QUEUE_DEPTH.set_function(queue_depth)


def render() -> tuple[bytes, str]:
    """The exposition text and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE

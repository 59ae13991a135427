"""Configuring the OpenTelemetry SDK: called once by a process entry point only.

Libraries use ``trace.get_tracer(__name__)``; this module installs the global
``TracerProvider`` behind those tracers. The OTel API lets a process set its
provider only once, so the provider is installed on the first call and later
calls (tests, a restarted app in the same process) swap the span processor and
sampler behind it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, SynchronousMultiSpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, Sampler, SamplingResult, TraceIdRatioBased
from opentelemetry.trace import Link, SpanKind
from opentelemetry.util.types import Attributes

from carafe import __version__
from carafe.gateway.telemetry.config import TelemetryConfig
from carafe.gateway.telemetry.exporters import CountingBatchSpanProcessor, CountingExporter, JsonLinesSpanExporter

log = logging.getLogger("carafe.telemetry")


class _ActiveProcessor(SpanProcessor):
    """Forwards to the processor of the active ``Telemetry`` (none: spans are discarded)."""

    def __init__(self) -> None:
        self.current: SpanProcessor | None = None

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        current = self.current
        if current is not None:
            current.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        current = self.current
        if current is not None:
            current.on_end(span)

    def shutdown(self) -> None:
        if self.current is not None:
            self.current.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.current.force_flush(timeout_millis) if self.current is not None else True


class _ActiveSampler(Sampler):
    def __init__(self) -> None:
        self.current: Sampler = ALWAYS_OFF

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        return self.current.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"Carafe({self.current.get_description()})"


def _server_sampler(ratio: float) -> Sampler:
    """The gateway's own decision: a child follows its local parent, a remote parent's flags never count."""
    root = TraceIdRatioBased(ratio)
    return ParentBased(root, remote_parent_sampled=root, remote_parent_not_sampled=root)


_LOCK = threading.Lock()
_PROVIDER: TracerProvider | None = None
_PROCESSOR = _ActiveProcessor()
_SAMPLER = _ActiveSampler()


def _provider(service_name: str) -> TracerProvider:
    global _PROVIDER
    if _PROVIDER is None:
        resource = Resource.create({"service.name": service_name, "service.version": __version__})
        provider = TracerProvider(resource=resource, sampler=_SAMPLER)
        provider.add_span_processor(_PROCESSOR)
        trace.set_tracer_provider(provider)
        if trace.get_tracer_provider() is not provider:
            log.warning("a TracerProvider was already installed by someone else; Carafe's traces go nowhere")
        _PROVIDER = provider
    elif _PROVIDER.resource.attributes.get("service.name") != service_name:
        # a second entry point in one process (tests, `carafe demo`): name its spans after it
        update = getattr(_PROVIDER, "_update_resource", None)
        if update is not None:
            update(Resource({"service.name": service_name}))
    return _PROVIDER


@dataclass
class Telemetry:
    """What ``setup_telemetry`` installed: call ``shutdown()`` when the process ends."""

    config: TelemetryConfig
    provider: TracerProvider
    processor: SpanProcessor | None
    trace_file: Path | None = None
    memory: InMemorySpanExporter | None = None
    _closed: bool = field(default=False, repr=False)

    def force_flush(self, timeout_millis: int = 5000) -> bool:
        """Export buffered spans now (tests and `carafe audit` right after a request)."""
        return self.processor.force_flush(timeout_millis) if self.processor is not None else True

    def shutdown(self) -> None:
        """Flush and stop exporting; spans started afterwards are discarded."""
        if self._closed:
            return
        self._closed = True
        with _LOCK:
            if _PROCESSOR.current is self.processor:
                _PROCESSOR.current = None
                _SAMPLER.current = ALWAYS_OFF
        if self.processor is not None:
            try:
                self.processor.shutdown()
            except Exception:
                log.warning("trace exporter did not shut down cleanly", exc_info=True)


def _build_exporter(config: TelemetryConfig, data_dir: Path) -> tuple[SpanExporter, Path | None]:
    if config.exporter == "file":
        path = config.file_path or Path(data_dir) / "traces" / "traces.jsonl"
        return JsonLinesSpanExporter(path, max_bytes=config.file_max_bytes, backups=config.file_backups), path
    headers = dict(config.otlp_headers) or None
    if config.otlp_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        endpoint = config.otlp_endpoint
        insecure = endpoint.startswith("http://")
        return GrpcExporter(endpoint=endpoint, insecure=insecure, headers=headers, timeout=config.otlp_timeout_s), None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    endpoint = config.otlp_endpoint
    if not endpoint.rstrip("/").endswith("/v1/traces"):
        endpoint = endpoint.rstrip("/") + "/v1/traces"
    return HttpExporter(endpoint=endpoint, headers=headers, timeout=config.otlp_timeout_s), None


def setup_telemetry(
    config: TelemetryConfig,
    *,
    data_dir: Path,
    service_name: str | None = None,
    exporter: SpanExporter | None = None,
    in_memory: bool = False,
) -> Telemetry:
    """Install the SDK for this process, exporting as ``config`` says.

    ``exporter`` replaces the configured one (tests, benchmarks); ``in_memory``
    keeps spans in ``Telemetry.memory`` instead. ``exporter: none`` still gives
    every request a trace id (returned to clients) but exports nothing.
    """
    name = service_name or config.service_name
    trace_file: Path | None = None
    memory: InMemorySpanExporter | None = None
    label: str = config.exporter
    if in_memory:
        memory = InMemorySpanExporter()
        exporter, label = memory, "memory"
    elif exporter is not None:
        label = type(exporter).__name__
    elif config.exporter != "none":
        exporter, trace_file = _build_exporter(config, Path(data_dir))
    exporters: list[tuple[SpanExporter, str]] = [(exporter, label)] if exporter is not None else []
    if config.exporter == "otlp" and config.audit_file and not in_memory:
        file_exporter, trace_file = _build_exporter(config.model_copy(update={"exporter": "file"}), Path(data_dir))
        exporters.append((file_exporter, "file"))
    processors = [
        CountingBatchSpanProcessor(
            CountingExporter(exp, name),
            name=name,
            max_queue_size=config.max_queue_size,
            max_export_batch_size=min(config.export_batch_size, config.max_queue_size),
            schedule_delay_millis=config.schedule_delay_ms,
        )
        for exp, name in exporters
    ]
    processor: SpanProcessor | None = processors[0] if len(processors) == 1 else None
    if len(processors) > 1:
        processor = SynchronousMultiSpanProcessor()
        for p in processors:
            processor.add_span_processor(p)
    with _LOCK:
        provider = _provider(name)
        previous = _PROCESSOR.current
        _PROCESSOR.current = processor
        _SAMPLER.current = _server_sampler(config.sampling_ratio)
    if previous is not None and previous is not processor:
        previous.shutdown()
    log.info("traces: %s%s", "+".join(n for _, n in exporters) or "none", f" (file {trace_file})" if trace_file else "")
    return Telemetry(config=config, provider=provider, processor=processor, trace_file=trace_file, memory=memory)

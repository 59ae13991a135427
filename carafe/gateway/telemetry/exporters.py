"""Span exporters that never block or fail a request.

- ``JsonLinesSpanExporter``: one JSON object per span in a size-rotated file
  (``traces.jsonl``, ``traces.jsonl.1`` ... ``.N``), the embedded default that
  ``carafe audit`` reads.
- ``CountingExporter``: wraps any exporter (OTLP included) and counts the spans a
  failed export lost in ``carafe_telemetry_spans_dropped_total``.
- ``CountingBatchSpanProcessor``: the SDK's batch processor, also counting the
  spans it drops when its queue is full (destination slow or down).

Exports run on the batch processor's worker thread, never on a request's path.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import format_span_id, format_trace_id

from carafe.gateway.telemetry.attributes import SECRET_HEADERS
from carafe.gateway.telemetry.metrics import record_spans_dropped

log = logging.getLogger("carafe.telemetry")

REDACTED = "[redacted]"
_SECRET_QUERY_KEYS = frozenset({"key", "token", "access_token", "auth", "sig", "signature"})
_SECRET_KEY_PARTS = ("authorization", "api_key", "apikey", "api-key", "password", "secret", "bearer")


@functools.lru_cache(maxsize=4096)  # attribute names repeat from span to span
def _is_secret_key(key: str) -> bool:
    lowered = key.lower()
    return lowered.rsplit(".", 1)[-1] in SECRET_HEADERS or any(p in lowered for p in _SECRET_KEY_PARTS)


def _scrub_query(query: str) -> str:
    pairs = parse_qsl(query, keep_blank_values=True)
    return urlencode([(k, REDACTED if _is_secret_key(k) or k.lower() in _SECRET_QUERY_KEYS else v) for k, v in pairs])


def _attrs(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (attributes or {}).items():
        if _is_secret_key(key):
            out[key] = REDACTED  # a safety net: code should never set these at all
        elif key == "url.query" and isinstance(value, str):
            out[key] = _scrub_query(value)  # a client may put its key in the query string
        elif isinstance(value, tuple | list):
            out[key] = list(value)
        else:
            out[key] = value
    return out


def _iso(ns: int | None) -> str | None:
    if ns is None:
        return None
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def span_to_dict(span: ReadableSpan) -> dict[str, Any]:
    """The JSON-lines record of one finished span."""
    ctx = span.context
    parent = span.parent
    start, end = span.start_time, span.end_time
    return {
        "trace_id": format_trace_id(ctx.trace_id) if ctx else None,
        "span_id": format_span_id(ctx.span_id) if ctx else None,
        "parent_id": format_span_id(parent.span_id) if parent is not None else None,
        "name": span.name,
        "kind": span.kind.name,
        "start": _iso(start),
        "end": _iso(end),
        "duration_ms": round((end - start) / 1e6, 3) if start is not None and end is not None else None,
        "status": {"code": span.status.status_code.name, "description": span.status.description},
        "attributes": _attrs(span.attributes),
        "events": [
            {"name": e.name, "time": _iso(e.timestamp), "attributes": _attrs(e.attributes)} for e in span.events
        ],
        "links": [
            {"trace_id": format_trace_id(k.context.trace_id), "span_id": format_span_id(k.context.span_id)}
            for k in span.links
        ],
        "resource": _attrs(span.resource.attributes) if span.resource is not None else {},
        "scope": span.instrumentation_scope.name if span.instrumentation_scope is not None else None,
    }


class JsonLinesSpanExporter(SpanExporter):
    """Appends spans as JSON lines to ``path``, rotating at ``max_bytes`` and keeping ``backups`` old files.

    A write that fails (disk full, read-only or vanished folder) returns FAILURE;
    the next batch tries again, re-opening the file.
    """

    def __init__(self, path: Path, *, max_bytes: int = 50 * 1024 * 1024, backups: int = 10) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()
        self._file: Any = None
        self._closed = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._closed:
            return SpanExportResult.FAILURE
        try:
            lines = [(json.dumps(span_to_dict(s), default=str, ensure_ascii=False) + "\n").encode() for s in spans]
            with self._lock:
                handle = self._open()
                size = handle.tell()
                for line in lines:
                    if size and size + len(line) > self.max_bytes:
                        handle.flush()
                        handle = self._rotate()
                        size = 0
                    handle.write(line)
                    size += len(line)
                handle.flush()
            return SpanExportResult.SUCCESS
        except (OSError, ValueError) as exc:
            with self._lock:
                self._close_file()
            log.warning("trace file %s not writable (%s); %d spans dropped", self.path, exc, len(spans))
            return SpanExportResult.FAILURE

    def _open(self) -> Any:
        """The trace file, created for this user only (0600 in a 0700 folder): it names users and documents."""
        if self._file is None:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.fchmod(fd, 0o600)  # a file an older version left 0644
            self._file = os.fdopen(fd, "ab")  # kept open across batches
        return self._file

    def _rotate(self) -> Any:
        self._close_file()
        if self.backups <= 0:
            self.path.unlink(missing_ok=True)
        else:
            for i in range(self.backups - 1, 0, -1):
                src = self.path.with_name(f"{self.path.name}.{i}")
                if src.exists():
                    os.replace(src, self.path.with_name(f"{self.path.name}.{i + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        return self._open()

    def _close_file(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            self._close_file()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class CountingExporter(SpanExporter):
    """Counts the spans ``inner`` fails to export (FAILURE or an exception); never raises."""

    def __init__(self, inner: SpanExporter, name: str) -> None:
        self.inner = inner
        self.name = name

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception as exc:  # a broken destination must not kill the worker thread
            log.warning("%s trace export failed (%s); %d spans dropped", self.name, exc, len(spans))
            result = SpanExportResult.FAILURE
        if result is not SpanExportResult.SUCCESS:
            record_spans_dropped(len(spans), exporter=self.name, reason="export_failed")
        return result

    def shutdown(self) -> None:
        try:
            self.inner.shutdown()
        except Exception:
            log.debug("exporter shutdown failed", exc_info=True)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        try:
            return self.inner.force_flush(timeout_millis)
        except Exception:
            return False


class CountingBatchSpanProcessor(BatchSpanProcessor):
    """``BatchSpanProcessor`` that also counts spans dropped because its queue is full."""

    def __init__(self, exporter: SpanExporter, *, name: str, max_queue_size: int, **kwargs: Any) -> None:
        super().__init__(exporter, max_queue_size=max_queue_size, **kwargs)
        self._name = name
        self._max_queue = max_queue_size
        # The SDK keeps its queue private; without it, queue-full drops are only logged.
        self._queue = getattr(getattr(self, "_batch_processor", None), "_queue", None)

    def on_end(self, span: ReadableSpan) -> None:
        if (
            self._queue is not None
            and span.context is not None
            and span.context.trace_flags.sampled
            and len(self._queue) >= self._max_queue
        ):
            record_spans_dropped(1, exporter=self._name, reason="queue_full")
        super().on_end(span)

"""Traces, metrics and the audit trail.

- ``setup_telemetry(config, data_dir=...) -> Telemetry``: the process entry point
  installs the OpenTelemetry SDK (everything else uses ``trace.get_tracer``).
- ``TraceMiddleware``: the request's SERVER span, trace id response header, request metrics.
- ``metrics``: Prometheus metrics and the ``record_*`` helpers; ``routes.router`` serves ``/metrics``.
- ``attributes``: span attribute names and ``content_attributes(text, record_content)``.
- ``audit``: querying the JSON-lines trace files (``carafe audit``).

Names are loaded on first use, so reading the config does not import the SDK.
"""

from __future__ import annotations

from carafe._lazy import lazy_getattr
from carafe.gateway.telemetry.config import TelemetryConfig

_LAZY = {
    "setup_telemetry": "carafe.gateway.telemetry.setup",
    "Telemetry": "carafe.gateway.telemetry.setup",
    "TraceMiddleware": "carafe.gateway.telemetry.middleware",
    "TRACE_ID_HEADER": "carafe.gateway.telemetry.middleware",
    "content_attributes": "carafe.gateway.telemetry.attributes",
}

__all__ = ["TelemetryConfig", *_LAZY]


__getattr__ = lazy_getattr(__name__, _LAZY)

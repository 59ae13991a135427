"""Config of traces and metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class TelemetryConfig(BaseModel):
    """Where spans go, how many are kept, and whether `/metrics` is served."""

    model_config = ConfigDict(extra="forbid")

    exporter: Literal["file", "otlp", "none"] = Field(
        "file",
        description="`file`: rotating JSON lines queryable by `carafe audit`; `otlp`: to an OpenTelemetry Collector; "
        "`none`: no traces",
    )
    file_path: Path | None = Field(
        None, description="Trace file of the `file` exporter; default <data_dir>/traces/traces.jsonl"
    )
    file_max_bytes: int = Field(50 * 1024 * 1024, ge=1024, description="Size at which the trace file is rotated")
    file_backups: int = Field(
        10, ge=0, description="Rotated trace files kept (traces.jsonl.1 ... .N); older ones are deleted"
    )
    otlp_endpoint: str = Field(
        "http://127.0.0.1:4317",
        description="OTLP endpoint of the collector (gRPC: host:4317; HTTP: http://host:4318/v1/traces)",
    )
    audit_file: bool = Field(
        False,
        description="With exporter `otlp`: also write the JSON-lines file that `carafe audit` reads (one file per "
        "replica)",
    )
    otlp_protocol: Literal["grpc", "http"] = Field("grpc", description="OTLP transport")
    otlp_headers: dict[str, str] = Field(
        default_factory=dict, description="Extra headers sent to the collector (e.g. auth)"
    )
    otlp_timeout_s: float = Field(5.0, gt=0, description="Timeout of one OTLP export")
    service_name: str = Field("carafe-gateway", description="`service.name` resource attribute of this process")
    record_content: bool = Field(
        False,
        description="Record prompt and completion text in spans (default: only their sha256); routes may opt in on "
        "their own",
    )
    sampling_ratio: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="Share of requests recorded, decided by the gateway alone (an incoming traceparent is kept as a "
        "link and never decides)",
    )
    metrics: bool = Field(
        True,
        description="Serve Prometheus metrics at GET /metrics, to `Authorization: Bearer` with `metrics_token` or an "
        "admin API key (its labels name adapters and versions)",
    )
    metrics_token: SecretStr | None = Field(
        None, description="Bearer token a Prometheus scraper sends to GET /metrics (an admin API key works too)"
    )
    max_queue_size: int = Field(
        4096, ge=16, description="Spans buffered before export; beyond, spans are dropped and counted"
    )
    export_batch_size: int = Field(512, ge=1, description="Spans per export batch")
    schedule_delay_ms: int = Field(1000, ge=1, description="Longest wait before a batch is exported")

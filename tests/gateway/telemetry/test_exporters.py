"""The file exporter: its record format, rotation, and losses counted when the destination fails."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import httpx
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from carafe.gateway.telemetry import audit, metrics
from carafe.gateway.telemetry.config import TelemetryConfig
from carafe.gateway.telemetry.setup import setup_telemetry
from tests.gateway.telemetry.conftest import build_app, read_trace_file
from tests.servers import free_port

tracer = trace.get_tracer("tests.telemetry")


def test_span_record_has_the_audit_fields(telemetry) -> None:
    with tracer.start_as_current_span("outer") as outer:
        outer.set_attribute("carafe.retrieval.doc_ids", ["policies:hr/leave.md@3"])
        with tracer.start_as_current_span("inner") as inner:
            inner.add_event("carafe.guard.pii", {"carafe.guard.pii.action": "redact"})
            inner.set_attribute("http.request.header.authorization", "Bearer sk-secret")
            inner.set_attribute("url.query", "api_key=sk-secret&page=2")
    spans = {s["name"]: s for s in read_trace_file(telemetry)}
    o, i = spans["outer"], spans["inner"]
    assert set(o) >= {
        "trace_id",
        "span_id",
        "parent_id",
        "name",
        "start",
        "end",
        "duration_ms",
        "status",
        "attributes",
        "events",
        "resource",
    }
    assert len(o["trace_id"]) == 32 and len(o["span_id"]) == 16
    assert o["parent_id"] is None and i["parent_id"] == o["span_id"] and i["trace_id"] == o["trace_id"]
    assert o["attributes"]["carafe.retrieval.doc_ids"] == ["policies:hr/leave.md@3"]
    assert o["start"].endswith("Z") and o["start"] <= i["start"] <= i["end"] <= o["end"]
    assert o["duration_ms"] >= i["duration_ms"] >= 0
    assert i["events"][0]["attributes"] == {"carafe.guard.pii.action": "redact"}
    # a safety net for code that records a secret by mistake
    assert i["attributes"]["http.request.header.authorization"] == "[redacted]"
    assert "sk-secret" not in i["attributes"]["url.query"] and "page=2" in i["attributes"]["url.query"]


def test_file_rotates_keeps_n_backups_and_audit_reads_them_all(tmp_path: Path) -> None:
    cfg = TelemetryConfig(file_max_bytes=4096, file_backups=3, schedule_delay_ms=10, export_batch_size=20)
    tel = setup_telemetry(cfg, data_dir=tmp_path)
    try:
        for n in range(300):
            with tracer.start_as_current_span(f"span-{n}") as s:
                s.set_attribute("carafe.principal", f"user-{n}")
            if n % 20 == 19:
                tel.force_flush()
        tel.force_flush()
    finally:
        tel.shutdown()
    base = tmp_path / "traces" / "traces.jsonl"
    files = audit.trace_files(base)
    assert [f.name for f in files] == ["traces.jsonl.3", "traces.jsonl.2", "traces.jsonl.1", "traces.jsonl"]
    assert not (base.parent / "traces.jsonl.4").exists()
    assert all(f.stat().st_size <= 4096 for f in files)
    names = [s["name"] for s in audit.read_spans(base)]
    # the newest spans survive, in order, and the oldest were rotated away
    assert names[-1] == "span-299"
    numbers = [int(n.split("-")[1]) for n in names]
    assert numbers == sorted(numbers) and numbers[0] > 0


async def test_unwritable_destination_never_fails_a_request_and_counts_the_loss(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the trace folder should be")  # mkdir fails even as root
    cfg = TelemetryConfig(file_path=blocker / "traces" / "traces.jsonl", schedule_delay_ms=10)
    tel = setup_telemetry(cfg, data_dir=tmp_path)
    before = metrics.spans_dropped()
    try:
        async with _asgi_client() as client:
            for _ in range(5):
                r = await client.post("/v1/chat/completions", json={"docs": ["policies:a.md@1"]})
                assert r.status_code == 200 and r.json() == {"ok": True}
        tel.force_flush()
    finally:
        tel.shutdown()
    # 5 requests x (SERVER + 3 carafe spans at least) were lost, and counted
    assert metrics.spans_dropped() - before >= 20
    assert "carafe_telemetry_spans_dropped_total" in metrics.render()[0].decode()


async def test_collector_down_never_fails_a_request_and_counts_the_loss(tmp_path: Path) -> None:
    broken = _Broken()
    tel = setup_telemetry(TelemetryConfig(schedule_delay_ms=10), data_dir=tmp_path, exporter=broken)
    before = metrics.spans_dropped()
    try:
        async with _asgi_client() as client:
            async with client.stream("POST", "/v1/chat/completions", json={"stream": True}) as r:
                body = b"".join([c async for c in r.aiter_bytes()])
            assert r.status_code == 200 and body.endswith(b"data: [DONE]\n\n")
        tel.force_flush()
    finally:
        tel.shutdown()
    assert broken.calls >= 1
    assert metrics.spans_dropped() - before >= 4


def test_full_queue_drops_are_counted(tmp_path: Path) -> None:
    class Stuck(SpanExporter):
        """A destination that hangs until released."""

        def __init__(self) -> None:
            self.entered, self.release, self.received = threading.Event(), threading.Event(), 0

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            self.received += len(spans)
            self.entered.set()
            self.release.wait(10)
            return SpanExportResult.SUCCESS

    stuck = Stuck()
    cfg = TelemetryConfig(max_queue_size=16, export_batch_size=16, schedule_delay_ms=60_000)
    tel = setup_telemetry(cfg, data_dir=tmp_path, exporter=stuck)
    before = metrics.spans_dropped()
    try:
        for n in range(16):  # a full batch wakes the exporter, which then hangs
            with tracer.start_as_current_span(f"first-{n}"):
                pass
        assert stuck.entered.wait(10)
        for n in range(40):  # the queue holds 16 of these; 24 are dropped, never blocking
            with tracer.start_as_current_span(f"second-{n}"):
                pass
        assert metrics.spans_dropped() - before == 24
    finally:
        stuck.release.set()
        tel.shutdown()
    assert stuck.received == 32


class _Broken(SpanExporter):
    """A destination that is down: every export raises."""

    def __init__(self) -> None:
        self.calls = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.calls += 1
        raise ConnectionError("collector unreachable")

    def shutdown(self) -> None:
        pass


def _asgi_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app()), base_url="http://test")


async def test_real_otlp_exporter_with_collector_down_keeps_serving_and_audit_file_still_written(
    tmp_path: Path,
) -> None:
    port = free_port()  # nothing listens there
    cfg = TelemetryConfig(
        exporter="otlp",
        otlp_endpoint=f"http://127.0.0.1:{port}",
        otlp_timeout_s=0.5,
        audit_file=True,
        schedule_delay_ms=10,
    )
    tel = setup_telemetry(cfg, data_dir=tmp_path)
    before = metrics.spans_dropped()
    try:
        async with _asgi_client() as client:
            r = await client.post("/v1/chat/completions", json={"user": "erin"})
            assert r.status_code == 200
        tel.force_flush(5000)
    finally:
        tel.shutdown()
    assert metrics.spans_dropped() - before >= 4
    assert tel.trace_file is not None
    assert [r.user for r in audit.query(tel.trace_file)] == ["erin"]


async def test_in_memory_and_none_exporters(tmp_path: Path) -> None:
    tel = setup_telemetry(TelemetryConfig(), data_dir=tmp_path, in_memory=True)
    try:
        async with _asgi_client() as client:
            await client.post("/v1/chat/completions", json={"user": "frank"})
        tel.force_flush()
        assert tel.memory is not None and tel.trace_file is None
        assert any(s.attributes.get("carafe.principal") == "frank" for s in tel.memory.get_finished_spans())
    finally:
        tel.shutdown()
    tel = setup_telemetry(TelemetryConfig(exporter="none"), data_dir=tmp_path)
    try:
        async with _asgi_client() as client:
            r = await client.post("/v1/chat/completions", json={})
        assert len(r.headers["x-carafe-trace-id"]) == 32  # ids for correlation, nothing exported
    finally:
        tel.shutdown()
    assert not (tmp_path / "traces").exists()

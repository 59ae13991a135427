"""Tracing overhead of the gateway: the same minimal request path (body limits,
TraceMiddleware, a handler opening the spans the real pipeline opens) with

  off            no OpenTelemetry SDK at all (the API's no-op tracer) — the baseline
  sdk, none      SDK installed, trace ids returned, nothing exported
  file           rotating JSON-lines file (the embedded default)
  otlp grpc      OTLP/gRPC to a local collector-like sink (accepts and discards)
  otlp http      OTLP/HTTP to a local collector-like sink

each with FastAPI's native operation spans on (FastAPI() default) and, for the
file exporter, off (FastAPI(telemetry={"operation_spans": False})), all in one run.

    python bench/overhead.py [--quick] [--requests N]

Requests are driven straight through ASGI (no sockets), so the figures are the
gateway's own per-request cost. Export runs on a background thread; "cpu ms/req"
is the process's CPU time (all threads, the final flush included) per request,
the figure least disturbed when other work shares the CPU (wall-clock means and
p99 are then dominated by preemption). The OTLP sinks run in this process, so
their receiving cost is inside those rows' CPU figure (an overstatement).
Goal: tracing adds <= 0.5 ms at p50.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import resource
import statistics
import sys
import tempfile
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from opentelemetry import trace

from carafe.gateway.middleware import RequestLimits
from carafe.gateway.telemetry.attributes import content_attributes
from carafe.gateway.telemetry.config import TelemetryConfig
from carafe.gateway.telemetry.middleware import TraceMiddleware
from carafe.gateway.telemetry.setup import setup_telemetry
from tests.servers import free_port

tracer = trace.get_tracer("bench.overhead")
BODY = b'{"model": "hr-helper", "messages": [{"role": "user", "content": "How many leave days do I have?"}]}'


def build_app(*, operation_spans: bool) -> Any:
    app = FastAPI(telemetry={"operation_spans": operation_spans})

    @app.post("/v1/chat/completions")
    async def chat(body: dict[str, Any]) -> Any:
        span = trace.get_current_span()
        span.set_attribute("gen_ai.operation.name", "chat")
        span.set_attribute("carafe.principal", "alice")
        span.set_attributes(content_attributes(body["messages"][-1]["content"], False))
        with tracer.start_as_current_span("carafe.route") as s:
            s.set_attribute("gen_ai.request.model", body["model"])
            s.set_attribute("carafe.adapter.version", "hr-helper@3")
        with tracer.start_as_current_span("carafe.guard.input") as s:
            s.set_attributes({"carafe.guard.pii.action": "allow", "carafe.guard.injection.action": "allow"})
        with tracer.start_as_current_span("carafe.retrieve") as s:
            s.set_attribute("carafe.retrieval.doc_ids", ["policies:hr/leave.md@4", "policies:hr/holidays.md@2"])
        with tracer.start_as_current_span("carafe.prompt"):
            pass
        with tracer.start_as_current_span("carafe.generate.first_token") as s:
            s.set_attribute("gen_ai.usage.input_tokens", 42)
        return JSONResponse({"ok": True}, headers={"x-carafe-adapter": "hr-helper@3"})

    app.add_middleware(RequestLimits, max_body_bytes=4 * 1024 * 1024)
    app.add_middleware(TraceMiddleware)
    return app


async def one_request(app: Any) -> float:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 5000),
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/json"),
            (b"authorization", b"Bearer sk-bench"),
            (b"content-length", str(len(BODY)).encode()),
        ],
    }
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": BODY, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    status = 0

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    t0 = time.perf_counter()
    await app(scope, receive, send)
    elapsed = time.perf_counter() - t0
    assert status == 200, status
    return elapsed


async def measure(app: Any, n: int) -> tuple[list[float], float, float]:
    """Per-request latencies, requests/s, and process CPU ms per request (all threads: export included)."""
    for _ in range(min(200, n)):  # warm-up
        await one_request(app)
    gc.collect()
    lat = []
    t0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        lat.append(await one_request(app))
    return lat, n / (time.perf_counter() - t0), (time.process_time() - cpu0) * 1000 / n


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


class _HttpSink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def start_sinks() -> tuple[int, int, Any]:
    """A gRPC and an HTTP OTLP receiver that accept and discard spans."""
    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    class Sink(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request: Any, context: Any) -> Any:  # noqa: N802
            return trace_service_pb2.ExportTraceServiceResponse()

    grpc_port = free_port()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Sink(), server)
    server.add_insecure_port(f"127.0.0.1:{grpc_port}")
    server.start()
    http = ThreadingHTTPServer(("127.0.0.1", 0), _HttpSink)
    threading.Thread(target=http.serve_forever, daemon=True).start()

    def stop() -> None:
        server.stop(0)
        http.shutdown()

    return grpc_port, http.server_address[1], stop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer requests (noisier)")
    ap.add_argument("--requests", type=int, default=None, help="requests per mode")
    args = ap.parse_args()
    n = args.requests or (800 if args.quick else 4000)
    grpc_port, http_port, stop_sinks = start_sinks()
    data = Path(tempfile.mkdtemp(prefix="carafe-bench-"))
    fast = {"schedule_delay_ms": 200}
    modes: list[tuple[str, TelemetryConfig | None, bool]] = [
        ("off (no SDK)", None, True),
        ("sdk, exporter none", TelemetryConfig(exporter="none"), True),
        ("file", TelemetryConfig(exporter="file", **fast), True),
        ("file, no FastAPI op spans", TelemetryConfig(exporter="file", **fast), False),
        (
            "otlp grpc -> local sink",
            TelemetryConfig(exporter="otlp", otlp_endpoint=f"http://127.0.0.1:{grpc_port}", **fast),
            True,
        ),
        (
            "otlp http -> local sink",
            TelemetryConfig(
                exporter="otlp", otlp_protocol="http", otlp_endpoint=f"http://127.0.0.1:{http_port}", **fast
            ),
            True,
        ),
    ]
    print(
        f"Tracing overhead per request, {n} sequential requests per mode, driven through ASGI "
        f"(6 Carafe spans per request + FastAPI's own)\n"
    )
    print(
        f"{'mode':<28} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'req/s':>8} {'+p50 ms':>8} "
        f"{'cpu ms/req':>10} {'+cpu ms':>8} {'spans':>7}"
    )
    base_p50 = base_cpu = None
    for name, cfg, op_spans in modes:
        tel = setup_telemetry(cfg, data_dir=data / name.split()[0]) if cfg is not None else None
        app = build_app(operation_spans=op_spans)
        cpu0 = time.process_time()
        lat, rps, _ = asyncio.run(measure(app, n))
        exported = ""
        if tel is not None:
            tel.force_flush(30_000)  # the export work still owed counts too
        cpu = (time.process_time() - cpu0) * 1000 / (n + min(200, n))
        if tel is not None:
            if tel.trace_file is not None and tel.trace_file.exists():
                with open(tel.trace_file) as lines:
                    exported = str(sum(1 for _ in lines))
            tel.shutdown()
        ms = [x * 1000 for x in lat]
        p50 = pct(ms, 50)
        base_p50 = p50 if base_p50 is None else base_p50
        base_cpu = cpu if base_cpu is None else base_cpu
        print(
            f"{name:<28} {p50:8.3f} {pct(ms, 99):8.3f} {statistics.fmean(ms):8.3f} {rps:8.0f} "
            f"{p50 - base_p50:+8.3f} {cpu:10.3f} {cpu - base_cpu:+8.3f} {exported:>7}"
        )
    stop_sinks()
    from carafe.gateway.telemetry.metrics import spans_dropped

    print(f"\nspans dropped (all modes): {spans_dropped():.0f}")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    print("goal: tracing adds <= 0.5 ms p50 over 'off'. Other work on this machine makes these numbers noisy.")


if __name__ == "__main__":
    main()

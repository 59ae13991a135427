"""Issue 25 / issue 29 M6 and L9: a client that leaves cancels its engine work, and
the tokens the engine produced for it are still metered.

Each way of leaving, over a real socket to a real gateway: a stream dropped after
its first bytes, a stream dropped before its first byte (while a long prompt is
prefilled), a non-streaming request dropped mid-generation. Before the fix the
engine went on to ``max_tokens`` for nobody (29,468 tokens after 40 clients left)
and an aborted stream metered 0 tokens.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable

import httpx

from carafe.gateway.telemetry import audit, metrics
from carafe.gateway.telemetry.middleware import TRACE_ID_HEADER
from carafe.gateway.telemetry.setup import Telemetry
from tests.gateway.conftest import BASE_MODEL, Gateway
from tests.gateway.telemetry.conftest import read_trace_file

MAX_TOKENS = 1500  # far more than any run here lets the engine make before the client leaves


def engine_stats(gw: Gateway) -> dict[str, int]:
    return gw.state.engine.stats()


def output_tokens_metered(gw: Gateway) -> float:
    """``carafe_tokens_total{direction="out"}`` for the base model (one registry per process)."""
    value = metrics.REGISTRY.get_sample_value("carafe_tokens_total", {"direction": "out", "adapter": BASE_MODEL})
    return value or 0.0


def eventually(check: Callable[[], bool], what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def idle(gw: Gateway) -> bool:
    s = engine_stats(gw)
    return s["active_rows"] == 0 and s["queue_depth"] == 0 and gw.state.slots.in_flight() == 0


def raw_request(gw: Gateway, body: dict, *, path: str = "/v1/chat/completions") -> socket.socket:
    data = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {gw.user_key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", gw.server.port))
    sock.sendall(head + data)
    return sock


def chat(content: str, **extra: object) -> dict:
    return {
        "model": BASE_MODEL,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": MAX_TOKENS,
        "ignore_eos": True,
        "temperature": 0,
        **extra,
    }


def test_stream_dropped_after_first_bytes_is_cancelled_and_metered(gateway: Gateway, telemetry: Telemetry) -> None:
    eventually(lambda: idle(gateway), "the engine is idle")
    before_tokens, before = output_tokens_metered(gateway), engine_stats(gateway)
    with httpx.Client(timeout=60) as client:
        request = client.build_request(
            "POST",
            f"{gateway.url}/v1/chat/completions",
            json=chat("Tell me a long story.", stream=True),
            headers={"Authorization": f"Bearer {gateway.user_key}"},
        )
        response = client.send(request, stream=True)
        trace_id = response.headers[TRACE_ID_HEADER]
        lines = response.iter_lines()
        while "content" not in next(lines):
            pass
        response.close()
    eventually(lambda: idle(gateway), "the stream's engine row is freed")
    after = engine_stats(gateway)
    produced = after["tokens_generated"] - before["tokens_generated"]
    assert 0 < produced < MAX_TOKENS
    assert after["requests_cancelled"] > before["requests_cancelled"]
    eventually(lambda: output_tokens_metered(gateway) > before_tokens, "the produced tokens are metered")
    read_trace_file(telemetry)
    rec = next(r for r in audit.query(telemetry.trace_file) if r.trace_id == trace_id)
    assert rec.output_tokens is not None and rec.output_tokens > 0


def test_stream_dropped_before_its_first_byte_is_cancelled(gateway: Gateway, telemetry: Telemetry) -> None:
    eventually(lambda: idle(gateway), "the engine is idle")
    before = engine_stats(gateway)
    long_prompt = "Summarise the following notes. " + "The quarterly report lists many figures. " * 220
    room = gateway.state.engine.max_model_len - gateway.state.engine.count_tokens(long_prompt) - 64
    assert room > 100
    sock = raw_request(gateway, chat(long_prompt, stream=True, max_tokens=room))
    eventually(lambda: gateway.state.slots.in_flight() == 1, "the request is admitted")
    sock.close()  # while the long prompt is still being prefilled: no byte has been sent yet
    eventually(lambda: idle(gateway), "the request's engine work is dropped")
    produced = engine_stats(gateway)["tokens_generated"] - before["tokens_generated"]
    assert produced < room // 2
    roots = [s for s in read_trace_file(telemetry) if s["kind"] == "SERVER"]
    assert [s["attributes"]["http.response.status_code"] for s in roots] == [499]  # a departure, not a fault


def test_non_streaming_request_dropped_mid_generation_is_cancelled_and_metered(
    gateway: Gateway, telemetry: Telemetry
) -> None:
    eventually(lambda: idle(gateway), "the engine is idle")
    before_tokens, before = output_tokens_metered(gateway), engine_stats(gateway)
    sock = raw_request(gateway, chat("Count slowly to ten thousand."))
    eventually(lambda: engine_stats(gateway)["tokens_generated"] > before["tokens_generated"] + 5, "generation started")
    sock.close()
    eventually(lambda: idle(gateway), "the engine row is freed")
    after = engine_stats(gateway)
    produced = after["tokens_generated"] - before["tokens_generated"]
    assert 5 < produced < MAX_TOKENS
    assert after["requests_cancelled"] > before["requests_cancelled"]
    eventually(lambda: output_tokens_metered(gateway) >= before_tokens + 5, "the produced tokens are metered")
    roots = [s for s in read_trace_file(telemetry) if s["kind"] == "SERVER"]
    assert [s["attributes"]["http.response.status_code"] for s in roots] == [499]
    assert roots[0]["attributes"]["gen_ai.usage.output_tokens"] >= 5

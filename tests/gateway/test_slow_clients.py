"""Issue 29 M7: slow or incomplete requests are timed out by the server `carafe serve` runs.

The attack as shown: unauthenticated connections that send their headers a byte at a
time (every byte reset uvicorn's only timer) until the process ran out of file
descriptors. Over raw sockets against uvicorn configured by ``uvicorn_config``: such
connections, and a stalled body, are closed after the timeout while a normal client
is served meanwhile; connections beyond the cap are closed at once.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from carafe.gateway.config import ServerConfig
from carafe.gateway.server import uvicorn_config
from tests.servers import free_port

SLOW = "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer x\r\nX-Pad: " + "a" * 200


def tiny_app() -> FastAPI:
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/echo")
    async def echo(body: dict) -> dict:
        return body

    return app


@pytest.fixture
def served(request: pytest.FixtureRequest) -> Iterator[int]:
    limits = ServerConfig(header_timeout_s=0.5, body_timeout_s=0.5, **getattr(request, "param", {}))
    port = free_port()
    server = uvicorn.Server(uvicorn_config(tiny_app(), limits, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closed ``sock`` (EOF or reset), waiting briefly for it."""
    sock.settimeout(0.05)
    try:
        return sock.recv(4096) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def drip(socks: list[socket.socket], text: str, until: float) -> list[bool]:
    """Send ``text`` one byte at a time on every socket until each is closed or ``until``."""
    closed = [False] * len(socks)
    for ch in text.encode():
        if all(closed) or time.monotonic() > until:
            break
        for i, s in enumerate(socks):
            if closed[i]:
                continue
            try:
                s.send(bytes([ch]))
            except OSError:
                closed[i] = True
                continue
            closed[i] = closed_by_server(s)
    return closed


def test_headers_sent_byte_by_byte_are_closed_while_normal_clients_are_served(served: int) -> None:
    socks = [socket.create_connection(("127.0.0.1", served)) for _ in range(20)]
    try:
        assert httpx.get(f"http://127.0.0.1:{served}/healthz").status_code == 200  # served meanwhile
        closed = drip(socks, SLOW, until=time.monotonic() + 30)
        assert all(closed), f"{closed.count(False)} slow-header connections still open"
        assert httpx.post(f"http://127.0.0.1:{served}/echo", json={"a": 1}).json() == {"a": 1}
    finally:
        for s in socks:
            s.close()


def test_a_stalled_body_is_closed(served: int) -> None:
    sock = socket.create_connection(("127.0.0.1", served))
    try:
        sock.sendall(
            b'POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"a":'
        )
        deadline = time.monotonic() + 30
        while not closed_by_server(sock):
            assert time.monotonic() < deadline, "the stalled body was never timed out"
    finally:
        sock.close()


def test_idle_keep_alive_then_slow_next_request_is_closed(served: int) -> None:
    sock = socket.create_connection(("127.0.0.1", served))
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(10)
        assert b"200 OK" in sock.recv(4096)
        assert drip([sock], SLOW, until=time.monotonic() + 30) == [True]
    finally:
        sock.close()


@pytest.mark.parametrize("served", [{"max_connections": 5}], indirect=True)
def test_connections_over_the_cap_are_closed_at_once(served: int) -> None:
    socks = [socket.create_connection(("127.0.0.1", served)) for _ in range(8)]
    try:
        deadline = time.monotonic() + 30
        while sum(closed_by_server(s) for s in socks) < 3:
            assert time.monotonic() < deadline, "connections over the cap were kept open"
    finally:
        for s in socks:
            s.close()


def test_carafe_serve_runs_uvicorn_with_the_timeouts(tmp_path, monkeypatch) -> None:
    from carafe.cli.serve import run_server
    from carafe.config import load_config
    from carafe.gateway.server import TimedHttpProtocol

    seen: list[uvicorn.Config] = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: seen.append(self.config))
    cfg = load_config(None, data_dir=tmp_path, server={"header_timeout_s": 3, "max_connections": 77})
    run_server(cfg, host="127.0.0.1", port=free_port(), log_level="warning")
    (config,) = seen
    assert issubclass(config.http, TimedHttpProtocol)
    assert config.http.header_timeout_s == 3 and config.http.max_connections == 77
    assert config.limit_concurrency == 77

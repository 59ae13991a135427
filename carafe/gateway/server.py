"""uvicorn for the gateway: read timeouts for headers and bodies, and a cap on open connections.

Why: uvicorn times out only *idle* keep-alive connections, and every byte that
arrives resets that timer, so a client that sends its headers one byte at a time
holds a socket (and a file descriptor) for as long as it likes: ~10,000 such
unauthenticated connections exhausted the gateway's descriptors (issue 29, M7).
Here each connection must finish a request's headers within
``server.header_timeout_s`` of its first byte (or of connecting) and its body
within ``server.body_timeout_s`` of the headers, or it is closed; connections
beyond ``server.max_connections`` are closed as soon as they open, and uvicorn's
``limit_concurrency`` answers 503 beyond that many requests in progress.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from carafe.gateway.config import ServerConfig


class TimedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on the request being read.

    One timer per connection: armed when a connection opens or a request's first
    byte arrives (headers), re-armed when the headers are complete (body), cleared
    when the request is complete. The subclass made by :func:`protocol_for` sets
    the limits.
    """

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_connections: int = 2048

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._read_deadline: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            transport.abort()  # no descriptor held for a connection over the cap
            return
        self._arm(self.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._read_deadline is None:  # a kept-alive connection starts its next request
            self._arm(self.header_timeout_s)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm(self.body_timeout_s)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._read_deadline = self.loop.call_later(seconds, self._read_expired)

    def _disarm(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_expired(self) -> None:
        self._read_deadline = None
        if not self.transport.is_closing():
            self.logger.info("closing a connection that did not send its request in time (%s)", self.client)
            self.transport.close()


def protocol_for(server: ServerConfig) -> type[TimedHttpProtocol]:
    """The protocol class carrying ``server``'s limits (uvicorn builds one instance per connection)."""
    limits: dict[str, Any] = {
        "header_timeout_s": server.header_timeout_s,
        "body_timeout_s": server.body_timeout_s,
        "max_connections": server.max_connections,
    }
    return type("GatewayHttpProtocol", (TimedHttpProtocol,), limits)


def uvicorn_config(app: Any, server: ServerConfig, *, host: str, port: int, log_level: str = "info") -> uvicorn.Config:
    """How ``carafe serve`` runs the gateway."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        http=protocol_for(server),
        limit_concurrency=server.max_connections,
        timeout_graceful_shutdown=10,
    )

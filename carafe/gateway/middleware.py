"""Pure-ASGI middleware (safe for streaming responses): request timing and the
request body size limit."""

from __future__ import annotations

import json
import time
from typing import Any

from carafe.gateway.errors import error_body

Scope = dict[str, Any]


class _TooLarge(Exception):
    pass


class RequestLimits:
    """Stamps ``scope['carafe.t0']`` and refuses bodies over ``max_body_bytes`` with 413."""

    def __init__(self, app: Any, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope["carafe.t0"] = time.perf_counter()
        limit = self.max_body_bytes
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > limit:
                    await self._reject(send, declared)
                    return
        seen = 0
        started = False

        async def limited_receive() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge()
            return message

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._reject(send, seen)

    async def _reject(self, send: Any, size: int) -> None:
        body = json.dumps(error_body(
            f"request body too large ({size} bytes; the limit is {self.max_body_bytes})",
            "invalid_request_error", None, "request_too_large",
        )).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

"""Pure-ASGI middleware (safe for streaming responses): request timing and the
request body size limit."""

from __future__ import annotations

import json
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from carafe.gateway.errors import error_body

OVERHEAD = b"x-carafe-overhead-duration-ms"


class RequestLimits:
    """Stamps ``scope['carafe.t0']`` and refuses bodies over ``max_body_bytes`` with 413."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
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
        # Read the body here (bounded), so that an oversized chunked upload is refused
        # with 413 before any handler runs, whatever the handler does with errors.
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            seen += len(body)
            if seen > limit:
                await self._reject(send, seen)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        buffered: Message = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return buffered
            return await receive()  # afterwards: disconnect detection while streaming

        t0 = scope["carafe.t0"]

        async def send_with_overhead(message: Message) -> None:
            # Generation endpoints set the header themselves (engine time excluded);
            # for everything else the whole request is gateway time.
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(k == OVERHEAD for k, _ in headers):
                    elapsed = (time.perf_counter() - t0) * 1000.0
                    headers.append((OVERHEAD, f"{elapsed:.3f}".encode()))
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, replay, send_with_overhead)

    async def _reject(self, send: Send, size: int) -> None:
        body = json.dumps(
            error_body(
                f"request body too large ({size} bytes; the limit is {self.max_body_bytes})",
                "invalid_request_error",
                None,
                "request_too_large",
            )
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

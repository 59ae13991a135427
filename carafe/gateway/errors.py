"""The one place where errors become OpenAI-style error bodies.

Every error leaves the gateway as ``{"error": {"message", "type", "param",
"code"}}`` with a 4xx status where the caller is at fault, 503 when a backend is
down, and a bare 500 "internal error" (logged with its trace, never returned)
only for bugs.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from carafe import errors as E
from carafe.gateway.protocol import UnsupportedParameter
from carafe.indexer.errors import StoreBusy, StoreUnavailable

log = logging.getLogger("carafe.gateway")

CLIENT_CLOSED_REQUEST = 499  # nginx's status for "the client went away"; only ever seen in traces and metrics


class ClientGone(Exception):
    """The client closed its connection before the answer was complete (its work is cancelled)."""


# kind -> (status, OpenAI error type)
_KINDS: list[tuple[type[E.CarafeError], int, str]] = [
    (E.Unauthenticated, 401, "authentication_error"),
    (E.Forbidden, 403, "permission_error"),
    (E.NotFound, 404, "not_found_error"),
    (E.Conflict, 409, "conflict_error"),
    (E.TooLarge, 413, "invalid_request_error"),
    (E.RateLimited, 429, "rate_limit_error"),
    (E.ContentBlocked, 400, "invalid_request_error"),
    (E.InvalidInput, 400, "invalid_request_error"),
    (E.Unavailable, 503, "service_unavailable_error"),
]

_HTTP_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable_error",
}


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(
    status: int,
    message: str,
    type_: str,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(message, type_, param, code), status_code=status, headers=headers)


def status_of(exc: E.CarafeError) -> tuple[int, str]:
    for kind, status, type_ in _KINDS:
        if isinstance(exc, kind):
            return status, type_
    return 400, "invalid_request_error"


def carafe_error_response(exc: E.CarafeError) -> JSONResponse:
    if isinstance(exc, StoreBusy | StoreUnavailable):
        # the message names host paths and servers: it goes to the log, the caller learns what to do
        log.warning("document index unavailable: %s", exc.message)
        exc = E.Unavailable(
            "the document index is not available to this gateway right now; retry shortly or tell an operator "
            "(the gateway log has the cause)",
            code="index_unavailable",
        )
    status, type_ = status_of(exc)
    code = exc.code
    if isinstance(exc, E.ContentBlocked):
        code = code or "content_filter"
    headers = None
    if isinstance(exc, E.RateLimited):
        headers = {"Retry-After": str(max(1, int(exc.retry_after + 0.999)))}
    if isinstance(exc, E.Unavailable):
        headers = {"Retry-After": "5"}
    return error_response(status, exc.message, type_, exc.param, code, headers)


def _loc_to_param(loc: tuple[Any, ...]) -> str | None:
    parts = [p for p in loc if p != "body"]
    # drop pydantic's union-branch tags such as 'str', 'list[TextPart]', 'function-after[...]'
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif isinstance(p, str) and ("[" in p or p in {"str", "int", "float", "bool", "list", "dict"}):
            continue
        else:
            out += ("." if out else "") + str(p)
    return out or None


def validation_error_response(exc: RequestValidationError) -> JSONResponse:
    errs = exc.errors()
    if not errs:
        return error_response(400, "invalid request body", "invalid_request_error")
    # of a union's branches, the one whose value failed a check says more than the ones of another type
    first = next((e for e in errs if e.get("type") == "value_error"), errs[0])
    ctx_err = (first.get("ctx") or {}).get("error")
    if isinstance(ctx_err, UnsupportedParameter):
        return error_response(400, ctx_err.message, "invalid_request_error", ctx_err.param, "unsupported_parameter")
    kind = first.get("type", "")
    param = _loc_to_param(tuple(first.get("loc", ())))
    if kind == "json_invalid":
        return error_response(400, "request body is not valid JSON", "invalid_request_error", None, "invalid_json")
    if kind == "extra_forbidden":
        return error_response(
            400, f"unrecognized request argument supplied: {param}", "invalid_request_error", param, "unknown_parameter"
        )
    if kind == "missing":
        return error_response(
            400, f"missing required parameter: {param}", "invalid_request_error", param, "missing_parameter"
        )
    msg = str(first.get("msg", "invalid value"))
    msg = msg.removeprefix("Value error, ")
    text = f"invalid value for {param}: {msg}" if param else msg
    if len(errs) > 1:
        text += f" (and {len(errs) - 1} more problem{'s' if len(errs) > 2 else ''})"
    return error_response(400, text, "invalid_request_error", param, "invalid_value")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(E.CarafeError)
    async def _carafe(_: Request, exc: E.CarafeError) -> JSONResponse:
        return carafe_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        status = exc.status_code
        detail = exc.detail if isinstance(exc.detail, str) else "request failed"
        if status == 400 and "parsing the body" in detail:
            detail = "request body could not be parsed (it must be UTF-8 JSON)"
        if status == 404:
            detail = "no such endpoint; see /docs for the API"
        return error_response(
            status,
            detail,
            _HTTP_TYPES.get(status, "invalid_request_error"),
            headers=dict(exc.headers) if exc.headers else None,
        )

    @app.exception_handler(ClientGone)
    async def _gone(_: Request, exc: ClientGone) -> JSONResponse:
        # nobody reads it: the status is for the trace and the request metrics
        return error_response(CLIENT_CLOSED_REQUEST, str(exc), "client_closed_request", code="client_closed")

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return error_response(500, "internal error; the gateway logged it", "internal_error")

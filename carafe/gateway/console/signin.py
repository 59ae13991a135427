"""Sign-in with an API key, sign-out and the console's front door (``/console`` sends each role to its
first page), plus the vendored static files."""

from __future__ import annotations

from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from carafe.errors import CarafeError, Forbidden
from carafe.gateway.console.idp import sign_in_of
from carafe.gateway.console.render import page, static_file
from carafe.gateway.console.session import COOKIE, TTL_S, authenticate_key, current_session, safe_next, sessions_of

router = APIRouter(include_in_schema=False)


@router.get("/console")
async def home(request: Request) -> Response:
    session = current_session(request)
    if session is None:
        return RedirectResponse("/console/login", status_code=303)
    pages = session.pages()
    return RedirectResponse(f"/console/{pages[0]}" if pages else "/console/login", status_code=303)


@router.get("/console/login")
async def login_form(request: Request, next: str | None = None) -> Response:
    idp = sign_in_of(request) is not None
    return page(request, "login.html", None, next=safe_next(next), error=None, idp=idp)


async def _form(request: Request) -> dict[str, str]:
    """The sign-in form's fields (urlencoded; the first value of each)."""
    body = (await request.body())[:16_384].decode("utf-8", errors="replace")
    return {k: v[0] for k, v in parse_qs(body).items()}


@router.post("/console/login")
async def login(request: Request) -> Response:
    form = await _form(request)
    api_key, next = form.get("api_key", ""), form.get("next", "/console")
    try:
        principal = authenticate_key(request, api_key)
    except CarafeError as exc:
        status = 403 if isinstance(exc, Forbidden) else 401
        idp = sign_in_of(request) is not None
        return page(request, "login.html", None, status=status, next=safe_next(next), error=exc.message, idp=idp)
    token, _ = sessions_of(request).open(principal)
    response = RedirectResponse(safe_next(next), status_code=303)
    response.set_cookie(
        COOKIE,
        token,
        max_age=TTL_S,
        path="/console",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/console/logout")
async def logout(request: Request) -> Response:
    token = request.cookies.get(COOKIE)
    if token:
        sessions_of(request).close(token)
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path="/console")
    return response


@router.get("/console/static/{name}")
async def static(name: str) -> Response:
    return static_file(name)

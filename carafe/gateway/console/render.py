"""How console pages are answered: server-rendered Jinja2 templates (autoescaped), the
vendored static files, security headers, and the sign-in redirect and 403 page.

No CDN and no inline script: the Content-Security-Policy allows only this origin."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from carafe.errors import NotFound
from carafe.gateway.console.session import Area, Session, current_session

HERE = Path(__file__).parent
TEMPLATES = Jinja2Templates(directory=HERE / "templates")
TEMPLATES.env.filters["utc"] = lambda ts: datetime.fromtimestamp(float(ts), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
STATIC = {"console.css": "text/css", "console.js": "text/javascript"}
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def page(request: Request, template: str, session: Session | None, *, status: int = 200, **context: Any) -> Response:
    """A rendered page with the console's navigation and security headers."""
    response = TEMPLATES.TemplateResponse(
        request, template, {"session": session, "active": template.removesuffix(".html"), **context}, status_code=status
    )
    response.headers.update(HEADERS)
    return response


def gate(request: Request, area: Area) -> Session | Response:
    """The session allowed to see ``area``, else the sign-in redirect or a 403 page."""
    session = current_session(request)
    if session is None:
        target = quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""), safe="/")
        return RedirectResponse(f"/console/login?next={target}", status_code=303)
    if not session.may(area):
        message = f"Your role ({', '.join(sorted(session.roles))}) may not see the {area} page."
        return page(request, "error.html", session, status=403, title="Not allowed", message=message)
    return session


def static_file(name: str) -> Response:
    if name not in STATIC:
        raise NotFound(f"no console file {name!r}")
    return FileResponse(HERE / "static" / name, media_type=STATIC[name], headers=HEADERS)


def html_error(message: str, status: int) -> HTMLResponse:
    return HTMLResponse(f"<p>{message}</p>", status_code=status, headers=HEADERS)

"""The console: the people who run Carafe see and steer it in a browser at ``/console``.

Server-rendered HTML (Jinja2, autoescaped) with a little vanilla JavaScript, every
asset served from this package (no CDN). One module per page (adapters, tuning,
index, activity, audit, guards, keys), each with its HTML route and the JSON routes it loads, behind one session
and role check (:mod:`carafe.gateway.console.session`). The pages call the same
functions as the admin API and `carafe audit`; nothing is re-implemented here.
"""

from __future__ import annotations

from fastapi import APIRouter

from carafe.gateway.console import activity, adapters, audit, guards, idp, index, keys, signin, tuning

router = APIRouter(include_in_schema=False)
for _module in (signin, idp, adapters, tuning, index, activity, audit, guards, keys):
    router.include_router(_module.router)

__all__ = ["router"]

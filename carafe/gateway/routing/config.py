"""Config of routing: aliases, `auto` routing, per-route policies."""

from __future__ import annotations

from pydantic import BaseModel


class RoutingConfig(BaseModel):
    pass

"""Config of the guardrails (owned by the guards module)."""

from __future__ import annotations

from pydantic import BaseModel


class GuardsConfig(BaseModel):
    pass

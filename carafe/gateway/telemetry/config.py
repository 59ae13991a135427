"""Config of traces and metrics."""

from __future__ import annotations

from pydantic import BaseModel


class TelemetryConfig(BaseModel):
    pass

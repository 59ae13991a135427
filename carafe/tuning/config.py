"""Config of the tuning package."""

from __future__ import annotations

from pydantic import BaseModel


class TuningConfig(BaseModel):
    pass

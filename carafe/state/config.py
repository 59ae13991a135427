"""The ``state`` section of ``carafe.yaml``: where keys, principals, budgets, stored
responses and admin records live (a database), and where limit counters live
(in-process, or Redis shared by every replica)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

DEFAULT_PRICE = "default"


class Price(BaseModel):
    """What 1000 tokens of one model or adapter cost, in whatever currency budgets are set in."""

    model_config = ConfigDict(extra="forbid")

    input_per_1k: float = Field(0.0, ge=0, description="Cost of 1000 prompt tokens")
    output_per_1k: float = Field(0.0, ge=0, description="Cost of 1000 generated tokens")


class StateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    database_url: SecretStr | None = Field(
        None,
        description="SQLAlchemy URL of the state database, e.g. postgresql+psycopg://carafe:...@db/carafe "
        "(default: SQLite at <data_dir>/state.db); every replica and the CLI must name the same one",
    )
    redis_url: SecretStr | None = Field(
        None,
        description="Redis for rate-limit, token and budget counters shared by replicas, e.g. redis://redis:6379/0 "
        "(default: counted in each process)",
    )
    redis_timeout_s: float = Field(
        0.25, gt=0, le=5, description="Longest a limit check waits for Redis before on_redis_error applies"
    )
    on_redis_error: Literal["fail_open", "fail_closed"] = Field(
        "fail_open",
        description="When Redis is down or slow: fail_open counts in this process only (limits hold per replica); "
        "fail_closed refuses requests with 503 and readiness turns false",
    )
    cache_ttl_s: float = Field(
        0.5,
        ge=0,
        le=1.0,
        description="How long a replica trusts a key or directory entry it read (a revocation elsewhere is "
        "refused here within this time)",
    )
    pool_size: int = Field(5, ge=1, le=100, description="Database connections per process (PostgreSQL)")
    prices: dict[str, Price] = Field(
        default_factory=dict,
        description="Price per model or adapter name (the served name), for cost budgets: "
        "{name: {input_per_1k, output_per_1k}}; the entry 'default' prices every other name "
        "(without it, unlisted names cost nothing)",
    )

    def price(self, name: str) -> Price:
        """The price of ``name``, else the ``default`` entry, else free."""
        return self.prices.get(name) or self.prices.get(DEFAULT_PRICE) or Price()

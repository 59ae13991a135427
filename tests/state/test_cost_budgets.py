"""Budgets in cost, and spend that charges what was generated: on a real Redis and
the state database (SQLite and PostgreSQL). A request reserves its prompt plus its
max completion at the model's price before generating (so concurrent requests
cannot overspend); when it ends the unused part goes back to tpm, the budget
counters and the spend ledger."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from carafe.errors import RateLimited
from carafe.gateway.auth import Principal
from carafe.gateway.counters_redis import RedisCounters
from carafe.gateway.ratelimit import Limits, LocalCounters, Reservation
from carafe.state import Budgets, Database, SpendLedger, StateConfig
from carafe.state.budgets import MICROS

pytestmark = pytest.mark.asyncio(loop_scope="session")

PRICES = StateConfig(
    prices={
        "big": {"input_per_1k": 0.01, "output_per_1k": 0.03},
        "default": {"input_per_1k": 0.0, "output_per_1k": 0.001},
    }
)


def limits(db: Database, redis_url: str | None) -> Limits:
    counters = LocalCounters() if redis_url is None else RedisCounters(redis_url, timeout_s=0.5)
    return Limits(counters, budgets=Budgets(db), ledger=SpendLedger(db), prices=PRICES.price)


async def test_a_cost_budget_stops_a_key_after_its_price_weighted_spend(database_url: str, redis) -> None:  # type: ignore[no-untyped-def]
    db = Database.open(database_url)
    key_id = f"k-cost-{uuid.uuid4().hex[:8]}"  # one Redis serves every parametrization
    Budgets(db).set(f"key:{key_id}", "day", max_cost=0.10)
    gw = limits(db, redis.url)
    p = Principal("app", key_id=key_id)
    for _ in range(2):  # 1000 prompt + 1000 completion on "big": 0.01 + 0.03 = 0.04 each
        await gw.reserve(p, "big", 1000, 1000)
    with pytest.raises(RateLimited, match=rf"limit of 0\.1 cost per day for key:{key_id} \(budget\)") as refused:
        await gw.reserve(p, "big", 1000, 1000)  # 0.12 > 0.10: refused, and not charged
    assert refused.value.code == "rate_limit_exceeded" and "needs 0.04" in refused.value.message
    await gw.reserve(p, "small-adapter", 1000, 1000)  # the same tokens at the default price: 0.001
    assert gw.ledger is not None and gw.ledger.flush() > 0
    assert Budgets(db).usage(f"key:{key_id}", "day").cost_micros == 81_000  # 0.04 + 0.04 + 0.001
    await gw.aclose()


@pytest.mark.parametrize("store", ["in-process", "redis"])
async def test_a_short_answer_costs_what_it_generated_not_its_reservation(redis, tmp_path, store: str) -> None:  # type: ignore[no-untyped-def]
    db = Database.open(f"sqlite:///{tmp_path / 'state.db'}")
    Budgets(db).set(f"team:t-{store}", "month", 2000, max_cost=0.05)
    gw = limits(db, redis.url if store == "redis" else None)
    p = Principal("app", key_id=f"k-refund-{store}", team=f"t-{store}", tpm=1300)
    res = await gw.reserve(p, "big", 100, 1000)  # reserves 1100 tokens, 0.001 + 0.03 = 0.031
    assert res.cost_micros == 31_000
    with pytest.raises(RateLimited, match="tokens per minute"):
        await gw.reserve(p, "big", 100, 1000)  # while the first is generating: no overspend
    await gw.settle(res, 10)  # a short answer: 10 tokens generated
    await gw.settle(res, 10)  # settled once
    assert gw.ledger is not None and gw.ledger.flush() > 0
    spent = Budgets(db).usage(f"team:t-{store}", "month")
    assert (spent.tokens, spent.cost_micros) == (110, 1_300)  # 0.001 + 10 x 0.03 / 1000
    second = await gw.reserve(p, "big", 100, 1000)  # the refund gave tpm and both budgets back
    await gw.settle(second, 1000)  # a full answer keeps its whole reservation
    gw.ledger.flush()
    assert Budgets(db).usage(f"team:t-{store}", "month").cost_micros == 1_300 + 31_000
    await gw.aclose()


async def test_three_replicas_hold_a_cost_budget_and_share_refunds(redis, tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = Database.open(f"sqlite:///{tmp_path / 'state.db'}")
    Budgets(db).set("user:ada", "day", max_cost=1.0)
    replicas = [limits(db, redis.url) for _ in range(3)]
    p = Principal("ada", key_id="k-ada")

    async def attempt(i: int) -> Reservation | None:
        try:  # 100k completion tokens at the default price (0.001 per 1k): 0.1
            return await replicas[i % 3].reserve(p, "medium", 0, 100_000)
        except RateLimited:
            return None

    first = await asyncio.gather(*(attempt(i) for i in range(30)))  # 3x the budget, all at once
    granted = [r for r in first if r is not None]
    assert len(granted) == 10  # 10 x 0.1 = the budget: no overshoot, no false 429
    for i, r in enumerate(granted):  # each generated half of its max: 0.05 back each
        await replicas[i % 3].settle(r, 50_000)
    again = await asyncio.gather(*(attempt(i) for i in range(30)))
    assert sum(r is not None for r in again) == 5  # 0.5 given back = 5 more reservations of 0.1
    for r in replicas:
        assert r.ledger is not None
        r.ledger.flush()
    assert Budgets(db).usage("user:ada", "day").cost_micros == round(1.0 * MICROS)
    for r in replicas:
        await r.aclose()


@pytest.mark.parametrize(
    "bad", [{}, {"max_cost": 0.0}, {"max_cost": float("nan")}, {"max_cost": 1e300}, {"max_tokens": 0}]
)
async def test_a_budget_out_of_range_is_refused_with_its_field(tmp_path, bad: dict) -> None:  # type: ignore[type-arg]
    from carafe.errors import InvalidInput

    with pytest.raises(InvalidInput) as refused:
        Budgets(Database.open(f"sqlite:///{tmp_path / 'state.db'}")).set("key:k", "day", **bad)
    assert refused.value.param in ("max_cost", "max_tokens")


async def test_a_refund_after_midnight_goes_back_to_the_day_it_was_charged_to(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import datetime as dt

    from carafe.state.schema import Spend

    db = Database.open(f"sqlite:///{tmp_path / 'state.db'}")
    gw = limits(db, None)
    res = await gw.reserve(Principal("app", key_id="k-midnight"), "big", 0, 1000)
    res.at = dt.datetime(2026, 12, 5, 23, 59, 59, tzinfo=dt.UTC)  # reserved before midnight
    await gw.settle(res, 0)
    assert gw.ledger is not None and gw.ledger.flush() > 0
    with db.transaction() as s:
        refunded = s.get(Spend, ("key:k-midnight", "2026-12-05"))
        assert refunded is not None and refunded.cost_micros == -30_000  # not taken off today's spend

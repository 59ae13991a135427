"""Shared-state overhead and limits across replicas.

1. Auth + limit check per request: what ``get_principal`` and the token charge do
   for every request — resolve the bearer key (off the event loop, through the
   replica's short cache; a database read when it expired), count the request
   against rpm, reserve its tokens and cost against tpm and budgets, and give back
   the unused part when the generation ends (the refund) — on

     sqlite            the embedded default (SQLite under data_dir, counters in-process)
     postgres          PostgreSQL (state.database_url), counters in-process
     postgres + redis  PostgreSQL and Redis (state.redis_url): the scale-out setting

   with a warm cache (state.cache_ttl_s 0.5, the default) and cold (ttl 0: every
   request reads the database). Goal: <= 1 ms p50 added with a warm cache.

2. Overshoot: 3 replicas (each its own counters client) at 3x a key's rpm and at
   3x a team's token budget, concurrently; with Redis the limit holds exactly,
   in-process counters let each replica count alone.

PostgreSQL (initdb/pg_ctl) and redis-server run in temp folders (tests/state/services.py).

    python bench/state.py [--requests N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from carafe.adapters.local import LocalEngine
from carafe.config import load_config
from carafe.errors import RateLimited
from carafe.gateway.auth import Principal
from carafe.gateway.counters_redis import RedisCounters
from carafe.gateway.deps import resolve
from carafe.gateway.ratelimit import Counters, Limits, LocalCounters
from carafe.gateway.state import AppState, build_state
from carafe.state import Budgets, Database
from tests.state.services import postgres, redis_server


def gateway_state(data: Path, database_url: str | None, redis_url: str | None, ttl: float) -> AppState:
    state_cfg: dict[str, object] = {"cache_ttl_s": ttl}
    if database_url:
        state_cfg["database_url"] = database_url
    if redis_url:
        state_cfg["redis_url"] = redis_url
    cfg = load_config(None, data_dir=data, state=state_cfg, telemetry={"exporter": "none"})
    return build_state(cfg, engine=LocalEngine(cfg.adapters.engine, models_dir=cfg.models_dir))


async def per_request(state: AppState, key: str, n: int) -> list[float]:
    """Milliseconds per request for what every request pays: resolve + rpm + reservation + refund."""
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        principal = await asyncio.to_thread(resolve, state, key)
        assert principal is not None
        await state.limits.admit(principal)
        reservation = await state.limits.reserve(principal, "bench", 20, 100)
        await state.limits.settle(reservation, 30)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def row(name: str, ms: list[float]) -> str:
    ms = sorted(ms)
    p50, p99 = statistics.median(ms), ms[int(len(ms) * 0.99) - 1]
    return f"| {name:<34} | {p50:7.3f} | {p99:7.3f} |"


async def overhead(setups: dict[str, tuple[str | None, str | None]], tmp: Path, n: int) -> None:
    print("| setup (auth + limits per request) | p50 ms | p99 ms |\n|---|---|---|")
    for name, (db_url, redis_url) in setups.items():
        for ttl, label in ((0.5, "warm cache"), (0.0, "cold: db read each")):
            state = gateway_state(tmp / f"{name}-{ttl}".replace(" ", ""), db_url, redis_url, ttl)
            key, _ = state.keys.create("bench", rpm=10**9, tpm=10**9, team="bench")
            Budgets(state.store.db).set("team:bench", "day", 10**15)
            await per_request(state, key, 200)  # warm-up: connections, scripts, the budget rules
            print(row(f"{name}, {label}", await per_request(state, key, n)), flush=True)
            await state.limits.aclose()
            state.store.close()


async def overshoot(counters: list[Counters], db: Database | None, label: str) -> None:
    replicas = [Limits(c, budgets=Budgets(db) if db else None) for c in counters]
    suffix = f"{label}-{time.time_ns()}"
    app = Principal("app", rpm=100, key_id=f"over-{suffix}")

    async def admitted(limits: Limits) -> bool:
        try:
            await limits.admit(app)
            return True
        except RateLimited:
            return False

    got = await asyncio.gather(*(admitted(replicas[i % 3]) for i in range(300)))
    team = Principal("t", rpm=10**9, key_id=f"team-{suffix}", team=f"team-{suffix}")
    if db is not None:
        Budgets(db).set(f"team:team-{suffix}", "day", 10_000)

    async def charged(limits: Limits) -> int:
        try:
            await limits.charge(team, 100)
            return 100
        except RateLimited:
            return 0

    spent = await asyncio.gather(*(charged(replicas[i % 3]) for i in range(300)))
    print(
        f"| {label:<26} | {sum(got):>8} / 100 | {max(0, sum(got) - 100):>9} | {sum(spent):>10} / 10000 | "
        f"{max(0, sum(spent) - 10_000):>10} |",
        flush=True,
    )


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="carafe-bench-state-") as d:
        tmp = Path(d)
        with postgres(tmp) as pg, redis_server(tmp) as redis:
            setups = {
                "sqlite": (None, None),
                "postgres": (pg.fresh_database(), None),
                "postgres + redis": (pg.fresh_database(), redis.url),
            }
            await overhead(setups, tmp, args.requests)
            print("\n| 3 replicas, 3x the load      | rpm admitted | overshoot | budget tokens      | overshoot |")
            print("|---|---|---|---|---|")
            db = Database.open(pg.fresh_database())
            await overshoot([LocalCounters() for _ in range(3)], db, "in-process counters")
            await overshoot([RedisCounters(redis.url, timeout_s=1.0) for _ in range(3)], db, "redis")


if __name__ == "__main__":
    asyncio.run(main())

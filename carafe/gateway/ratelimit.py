"""Limits that hold across replicas: requests and tokens per minute per key, and
budgets in tokens or cost per key, user and team over a day or a month.

A request asks for several counters at once (its rpm, then its tpm and every
budget that covers it); the :class:`Counters` grant all of them or none, so a
refused request is never charged. :class:`LocalCounters` count in this process
(the embedded default); :mod:`carafe.gateway.counters_redis` counts in Redis with
one Lua script per request, so N replicas together let through exactly the limit.
Tokens are weighted the way they cost: prompt tokens plus the most the request
may generate (``max_tokens`` × choices) are *reserved* before generation starts,
so concurrent requests cannot overspend; cost is those tokens at the model's
price (``state.prices``). When the generation ends — finished, stopped or the
client gone — :meth:`Limits.settle` gives back what was reserved but not
generated, so tpm, budgets and the spend ledger show what was really used.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from carafe.errors import RateLimited
from carafe.gateway.auth import Principal
from carafe.state import BudgetRule, Budgets, SpendLedger
from carafe.state.budgets import MICROS, Spent, period, seconds_left
from carafe.state.config import Price

log = logging.getLogger("carafe.gateway.limits")

MINUTE_S = 60.0
RULES_REFRESH_S = 5.0


@dataclass(frozen=True, slots=True)
class Ask:
    """Take ``amount`` from counter ``key`` if that keeps it within ``limit``."""

    key: str
    amount: int
    limit: int
    ttl_s: float
    what: str  # for the 429 message: "requests per minute", "tokens per day for team:x"
    seed: int = 0  # a counter not seen yet starts here (spend already in the ledger)
    unit: Literal["requests", "tokens", "cost"] = "requests"  # cost: millionths of the currency unit

    def shown(self, amount: int) -> str:
        return f"{amount / MICROS:.6g}" if self.unit == "cost" else str(amount)


def cost_micros(price: Price, prompt_tokens: int, completion_tokens: int) -> int:
    """What tokens cost at ``price``, in millionths of the currency unit (rounded up)."""
    return math.ceil((prompt_tokens * price.input_per_1k + completion_tokens * price.output_per_1k) * MICROS / 1000)


@dataclass(slots=True)
class Reservation:
    """What a request was charged before generating, kept to give back the unused part."""

    principal: Principal
    price: Price
    prompt_tokens: int
    max_completion: int
    asks: list[Ask]
    at: dt.datetime  # the day and month the reservation was charged to
    settled: bool = False

    @property
    def cost_micros(self) -> int:
        return cost_micros(self.price, self.prompt_tokens, self.max_completion)


@dataclass(frozen=True, slots=True)
class Refusal:
    ask: Ask
    retry_after: float


class Counters(Protocol):
    """Where counts live. ``take`` grants every ask or none (then says which refused)."""

    async def take(self, asks: list[Ask]) -> Refusal | None: ...

    async def give(self, asks: list[Ask]) -> None:
        """Give ``amount`` back to each counter that still exists (a refund)."""
        ...

    async def health(self) -> tuple[bool, str]: ...

    async def aclose(self) -> None: ...


class LocalCounters:
    """Fixed windows counted in this process (one event loop: no awaits, so atomic)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._counts: dict[str, tuple[float, int]] = {}  # key -> (expires at, count)

    async def take(self, asks: list[Ask]) -> Refusal | None:
        return self.take_now(asks)

    def take_now(self, asks: list[Ask]) -> Refusal | None:
        now = self._clock()
        current = [self._current(a, now) for a in asks]
        for ask, (expires, count) in zip(asks, current):
            if count + ask.amount > ask.limit:
                return Refusal(ask, max(0.001, expires - now))
        for ask, (expires, count) in zip(asks, current):
            self._counts[ask.key] = (expires, count + ask.amount)
        if len(self._counts) > 100_000:
            self._counts = {k: v for k, v in self._counts.items() if v[0] > now}
        return None

    async def give(self, asks: list[Ask]) -> None:
        self.give_now(asks)

    def give_now(self, asks: list[Ask]) -> None:
        now = self._clock()
        for ask in asks:
            hit = self._counts.get(ask.key)
            if hit is not None and hit[0] > now:
                self._counts[ask.key] = (hit[0], max(0, hit[1] - ask.amount))

    def _current(self, ask: Ask, now: float) -> tuple[float, int]:
        hit = self._counts.get(ask.key)
        if hit is None or hit[0] <= now:
            return now + ask.ttl_s, ask.seed
        return hit

    async def health(self) -> tuple[bool, str]:
        return True, "in-process"

    async def aclose(self) -> None:
        return None


def minute_key(principal: Principal, unit: str, now: float) -> tuple[str, float]:
    """The counter of the current fixed minute and the seconds left in it."""
    window = int(now // MINUTE_S)
    return f"carafe:{unit}:{principal.key_id}:{window}", (window + 1) * MINUTE_S - now


class Limits:
    """The limit checks a request goes through, on whichever :class:`Counters`."""

    def __init__(
        self,
        counters: Counters,
        *,
        budgets: Budgets | None = None,
        ledger: SpendLedger | None = None,
        prices: Callable[[str], Price] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.counters = counters
        self.budgets = budgets
        self.ledger = ledger
        self.prices = prices or (lambda _name: Price())
        self._clock = clock
        self._rules: list[tuple[BudgetRule, Spent]] = []
        self._rules_at = float("-inf")
        self._loading: asyncio.Future[None] | None = None

    async def admit(self, principal: Principal) -> None:
        """Count one request against the key's requests per minute (429 beyond)."""
        key, left = minute_key(principal, "rpm", self._clock())
        await self._take([Ask(key, 1, principal.rpm, left, "requests per minute")])

    async def charge(
        self, principal: Principal, tokens: int, cost: int = 0, *, at: dt.datetime | None = None
    ) -> list[Ask]:
        """Charge ``tokens`` (prompt + max completion) and ``cost`` (millionths) against
        tpm and every budget covering the key, its user or its team — all or nothing
        (429 beyond). Returns the counters charged."""
        asks = []
        if principal.tpm is not None:
            key, left = minute_key(principal, "tpm", self._clock())
            asks.append(Ask(key, tokens, principal.tpm, left, "tokens per minute", unit="tokens"))
        for rule, spent in await self._rules_for(principal):
            asks += self._budget_asks(rule, spent, tokens, cost)
        if asks:
            await self._take(asks)
        if self.ledger is not None:
            self.ledger.charge(scopes(principal), tokens, cost, at=at)
        return asks

    async def reserve(self, principal: Principal, model: str, prompt_tokens: int, max_completion: int) -> Reservation:
        """Charge the most a request may use (its prompt and every choice's max_tokens)
        at ``model``'s price, before generating; :meth:`settle` gives back the rest."""
        price = self.prices(model)
        tokens = prompt_tokens + max_completion
        at = dt.datetime.now(dt.UTC)
        asks = await self.charge(principal, tokens, cost_micros(price, prompt_tokens, max_completion), at=at)
        return Reservation(principal, price, prompt_tokens, max_completion, asks, at)

    async def settle(self, reservation: Reservation, completion_tokens: int) -> None:
        """Give back what was reserved but not generated (once; also when the client left)."""
        if reservation.settled:
            return
        reservation.settled = True
        used = min(max(0, completion_tokens), reservation.max_completion)
        tokens = reservation.max_completion - used
        cost = reservation.cost_micros - cost_micros(reservation.price, reservation.prompt_tokens, used)
        refunds = [dataclasses.replace(a, amount=cost if a.unit == "cost" else tokens) for a in reservation.asks]
        refunds = [a for a in refunds if a.amount > 0]
        if refunds:
            await self.counters.give(refunds)
        if self.ledger is not None and (tokens or cost):
            self.ledger.charge(scopes(reservation.principal), -tokens, -cost, at=reservation.at)

    async def health(self) -> tuple[bool, str]:
        return await self.counters.health()

    async def aclose(self) -> None:
        await self.counters.aclose()

    async def _take(self, asks: list[Ask]) -> None:
        refusal = await self.counters.take(asks)
        if refusal is None:
            return
        a = refusal.ask
        raise RateLimited(
            f"limit of {a.shown(a.limit)} {a.what} exceeded for this key (this request needs {a.shown(a.amount)}); "
            f"retry in {refusal.retry_after:.1f}s",
            retry_after=refusal.retry_after,
            code="rate_limit_exceeded",
        )

    def _budget_asks(self, rule: BudgetRule, spent: Spent, tokens: int, cost: int) -> list[Ask]:
        per, ttl = period(rule.window), seconds_left(rule.window) + 60
        asks = []
        if rule.max_tokens is not None:
            what = f"tokens per {rule.window} for {rule.scope}"
            key = f"carafe:budget:{rule.scope}:{per}"
            asks.append(Ask(key, tokens, rule.max_tokens, ttl, what, seed=spent.tokens, unit="tokens"))
        if rule.max_cost is not None:
            what = f"cost per {rule.window} for {rule.scope} (budget)"
            key = f"carafe:budget-cost:{rule.scope}:{per}"
            limit = round(rule.max_cost * MICROS)
            asks.append(Ask(key, cost, limit, ttl, what, seed=spent.cost_micros, unit="cost"))
        return asks

    async def _rules_for(self, principal: Principal) -> list[tuple[BudgetRule, Spent]]:
        if self.budgets is None:
            return []
        if self._clock() - self._rules_at > RULES_REFRESH_S:
            if self._loading is None:  # one reload; every request arriving meanwhile waits for it
                self._loading = asyncio.ensure_future(self._reload())
            await asyncio.shield(self._loading)
        mine = set(scopes(principal))
        return [(r, spent) for r, spent in self._rules if r.scope in mine]

    async def _reload(self) -> None:
        try:
            self._rules = await asyncio.to_thread(self._load_rules)
        except Exception:  # the database is away: keep the rules we had, try again later
            log.warning("budget rules could not be read; keeping the previous ones", exc_info=True)
        finally:
            self._rules_at, self._loading = self._clock(), None

    def _load_rules(self) -> list[tuple[BudgetRule, Spent]]:
        assert self.budgets is not None
        if self.ledger is not None:
            self.ledger.flush()
        return [(r, self.budgets.usage(r.scope, r.window)) for r in self.budgets.rules()]


def scopes(principal: Principal) -> list[str]:
    """The budget scopes a request is charged to."""
    out = [f"key:{principal.key_id}", f"user:{principal.user}"]
    if principal.team:
        out.append(f"team:{principal.team}")
    return out


async def charge_work(
    limits: Limits,
    principal: Principal,
    count: Callable[[str], int],
    prompts: list[str],
    max_tokens: list[int],
    *,
    model: str = "",
) -> Reservation:
    """Reserve what a request may cost — every prompt's tokens (counted off the event
    loop) plus the most every choice may generate, at ``model``'s price — before any
    generation starts. The caller settles it when the generation ends."""
    prompt_tokens = await asyncio.to_thread(lambda: sum(count(p) for p in prompts))
    return await limits.reserve(principal, model, prompt_tokens, sum(max_tokens))

"""Limit counters in Redis, shared by every replica.

One Lua script per request checks every counter it asks for and adds to all of
them only if all fit: atomic, so replicas together never let more through than
the limit. Redis down or paused never makes a request wait past
``state.redis_timeout_s``: then ``state.on_redis_error`` applies — ``fail_open``
counts in this process (each replica holds the limit on its own), ``fail_closed``
refuses with 503 — and, for one second, requests skip Redis without waiting.
A refund (the unused part of a reservation) decrements the counters that still
exist, never below zero, in one script too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Literal

import redis.asyncio as aioredis

from carafe.gateway.ratelimit import Ask, LocalCounters, Refusal
from carafe.state import StateUnavailable

log = logging.getLogger("carafe.gateway.limits")

BREAKER_S = 1.0

# KEYS: the counters; ARGV: amount, limit, ttl ms, seed for each.
# Returns {0, 0} when every counter took its amount, else {index (1-based), pttl}.
TAKE = """
local n = #KEYS
for i = 1, n do
  local b = (i - 1) * 4
  local seed = tonumber(ARGV[b + 4])
  if seed > 0 then redis.call('SET', KEYS[i], seed, 'PX', ARGV[b + 3], 'NX') end
  local cur = tonumber(redis.call('GET', KEYS[i]) or '0')
  if cur + tonumber(ARGV[b + 1]) > tonumber(ARGV[b + 2]) then
    return {i, redis.call('PTTL', KEYS[i])}
  end
end
for i = 1, n do
  local b = (i - 1) * 4
  redis.call('INCRBY', KEYS[i], ARGV[b + 1])
  if redis.call('PTTL', KEYS[i]) < 0 then redis.call('PEXPIRE', KEYS[i], ARGV[b + 3]) end
end
return {0, 0}
"""

# KEYS: the counters; ARGV: the amount to give back to each. A counter gone (expired) stays gone.
GIVE = """
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    if redis.call('DECRBY', KEYS[i], ARGV[i]) < 0 then redis.call('SET', KEYS[i], 0, 'KEEPTTL') end
  end
end
return 0
"""


class RedisCounters:
    def __init__(
        self, url: str, *, timeout_s: float, on_error: Literal["fail_open", "fail_closed"] = "fail_open"
    ) -> None:
        self.timeout_s = timeout_s
        self.on_error = on_error
        self._redis = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry_on_timeout=False
        )
        self._script: Any = self._redis.register_script(TAKE)
        self._give: Any = self._redis.register_script(GIVE)
        self._fallback = LocalCounters()
        self._down_until = 0.0
        self.last_error: str | None = None

    async def take(self, asks: list[Ask]) -> Refusal | None:
        if time.monotonic() < self._down_until:
            return self._degraded(asks)
        args: list[Any] = []
        for a in asks:
            args += [a.amount, a.limit, max(1, int(a.ttl_s * 1000)), a.seed]
        try:
            index, pttl = await asyncio.wait_for(
                self._script(keys=[a.key for a in asks], args=args), timeout=self.timeout_s
            )
        except (TimeoutError, aioredis.RedisError, OSError) as exc:
            self._trip(exc)
            return self._degraded(asks)
        self.last_error = None
        if int(index) == 0:
            return None
        ask = asks[int(index) - 1]
        return Refusal(ask, max(0.001, int(pttl) / 1000.0 if int(pttl) > 0 else ask.ttl_s))

    async def give(self, asks: list[Ask]) -> None:
        if time.monotonic() < self._down_until:
            self._fallback.give_now(asks)
            return
        try:
            await asyncio.wait_for(
                self._give(keys=[a.key for a in asks], args=[a.amount for a in asks]), timeout=self.timeout_s
            )
        except (TimeoutError, aioredis.RedisError, OSError) as exc:
            self._trip(exc)  # a lost refund only over-counts: never lets more through
            self._fallback.give_now(asks)

    def _trip(self, exc: BaseException) -> None:
        self._down_until = time.monotonic() + BREAKER_S
        self.last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        log.warning("limit counters: Redis unreachable (%s); %s for %.0fs", self.last_error, self.on_error, BREAKER_S)

    def _degraded(self, asks: list[Ask]) -> Refusal | None:
        if self.on_error == "fail_closed":
            raise StateUnavailable(
                "the rate-limit store (Redis) is unreachable and state.on_redis_error is fail_closed; retry shortly",
                code="limits_unavailable",
            )
        return self._fallback.take_now(asks)

    async def health(self) -> tuple[bool, str]:
        try:
            await asyncio.wait_for(self._redis.ping(), timeout=self.timeout_s)
        except (TimeoutError, aioredis.RedisError, OSError) as exc:
            self._trip(exc)
            ok = self.on_error == "fail_open"
            return ok, f"redis unreachable ({self.last_error}); {self.on_error}"
        return True, "redis"

    async def aclose(self) -> None:
        await self._redis.aclose()

"""Per-key requests-per-minute limits (sliding one-minute window)."""

from __future__ import annotations

import threading
import time
from collections import deque

from carafe.errors import RateLimited

WINDOW_S = 60.0


class RateLimiter:
    """Counts each key's requests over the last minute; one key never slows another."""

    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, key_id: str, rpm: int) -> None:
        """Record one request, or raise :class:`RateLimited` with ``retry_after``."""
        now = self._clock()
        with self._lock:
            hits = self._hits.setdefault(key_id, deque())
            while hits and hits[0] <= now - WINDOW_S:
                hits.popleft()
            if len(hits) >= rpm:
                retry_after = max(0.001, hits[0] + WINDOW_S - now)
                raise RateLimited(
                    f"rate limit of {rpm} requests per minute exceeded for this key; retry in {retry_after:.1f}s",
                    retry_after=retry_after,
                    code="rate_limit_exceeded",
                )
            hits.append(now)

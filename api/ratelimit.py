"""Requests per API key: a token bucket per key, in memory (CONTRACT §7: 429 + Retry-After).

The limits are far above normal use (the collector benchmark sends ~200 requests/s with
one ingest key; a dashboard tab asks ~30 questions every 15-30 s) and only stop a key that
floods the API.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = ["DEFAULT_LIMITS", "RateLimit", "RateLimiter"]


@dataclass(frozen=True)
class RateLimit:
    """``per_second`` requests on average, with bursts of up to ``burst``."""

    per_second: float
    burst: int


DEFAULT_LIMITS: Mapping[str, RateLimit] = {
    "ingest": RateLimit(per_second=1000, burst=2000),
    "read": RateLimit(per_second=20, burst=300),
    "admin": RateLimit(per_second=20, burst=300),
}


class RateLimiter:
    """Token buckets by key id; each key's limit follows its scope."""

    def __init__(
        self,
        limits: Mapping[str, RateLimit] = DEFAULT_LIMITS,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limits = dict(limits)
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key id -> (tokens, at)

    def take(self, key_id: str, scope: str) -> float:
        """Spend one request of ``key_id``: 0 when allowed, else the seconds to wait."""
        limit = self._limits.get(scope)
        if limit is None:
            return 0.0
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.get(key_id, (float(limit.burst), now))
            tokens = min(float(limit.burst), tokens + (now - at) * limit.per_second)
            if tokens >= 1.0:
                self._buckets[key_id] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key_id] = (tokens, now)
            return (1.0 - tokens) / limit.per_second

    @staticmethod
    def retry_after(wait_s: float) -> str:
        """The ``Retry-After`` value (whole seconds, at least 1) for a wait."""
        return str(max(1, math.ceil(wait_s)))

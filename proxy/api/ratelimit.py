"""Per-principal token buckets for the API (in-process: each replica limits on its own)."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable


class RateLimiter:
    """``per_minute`` requests per key, refilled continuously; at most ``max_keys`` remembered.

    A token bucket rather than a fixed window, so a burst at a window's edge cannot double the
    allowance. Keys evicted for space start again with a full bucket, which only ever favours
    the caller; the cap keeps memory bounded whatever the number of principals.
    """

    def __init__(
        self,
        per_minute: int,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._max = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str) -> float:
        """Spend one token for ``key``: 0.0 when allowed, else seconds until one is available."""
        now = self._clock()
        tokens, last = self._buckets.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            self._buckets.move_to_end(key)
            while len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def retry_after(self, key: str) -> int:
        """:meth:`take`, rounded up to whole seconds for a Retry-After header (0 = allowed)."""
        wait = self.take(key)
        return 0 if wait == 0.0 else max(1, math.ceil(wait))

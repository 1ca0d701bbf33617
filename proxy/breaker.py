"""A circuit breaker: a dead Redis costs one fast failure per request, not a timeout each."""

from __future__ import annotations

import time
from collections.abc import Callable


class CircuitOpen(Exception):
    """The dependency is considered down; the caller applies its fail policy at once."""


class Breaker:
    """closed → (N consecutive failures over at least ``min_failure_seconds``) → open →
    (reset time) → half-open: one trial call.

    A success in any state closes it. Only one trial runs at a time while half-open, so a flood
    of requests does not all wait on a dependency that is still down. The minimum span matters
    under load: one latency blip times out every concurrent call at once, which looks like N
    consecutive failures but is not an outage — opening then would skip scoring for a whole
    reset period.
    """

    __slots__ = (
        "failures",
        "reset_seconds",
        "min_failure_seconds",
        "_clock",
        "_consecutive",
        "_first_failure_at",
        "_opened_at",
        "_trial",
    )

    def __init__(
        self,
        failures: int,
        reset_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        min_failure_seconds: float = 0.0,
    ) -> None:
        self.failures = failures
        self.reset_seconds = reset_seconds
        self.min_failure_seconds = min_failure_seconds
        self._clock = clock
        self._consecutive = 0
        self._first_failure_at = 0.0
        self._opened_at: float | None = None
        self._trial = False

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self.reset_seconds:
            return "half-open"
        return "open"

    def before(self) -> None:
        """Raise `CircuitOpen` unless a call may go ahead now."""
        state = self.state
        if state == "closed":
            return
        if state == "half-open" and not self._trial:
            self._trial = True
            return
        raise CircuitOpen()

    def success(self) -> None:
        self._consecutive = 0
        self._opened_at = None
        self._trial = False

    def failure(self) -> None:
        now = self._clock()
        if self._consecutive == 0:
            self._first_failure_at = now
        self._consecutive += 1
        self._trial = False
        if self._opened_at is not None or (
            self._consecutive >= self.failures
            and now - self._first_failure_at >= self.min_failure_seconds
        ):
            self._opened_at = now

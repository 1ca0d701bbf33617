import pytest

from proxy.breaker import Breaker, CircuitOpen


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_opens_after_consecutive_failures_and_recovers():
    clock = Clock()
    b = Breaker(3, 2.0, clock)
    for _ in range(2):
        b.before()
        b.failure()
    assert b.state == "closed"
    b.before()
    b.failure()
    assert b.state == "open"
    with pytest.raises(CircuitOpen):
        b.before()
    clock.t = 2.0
    assert b.state == "half-open"
    b.before()  # the one trial
    with pytest.raises(CircuitOpen):
        b.before()  # no second concurrent trial
    b.success()
    assert b.state == "closed"
    b.before()


def test_failed_trial_reopens_for_a_full_period():
    clock = Clock()
    b = Breaker(1, 5.0, clock)
    b.failure()
    clock.t = 5.0
    b.before()
    b.failure()
    assert b.state == "open"
    clock.t = 9.9
    assert b.state == "open"
    clock.t = 10.0
    assert b.state == "half-open"


def test_success_resets_the_count():
    b = Breaker(2, 1.0, Clock())
    b.failure()
    b.success()
    b.failure()
    assert b.state == "closed"


def test_a_burst_of_concurrent_timeouts_is_not_an_outage():
    """Ten calls failing within one 30 ms blip stay below the 1 s span: still closed, and the
    next success forgets them; failures still arriving 1 s after the first one open it."""
    clock = Clock()
    b = Breaker(5, 2.0, clock, min_failure_seconds=1.0)
    for i in range(10):
        clock.t = i * 0.003
        b.before()
        b.failure()
    assert b.state == "closed"
    b.success()
    clock.t = 5.0
    for i in range(5):
        clock.t = 5.0 + i * 0.25  # 5.0, 5.25, 5.5, 5.75, 6.0
        b.before()
        b.failure()
    assert b.state == "open"
    with pytest.raises(CircuitOpen):
        b.before()


def test_the_span_counts_from_the_first_failure_of_the_current_run():
    clock = Clock()
    b = Breaker(2, 2.0, clock, min_failure_seconds=1.0)
    b.failure()  # t = 0
    b.success()  # the run is over
    clock.t = 0.9
    b.failure()  # a new run starts at 0.9
    clock.t = 1.5
    b.failure()  # only 0.6 s into this run
    assert b.state == "closed"
    clock.t = 2.0
    b.failure()
    assert b.state == "open"

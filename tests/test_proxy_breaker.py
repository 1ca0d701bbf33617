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

"""The decision ladder, at every boundary."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from config.model import ThresholdSettings
from scoring.decision import Decision, decide, most_severe

DEFAULT = ThresholdSettings()
BELOW = math.nextafter  # the largest float below a threshold: nextafter(t, 0)


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        (0.0, Decision.ALLOW),
        (BELOW(0.65, 0), Decision.ALLOW),
        (0.65, Decision.MONITOR),
        (BELOW(0.70, 0), Decision.MONITOR),
        (0.70, Decision.CHALLENGE),
        (BELOW(0.80, 0), Decision.CHALLENGE),
        (0.80, Decision.REQUIRE_2FA),
        (BELOW(0.90, 0), Decision.REQUIRE_2FA),
        (0.90, Decision.BLOCK),
        (1.0, Decision.BLOCK),
    ],
)
def test_ladder_boundaries(score: float, expected: Decision) -> None:
    assert decide(score, DEFAULT) is expected


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        (0.3, Decision.ALLOW),
        (0.65, Decision.MONITOR),
        (BELOW(0.70, 0), Decision.MONITOR),
        (0.70, Decision.BLOCK),
        (0.85, Decision.BLOCK),
    ],
)
def test_strict_blocks_from_strict_block(score: float, expected: Decision) -> None:
    assert decide(score, DEFAULT, strict=True) is expected


def test_override_is_just_another_thresholds_object() -> None:
    relaxed = ThresholdSettings(
        monitor=0.8, challenge=0.85, require_2fa=0.9, block=0.95, strict_block=0.9
    )
    assert decide(0.82, relaxed) is Decision.MONITOR
    assert decide(0.82, DEFAULT) is Decision.REQUIRE_2FA
    assert decide(0.91, relaxed, strict=True) is Decision.BLOCK


def test_nan_is_refused_not_allowed() -> None:
    with pytest.raises(ValueError, match="NaN"):
        decide(float("nan"), DEFAULT)


def test_threshold_ordering_is_validated() -> None:
    with pytest.raises(ValidationError):
        ThresholdSettings(challenge=0.6)
    with pytest.raises(ValidationError):
        ThresholdSettings(strict_block=0.5)


def test_severity_order_and_recorded_states() -> None:
    ladder = [
        Decision.ALLOW,
        Decision.MONITOR,
        Decision.CHALLENGE,
        Decision.REQUIRE_2FA,
        Decision.BLOCK,
    ]
    assert [d.severity for d in ladder] == [0, 1, 2, 3, 4]
    assert Decision.LEARNING.severity == Decision.ERROR.severity == 0
    assert not Decision.ALLOW.is_anomaly and Decision.MONITOR.is_anomaly
    assert most_severe(Decision.CHALLENGE, Decision.BLOCK, Decision.ALLOW) is Decision.BLOCK
    assert Decision("REQUIRE_2FA") is Decision.REQUIRE_2FA


@given(st.floats(0, 1), st.floats(0, 1), st.booleans())
def test_ladder_is_monotone(a: float, b: float, strict: bool) -> None:
    lo, hi = sorted((a, b))
    low, high = decide(lo, DEFAULT, strict=strict), decide(hi, DEFAULT, strict=strict)
    assert low.severity <= high.severity


@given(st.floats(0, 1))
def test_never_produces_recorded_states(score: float) -> None:
    assert decide(score, DEFAULT) not in (Decision.LEARNING, Decision.ERROR)

"""Calibration: monotone, in [0, 1], about contamination at 0.65, higher thresholds rarer."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scoring.calibration import fit_calibration

C, A, K = 0.05, 0.65, 100.0


@pytest.fixture(scope="module")
def exp_cal():
    raw = np.random.default_rng(0).exponential(size=200_000)
    return raw, fit_calibration(raw, contamination=C, anchor=A, tail_ratio=K)


def test_share_at_or_above_each_threshold(exp_cal) -> None:
    raw, cal = exp_cal
    s = cal(raw)
    # Exponential raw scores have an exactly exponential tail, so the designed shares hold:
    # share >= t is C * K ** (-(t - A) / (1 - A)): 5 %, 2.59 %, 0.696 %, 0.187 %.
    for t, expected in [(0.65, 0.05), (0.70, 0.02590), (0.80, 0.006962), (0.90, 0.001872)]:
        assert np.mean(s >= t) == pytest.approx(expected, rel=0.12), t


def test_fresh_sample_lands_the_same_way(exp_cal) -> None:
    _, cal = exp_cal
    fresh = cal(np.random.default_rng(9).exponential(size=100_000))
    assert np.mean(fresh >= 0.65) == pytest.approx(0.05, rel=0.1)
    assert np.mean(fresh >= 0.9) < np.mean(fresh >= 0.8) < np.mean(fresh >= 0.7) < 0.05


def test_median_maps_to_half_the_anchor_rescaled(exp_cal) -> None:
    _, cal = exp_cal
    assert cal.one(math.log(2)) == pytest.approx(A * 0.5 / (1 - C), abs=2e-3)


@given(st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=50))
def test_monotone_and_bounded(values) -> None:
    raw = np.random.default_rng(1).normal(size=500)
    cal = fit_calibration(raw, contamination=C, anchor=A, n_knots=33)
    v = np.sort(np.array(values))
    s = cal(v)
    assert np.all(np.diff(s) >= 0)
    assert np.all((s >= 0) & (s <= 1))
    np.testing.assert_allclose([cal.one(x) for x in v], s, atol=1e-12)


def test_log_mode_for_heavy_tails() -> None:
    raw = np.random.default_rng(2).lognormal(sigma=2, size=50_000)
    cal = fit_calibration(raw, contamination=C, anchor=A, log=True)
    s = cal(raw)
    assert np.mean(s >= 0.65) == pytest.approx(0.05, rel=0.05)
    assert np.all(np.diff(cal(np.sort(raw))) >= 0)
    assert cal.one(1e30) == 1.0 and cal.one(0.0) == 0.0


def test_constant_training_scores_stay_finite_and_monotone() -> None:
    cal = fit_calibration(np.full(100, 0.4), contamination=C, anchor=A)
    assert cal.one(0.4) <= A
    assert cal.one(0.39) == 0.0
    assert cal.one(0.41) == 1.0

"""Drift statistics: PSI by hand, KS equal to scipy, edge cases, trend, overall report."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import ks_2samp

from config.model import DriftSettings
from scoring.drift import build_reference, compute_drift, ks_statistic, psi, trend


def test_psi_hand_computed() -> None:
    # alpha 0.5: p = (50.5, 50.5) / 101, q = (90.5, 10.5) / 101
    # PSI = (0.896040 - 0.5) ln(0.896040 / 0.5) + (0.103960 - 0.5) ln(0.103960 / 0.5)
    #     = 0.396040 * 0.583376 + 0.396040 * 1.570598 = 0.853059
    assert psi([50, 50], [90, 10], 0.5) == pytest.approx(0.853059, abs=1e-6)


def test_psi_empty_bins_and_empty_window_are_finite() -> None:
    # p = (10.5, .5, .5, 90.5) / 102, q = (.5, .5, .5, 5.5) / 7  -> 0.380316 by hand
    assert psi([10, 0, 0, 90], [0, 0, 0, 5], 0.5) == pytest.approx(0.380316, abs=1e-6)
    assert math.isfinite(psi([100, 0], [0, 0]))
    assert psi([30, 30], [0, 0]) == 0.0  # empty window vs uniform reference
    assert 0 < psi([25, 75], [50, 150]) < 1e-4  # same shape; smoothing differs by n only


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(-5, 5), min_size=1, max_size=80),
    st.lists(st.floats(-6, 6, allow_nan=False), min_size=1, max_size=80),
)
def test_ks_equals_scipy(a, b) -> None:
    expected = ks_2samp(a, b).statistic
    assert ks_statistic(np.array(a, float), np.array(b)) == pytest.approx(expected, abs=1e-9)


def test_ks_edge_cases() -> None:
    assert ks_statistic(np.array([]), np.array([1.0])) == 0.0
    assert ks_statistic(np.array([3.0]), np.array([3.0])) == 0.0
    assert ks_statistic(np.full(10, 1.0), np.array([2.0, 2.0])) == 1.0
    assert ks_statistic(np.full(10, 1.0), np.array([1.0, 2.0])) == pytest.approx(0.5)


def test_trend() -> None:
    assert trend([0.01, 0.05, 0.1, 0.2], window=6, tolerance=0.01) == "increasing"
    assert trend([0.3, 0.2, 0.1], window=6, tolerance=0.01) == "decreasing"
    assert trend([0.1, 0.105, 0.1, 0.1], window=6, tolerance=0.01) == "stable"
    assert trend([0.1, 0.9], window=6, tolerance=0.01) == "stable"  # too few checks
    assert trend([0.9, 0.5, 0.1, 0.1, 0.1, 0.1], window=3, tolerance=0.01) == "stable"


@pytest.fixture(scope="module")
def reference():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(5000, 6))
    X[:, 5] = 1.0  # constant reference feature
    scores = rng.uniform(size=5000)
    return build_reference(X, scores, bins=10, sample_size=1000, seed=0)


NAMES = [f"f{i}" for i in range(6)]
CFG = DriftSettings()


def test_same_distribution_does_not_drift(reference) -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(2000, 6))
    X[:, 5] = 1.0
    report = compute_drift(reference, NAMES, X, rng.uniform(size=2000), CFG)
    assert not report.is_drifting and report.drift_score < 0.05
    assert report.confidence == "HIGH" and report.sample_size == 2000


def test_shift_drifts_and_names_features(reference) -> None:
    rng = np.random.default_rng(2)
    X = rng.normal(size=(500, 6))
    X[:, 5] = 1.0
    X[:, :3] += 1.5
    X[:10, 4] = 1e9  # out-of-range values still land in the last bin
    report = compute_drift(
        reference, NAMES, X, rng.uniform(0.5, 1.0, size=500), CFG, history=[0.01, 0.02]
    )
    assert report.is_drifting and report.drift_score > CFG.threshold
    assert [f.drifting for f in report.features] == [True, True, True, False, False, False]
    assert report.distribution_drift == pytest.approx(0.5)
    assert report.trend == "increasing" and report.confidence == "MEDIUM"
    assert all(math.isfinite(f.psi) for f in report.features)
    body = report.to_json()
    assert {
        "driftScore",
        "isDrifting",
        "psi",
        "ksStatistic",
        "distributionDrift",
        "scoreDrift",
        "trend",
        "confidence",
        "sampleSize",
        "features",
    } <= body.keys()


def test_no_alert_below_min_samples(reference) -> None:
    X = np.full((20, 6), 50.0)
    report = compute_drift(reference, NAMES, X, np.ones(20), CFG)
    assert report.drift_score > CFG.threshold
    assert not report.is_drifting and report.confidence == "LOW"


def test_empty_window(reference) -> None:
    report = compute_drift(reference, NAMES, np.zeros((0, 6)), np.zeros(0), CFG)
    assert report.sample_size == 0 and not report.is_drifting
    assert math.isfinite(report.drift_score) and 0 <= report.drift_score <= 1

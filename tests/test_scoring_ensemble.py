"""Ensemble scorer: hygiene, batch = single, agreement/confidence, anomalies rank high."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from config.model import ModelSettings
from scoring.ensemble import NONFINITE_INPUT, Scorer
from scoring.training import train_bundle

SETTINGS = ModelSettings.model_validate(
    {
        "autoencoder": {"epochs": 5, "batch_size": 64, "encoding_dim": 4},
        "training": {"min_samples": 100},
    }
)


@pytest.fixture(scope="module")
def scorer():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1500, 3)) @ rng.normal(size=(3, 8)) + 0.2 * rng.normal(size=(1500, 8))
    bundle = train_bundle(X.astype(np.float32), [f"f{i}" for i in range(8)], "t1", SETTINGS)
    return Scorer(bundle), X


def test_batch_equals_single(scorer) -> None:
    sc, X = scorer
    batch = sc.score_batch(X[:40])
    for i in range(40):
        one = sc.score(X[i])
        got = batch[i]
        for field in ("iforest", "autoencoder", "composite", "model_agreement", "confidence"):
            assert getattr(got, field) == pytest.approx(getattr(one, field), abs=1e-9)


def test_agreement_and_confidence_definitions(scorer) -> None:
    sc, X = scorer
    r = sc.score(X[3])
    assert r.model_agreement == pytest.approx(1 - abs(r.iforest - r.autoencoder))
    margin = min(1.0, min(abs(r.composite - t) for t in sc.thresholds.ladder()) / 0.1)
    volume = min(1.0, math.log10(sc.bundle.n_train) / 5)
    assert r.confidence == pytest.approx(0.5 * r.model_agreement + 0.3 * margin + 0.2 * volume)


def test_far_points_outrank_training_points(scorer) -> None:
    sc, X = scorer
    far = X[:5] + 25.0
    assert sc.score_batch(far).composite.min() > np.quantile(sc.score_batch(X).composite, 0.99)
    assert sc.score(far[0]).composite >= sc.thresholds.block


def test_nonfinite_inputs_are_clipped_and_flagged(scorer) -> None:
    sc, X = scorer
    b = sc.bundle
    x = X[0].copy()
    x[[1, 2, 3]] = [np.nan, np.inf, -np.inf]
    expected = X[0].copy()
    expected[[1, 2, 3]] = [b.baseline[1], b.train_max[2], b.train_min[3]]
    r, clean = sc.score(x), sc.score(expected)
    assert r.flags == (NONFINITE_INPUT,)
    assert r.composite == pytest.approx(clean.composite, abs=1e-12)
    assert r.confidence == pytest.approx(clean.confidence / 2)
    assert sc.score_batch(np.vstack([x, X[0]])).flags == ((NONFINITE_INPUT,), ())


def test_wrong_length_is_a_clear_error(scorer) -> None:
    sc, _ = scorer
    with pytest.raises(ValueError, match="expected 8 features"):
        sc.score(np.zeros(7))


@settings(max_examples=80, deadline=None)
@given(arrays(np.float64, 8, elements=st.floats(allow_nan=True, allow_infinity=True)))
def test_any_vector_scores_finite_in_unit_interval(scorer, x) -> None:
    sc, _ = scorer
    r = sc.score(x)
    values = (r.iforest, r.autoencoder, r.composite, r.model_agreement, r.confidence)
    assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in values)

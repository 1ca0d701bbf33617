"""Explanations: exact occlusion, planted causes found, spec JSON shape, fidelity."""

import numpy as np
import pytest

from config.model import ModelSettings
from scoring.ensemble import Scorer
from scoring.explain import explain, fidelity, occlusion_deltas
from scoring.training import train_bundle

SETTINGS = ModelSettings.model_validate(
    {
        "autoencoder": {"epochs": 5, "batch_size": 64, "encoding_dim": 4},
        "training": {"min_samples": 100},
    }
)
NAMES = [
    "recent_request_rate",
    "session_switch_rate",
    "ip_diversity",
    "hour_sin",
    "hour_cos",
    "bytes_out",
    "error_rate",
    "endpoint_entropy",
]


@pytest.fixture(scope="module")
def scorer():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1500, 8)).astype(np.float32)
    return Scorer(train_bundle(X, NAMES, "t1", SETTINGS)), X


def _planted(X: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rows, cols = X[:n].copy(), rng.integers(0, 8, size=n)
    rows[np.arange(n), cols] += rng.choice([-1, 1], n) * rng.uniform(6, 10, n)
    return rows, cols


def test_deltas_equal_explicit_rescoring(scorer) -> None:
    sc, X = scorer
    x = _planted(X, 1, 3)[0][0]
    deltas, result = occlusion_deltas(sc, x)
    for j in range(8):
        reset = x.copy()
        reset[j] = sc.bundle.baseline[j]
        assert deltas[j] == pytest.approx(result.composite - sc.score(reset).composite, abs=1e-9)


def test_planted_feature_is_the_top_factor(scorer) -> None:
    sc, X = scorer
    rows, cols = _planted(X, 30, 4)
    top = [explain(sc, r).top_features[0].feature for r in rows]
    hits = sum(t == NAMES[c] for t, c in zip(top, cols, strict=True))
    assert hits >= 27


def test_json_matches_the_spec_shape(scorer) -> None:
    sc, X = scorer
    x = X[0].copy()
    x[0] = 9.0
    e = explain(sc, x)
    body = e.to_json()
    assert set(body) == {"topFeatures", "explanation", "modelAgreement", "confidence"}
    assert set(body["topFeatures"][0]) == {"feature", "contribution", "value", "normalizedValue"}
    assert body["topFeatures"][0]["feature"] == "recent_request_rate"
    assert isinstance(body["topFeatures"][0]["normalizedValue"], str)
    shares = [f.contribution for f in e.top_features]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1 + 1e-12
    assert len(e.top_features) <= 5
    assert "recent request rate" in e.explanation and "agree" in e.explanation


def test_sentence_names_severity(scorer) -> None:
    sc, X = scorer
    far = X[0] + 30
    assert explain(sc, far).explanation.startswith("CRITICAL anomaly")
    assert "Normal behaviour" in explain(sc, sc.bundle.baseline).explanation


def test_fidelity_on_planted_anomalies(scorer) -> None:
    sc, X = scorer
    rows, _ = _planted(X, 60, 5)
    assert fidelity(sc, rows) >= 0.9

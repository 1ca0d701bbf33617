"""Compiled Isolation Forest: equal to scikit-learn, vectorised, depth limit as documented."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from config.model import IsolationForestSettings
from scoring.forest import average_path_length, compile_forest, fit_isolation_forest


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(2000, 10)).astype(np.float32)
    X[:, 3] = np.round(X[:, 3])  # ties / discrete feature
    model = fit_isolation_forest(X, IsolationForestSettings(seed=7))
    return X, model, compile_forest(model, 12)


def test_average_path_length_hand_values() -> None:
    # c(3) = 2 (ln 2 + gamma) - 2 * 2 / 3, c(256) = 2 (ln 255 + gamma) - 2 * 255 / 256
    expected = [
        0.0,
        0.0,
        1.0,
        2 * (math.log(2) + 0.5772156649015329) - 4 / 3,
        2 * (math.log(255) + 0.5772156649015329) - 510 / 256,
    ]
    got = average_path_length(np.array([0, 1, 2, 3, 256]))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_equals_sklearn_on_10000_rows(fitted) -> None:
    X, model, forest = fitted
    rng = np.random.default_rng(2)
    Y = (rng.normal(size=(10_000, 10)) * rng.choice([0.5, 1, 4], size=(10_000, 1))).astype(
        np.float32
    )
    Y[:100, 3] = np.round(Y[:100, 3])
    Y[100:200] = X[:100]  # training rows hit thresholds exactly
    np.testing.assert_allclose(forest.score(Y), -model.score_samples(Y), rtol=0, atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(arrays(np.float32, 10, elements=st.floats(-50, 50, width=32)))
def test_one_row_equals_sklearn_and_batch(fitted, row) -> None:
    _, model, forest = fitted
    expected = -model.score_samples(row[None, :])[0]
    assert forest.score_one(row) == pytest.approx(expected, abs=1e-9)
    assert forest.score(row[None, :])[0] == pytest.approx(expected, abs=1e-9)


def test_outliers_rank_above_inliers() -> None:
    rng = np.random.default_rng(3)
    inliers = rng.normal(size=(500, 4)).astype(np.float32)
    model = fit_isolation_forest(inliers, IsolationForestSettings(seed=0))
    forest = compile_forest(model)
    outliers = np.array([[8, 8, 8, 8], [-9, -9, 9, 9], [12, -12, 12, -12]], dtype=np.float32)
    core = inliers[np.linalg.norm(inliers, axis=1) < 2.0]
    assert forest.score(outliers).min() > forest.score(core).max()


def _reference_path(tree, x: np.ndarray, limit: int) -> float:
    """Independent recursive walk: stop at a leaf or at depth ``limit``, add c(n)."""
    node, depth = 0, 0
    while tree.children_left[node] != -1 and depth < limit:
        go_left = x[tree.feature[node]] <= tree.threshold[node]
        node = tree.children_left[node] if go_left else tree.children_right[node]
        depth += 1
    return depth + float(average_path_length(tree.n_node_samples[node]))


@pytest.mark.parametrize("limit", [1, 3, 5])
def test_max_depth_cuts_trees_like_a_height_limit(fitted, limit: int) -> None:
    X, model, _ = fitted
    forest = compile_forest(model, limit)
    assert forest.depth == limit
    rows = X[:25]
    c = float(average_path_length(model.max_samples_))
    expected = [
        2 ** (-np.mean([_reference_path(e.tree_, r, limit) for e in model.estimators_]) / c)
        for r in rows
    ]
    np.testing.assert_allclose(forest.score(rows), expected, rtol=0, atol=1e-12)


def test_default_depth_is_sklearns_height_limit(fitted) -> None:
    _, model, forest = fitted
    assert forest.depth == 8 == math.ceil(math.log2(256))
    assert forest.n_trees == 100 and model.max_samples_ == 256


def test_trace_leaves_match_score(fitted) -> None:
    X, _, forest = fitted
    slots, leaves = forest.trace(X[5])
    assert slots.shape == (forest.depth, forest.n_trees)
    assert forest.anomaly_score(leaves) == pytest.approx(forest.score_one(X[5]), abs=1e-15)

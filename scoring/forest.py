"""Isolation Forest: trained by scikit-learn, scored by a compiled, fully vectorised copy.

scikit-learn's ``score_samples`` walks each tree in turn through Python/joblib and costs
milliseconds per call. Here every fitted tree is re-laid into a *complete* binary tree of height
``D`` (heap order: the children of slot ``i`` are ``2i + 1`` and ``2i + 2``), so one row, or a
batch, descends all trees at once in exactly ``D`` numpy steps.

A scikit-learn leaf at depth ``d < D`` is padded with pass-through slots (threshold ``+inf``: every
value goes left) down to level ``D``; the leftmost slot below it carries the leaf's path length
``d + c(n)``, where ``n`` is its training-sample count and ``c`` the average path length of an
unsuccessful binary-search-tree search. scikit-learn computes the same quantity per leaf, so the
mean path length, and with it ``2 ** (-E[h] / c(psi))``, agree with ``-score_samples`` to rounding.

**max_depth.** scikit-learn's ``IsolationForest`` has no depth parameter: it grows each tree to
``ceil(log2(max_samples))`` (8 for 256 samples, the paper's height limit). The spec's "max depth 12"
is applied when compiling: a node at depth ``max_depth`` becomes a leaf scoring ``depth + c(n)``,
which is exactly how a tree grown with that height limit scores. As 12 >= 8, the default leaves
scikit-learn's trees untouched.

Scores are oriented like the paper (unlike scikit-learn): **higher = more anomalous**, in (0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from config.model import IsolationForestSettings

if TYPE_CHECKING:  # scikit-learn is for training only: the serving process never imports it
    from sklearn.ensemble import IsolationForest

__all__ = [
    "CompiledForest",
    "as_float32",
    "average_path_length",
    "compile_forest",
    "fit_isolation_forest",
]

_EULER_GAMMA = 0.5772156649015329


_F32_MAX = float(np.finfo(np.float32).max)


def as_float32(X: np.ndarray) -> np.ndarray:
    """Rows as float32 like scikit-learn, saturating (not overflowing) beyond float32's range."""
    return np.clip(X, -_F32_MAX, _F32_MAX).astype(np.float32)


def average_path_length(n: np.ndarray | float) -> np.ndarray:
    """Average path length ``c(n)`` of an unsuccessful search in a BST built from ``n`` points.

    ``c(n) = 2 H(n - 1) - 2 (n - 1) / n`` with ``H(i) ~ ln(i) + gamma``; ``c(1) = 0``, ``c(2) = 1``.
    """
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n)
    big = n > 2
    out[n == 2] = 1.0
    nb = n[big]
    out[big] = 2.0 * (np.log(nb - 1.0) + _EULER_GAMMA) - 2.0 * (nb - 1.0) / nb
    return out


def fit_isolation_forest(
    X: np.ndarray, settings: IsolationForestSettings, *, seed: int | None = None
) -> IsolationForest:
    """Fit scikit-learn's forest with the configured trees, sample size and contamination."""
    from sklearn.ensemble import IsolationForest

    model = IsolationForest(
        n_estimators=settings.n_trees,
        max_samples=min(settings.sample_size, X.shape[0]),
        contamination=settings.contamination,
        random_state=settings.seed if seed is None else seed,
        n_jobs=1,
    )
    return model.fit(X)


@dataclass(frozen=True, eq=False)
class CompiledForest:
    """All trees of a forest as complete binary trees in flat arrays.

    Attributes
    ----------
    feature
        ``int32[n_trees, 2**depth - 1]``: feature tested at each internal slot (0 for padding).
    threshold
        ``float64[n_trees, 2**depth - 1]``: go left when ``x <= threshold`` (``+inf`` for padding).
    leaf_value
        ``float64[n_trees, 2**depth]``: path length ``d + c(n)`` of each bottom slot.
    normaliser
        ``c(max_samples)``, the expected path length the scores are normalised by.
    """

    feature: np.ndarray
    threshold: np.ndarray
    leaf_value: np.ndarray
    normaliser: float

    def __post_init__(self) -> None:
        n_trees, n_internal = self.feature.shape
        object.__setattr__(self, "_feat", np.ascontiguousarray(self.feature.ravel(), np.intp))
        object.__setattr__(self, "_thr", np.ascontiguousarray(self.threshold.ravel()))
        object.__setattr__(self, "_leaf", np.ascontiguousarray(self.leaf_value.ravel()))
        # Global index of child = 2 * idx - shift + (1 or 2), with shift = tree offset.
        offsets = np.arange(n_trees, dtype=np.intp) * n_internal
        object.__setattr__(self, "_offsets", offsets)
        object.__setattr__(self, "_shift", offsets - 1)
        leaf_base = np.arange(n_trees, dtype=np.intp) * (n_internal + 1) - n_internal
        object.__setattr__(self, "_leaf_base", leaf_base - offsets)

    @property
    def n_trees(self) -> int:
        return int(self.feature.shape[0])

    @property
    def depth(self) -> int:
        return int(self.feature.shape[1] + 1).bit_length() - 1

    def path_lengths(self, X: np.ndarray) -> np.ndarray:
        """Mean path length over the trees, ``float64[n_rows]``; X is cast to float32 first."""
        X = np.ascontiguousarray(as_float32(X))
        if X.ndim == 1:
            return np.array([self._leaves_one(X).mean()])
        return self._leaves_batch(X).mean(axis=1)

    def score(self, X: np.ndarray) -> np.ndarray:
        """Anomaly score ``2 ** (-E[h] / c(psi))`` per row: higher = more anomalous."""
        return np.exp2(-self.path_lengths(X) / self.normaliser)

    def score_one(self, x: np.ndarray) -> float:
        """Anomaly score of one float32 row (the hot path: ``depth`` numpy steps)."""
        return self.anomaly_score(self._leaves_one(x))

    def trace(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One float32 row's internal slot per level ``intp[depth, n_trees]`` and leaf values."""
        feat, thr, shift = self._feat, self._thr, self._shift
        slots = np.empty((self.depth, self.n_trees), dtype=np.intp)
        idx = self._offsets
        for level in range(self.depth):
            slots[level] = idx
            idx = 2 * idx - shift + (x[feat[idx]] > thr[idx])
        return slots, self._leaf[idx + self._leaf_base]

    def anomaly_score(self, leaves: np.ndarray) -> float:
        """Anomaly score from one row's per-tree path lengths."""
        return float(2.0 ** (-leaves.mean() / self.normaliser))

    def split_at(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Feature and threshold of the given global internal slots."""
        return self._feat[slots], self._thr[slots]

    def leaves_with_override(
        self, x: np.ndarray, trees: np.ndarray, features: np.ndarray, values: np.ndarray
    ) -> np.ndarray:
        """Path length in tree ``trees[k]`` of ``x`` with ``features[k]`` set to ``values[k]``.

        Evaluates many (tree, single-feature change) pairs at once; used for exact occlusion.
        """
        feat, thr, shift = self._feat, self._thr, self._shift[trees]
        idx = self._offsets[trees]
        for _ in range(self.depth):
            f = feat[idx]
            v = np.where(f == features, values, x[f])
            idx = 2 * idx - shift + (v > thr[idx])
        return self._leaf[idx + self._leaf_base[trees]]

    def _leaves_one(self, x: np.ndarray) -> np.ndarray:
        feat, thr, shift = self._feat, self._thr, self._shift
        idx = self._offsets
        for _ in range(self.depth):
            idx = 2 * idx - shift + (x[feat[idx]] > thr[idx])
        return self._leaf[idx + self._leaf_base]

    def _leaves_batch(self, X: np.ndarray) -> np.ndarray:
        n_rows, n_features = X.shape
        flat = X.ravel()
        row_base = (np.arange(n_rows, dtype=np.intp) * n_features)[:, None]
        idx = np.broadcast_to(self._offsets, (n_rows, self.n_trees))
        for _ in range(self.depth):
            v = flat[self._feat[idx] + row_base]
            idx = 2 * idx - self._shift + (v > self._thr[idx])
        return self._leaf[idx + self._leaf_base]


def compile_forest(model: IsolationForest, max_depth: int = 12) -> CompiledForest:
    """Re-lay a fitted scikit-learn forest as complete trees cut at ``max_depth``."""
    if model._max_features != model.n_features_in_:  # noqa: SLF001 - feature subsampling unsupported
        raise ValueError("compiled forests need max_features=1.0")
    trees = [est.tree_ for est in model.estimators_]
    depth = max(1, min(max_depth, max(t.max_depth for t in trees)))
    n_internal = 2**depth - 1
    feature = np.zeros((len(trees), n_internal), dtype=np.int32)
    threshold = np.full((len(trees), n_internal), np.inf)
    leaf_value = np.zeros((len(trees), n_internal + 1))
    for k, tree in enumerate(trees):
        _fill_tree(tree, depth, feature[k], threshold[k], leaf_value[k])
    normaliser = float(average_path_length(model.max_samples_))
    return CompiledForest(feature, threshold, leaf_value, normaliser or 1.0)


def _fill_tree(tree, depth: int, feature, threshold, leaf_value) -> None:  # noqa: ANN001
    """Copy one scikit-learn tree into heap order, padding early leaves down to ``depth``."""
    path_len = average_path_length(tree.n_node_samples)
    stack = [(0, 0, 0)]  # (sklearn node, heap slot, depth)
    while stack:
        node, slot, d = stack.pop()
        left = tree.children_left[node]
        if left == -1 or d == depth:
            below = depth - d
            leaf_value[(slot << below) + (1 << below) - 1 - (2**depth - 1)] = d + path_len[node]
            continue
        feature[slot] = tree.feature[node]
        threshold[slot] = tree.threshold[node]
        stack.append((left, 2 * slot + 1, d + 1))
        stack.append((tree.children_right[node], 2 * slot + 2, d + 1))

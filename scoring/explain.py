"""Explanations: which features drove a composite score, measured by exact occlusion.

The contribution of feature ``j`` is how much the composite drops when ``x_j`` alone is reset to
its training median (the baseline): ``delta_j = composite(x) - composite(x with x_j := median_j)``,
through both models, their calibrations and the ensemble. It is computed exactly, not estimated:

* **forest**: only trees whose path for ``x`` tests ``j`` at a split where ``x_j`` and the
  baseline fall on different sides can change; just those (tree, feature) pairs are re-descended,
  all at once;
* **autoencoder**: the ``n_features`` occluded rows form one small batch (two matmuls).

Positive deltas are normalised to shares that sum to 1 (``contribution``); ``top_k`` features by
share are reported with their value, baseline and standardised deviation from the training mean
(``normalizedValue``, formatted like the spec's example). Fidelity check: :func:`fidelity` resets
the top 3 together and counts how often the composite falls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from scoring.ensemble import Scorer, ScoreResult
from scoring.forest import as_float32

_NOISE = 1e-12

__all__ = ["Explanation", "FeatureContribution", "explain", "fidelity", "occlusion_deltas"]


@dataclass(frozen=True, slots=True)
class FeatureContribution:
    """One feature's part in a score."""

    feature: str
    contribution: float
    delta: float
    value: float
    baseline: float
    normalized_value: float


@dataclass(frozen=True)
class Explanation:
    """Why a vector scored as it did."""

    top_features: tuple[FeatureContribution, ...]
    explanation: str
    model_agreement: float
    confidence: float
    composite: float

    def to_json(self) -> dict[str, Any]:
        """The spec's explanation object (camelCase)."""
        return {
            "topFeatures": [
                {
                    "feature": f.feature,
                    "contribution": round(f.contribution, 4),
                    "value": f.value,
                    "normalizedValue": f"{f.normalized_value:.3f}",
                }
                for f in self.top_features
            ],
            "explanation": self.explanation,
            "modelAgreement": round(self.model_agreement, 4),
            "confidence": round(self.confidence, 4),
        }


def occlusion_deltas(scorer: Scorer, vector: np.ndarray) -> tuple[np.ndarray, ScoreResult]:
    """``delta_j`` for every feature (see module docstring) and the vector's own scores."""
    x, flags = scorer.clean(vector)
    x32 = as_float32(x)
    slots, leaves = scorer.bundle.forest.trace(x32)
    result = scorer.finish(x, flags, scorer.bundle.forest.anomaly_score(leaves))
    sf = scorer.bundle.calibration["iforest"](_forest_occluded(scorer, x32, slots, leaves))
    sa = scorer.bundle.calibration["autoencoder"](_autoencoder_occluded(scorer, x))
    deltas = result.composite - scorer.mix(sf, sa)
    deltas[np.abs(deltas) < _NOISE] = 0.0  # scalar vs vector rounding, not a contribution
    return deltas, result


def _forest_occluded(
    scorer: Scorer, x32: np.ndarray, slots: np.ndarray, leaves: np.ndarray
) -> np.ndarray:
    """Forest anomaly score of ``x`` with each feature in turn set to the baseline.

    A (tree, feature) pair can only change when the baseline falls on the other side of a split
    on that feature along x's path; only those pairs are re-descended.
    """
    forest, n_features = scorer.bundle.forest, scorer.n_features
    base = scorer.bundle.baseline
    feats, thr = forest.split_at(slots)
    flips = (x32[feats] > thr) != (base[feats] > thr)
    keys = np.unique(np.nonzero(flips)[1] * n_features + feats[flips])
    trees, fs = np.divmod(keys, n_features)
    after = forest.leaves_with_override(x32, trees, fs, base[fs])
    change = np.bincount(fs, weights=after - leaves[trees], minlength=n_features)
    return np.exp2(-(leaves.sum() + change) / forest.n_trees / forest.normaliser)


def _autoencoder_occluded(scorer: Scorer, x: np.ndarray) -> np.ndarray:
    """Autoencoder error of ``x`` with each feature in turn set to the baseline.

    Row j differs from x in one input, so its hidden pre-activation is a rank-one update.
    """
    ae = scorer.bundle.autoencoder
    z, zb = ae.standardise(x), ae.standardise(scorer.bundle.baseline)
    w1t, w2t = ae._w1t, ae._w2t  # noqa: SLF001 - float64 copies made once per bundle
    pre = (z @ w1t + ae._b1) + (zb - z)[:, None] * w1t  # noqa: SLF001
    diff = np.tanh(pre) @ w2t + ae._b2 - z  # noqa: SLF001
    diag = np.arange(len(z))
    diff[diag, diag] += z - zb
    return np.square(diff).mean(axis=1)


def explain(scorer: Scorer, vector: np.ndarray, *, top_k: int | None = None) -> Explanation:
    """Explain one vector's composite score."""
    top_k = top_k or scorer.bundle.settings.explanation.top_k
    deltas, result = occlusion_deltas(scorer, vector)
    x, _ = scorer.clean(vector)
    top = _top_features(scorer, x, deltas, top_k)
    return Explanation(
        top,
        _sentence(scorer, result, top),
        result.model_agreement,
        result.confidence,
        result.composite,
    )


def _top_features(
    scorer: Scorer, x: np.ndarray, deltas: np.ndarray, k: int
) -> tuple[FeatureContribution, ...]:
    positive = np.maximum(deltas, 0.0)
    total = positive.sum()
    if total <= 0.0:
        return ()
    ae, b = scorer.bundle.autoencoder, scorer.bundle
    scale = np.where(ae.inv_scale > 0, ae.inv_scale, 1.0)
    order = np.argsort(-positive, kind="stable")[:k]
    return tuple(
        FeatureContribution(
            feature=b.feature_names[j],
            contribution=float(positive[j] / total),
            delta=float(deltas[j]),
            value=float(x[j]),
            baseline=float(b.baseline[j]),
            normalized_value=float((x[j] - ae.mean[j]) * scale[j]),
        )
        for j in order
        if positive[j] > 0.0
    )


def _severity(scorer: Scorer, composite: float) -> str:
    t = scorer.thresholds
    for level, name in (
        (t.block, "CRITICAL"),
        (t.require_2fa, "HIGH"),
        (t.challenge, "MEDIUM"),
        (t.monitor, "LOW"),
    ):
        if composite >= level:
            return name
    return "NO"


def _agreement_phrase(r: ScoreResult) -> str:
    pct = f"{r.model_agreement:.0%} agreement"
    if r.model_agreement >= 0.9:
        return f"both detection models strongly agree ({pct})"
    if r.model_agreement >= 0.7:
        return f"both detection models agree ({pct})"
    lead = "isolation forest" if r.iforest > r.autoencoder else "autoencoder"
    return f"mainly the {lead} flags it ({pct})"


def _sentence(scorer: Scorer, r: ScoreResult, top: tuple[FeatureContribution, ...]) -> str:
    severity = _severity(scorer, r.composite)
    head = f"{severity} anomaly (score {r.composite:.2f})"
    if severity == "NO":
        head = f"Normal behaviour (score {r.composite:.2f})"
    factors = "; ".join(
        f"{f.feature.replace('_', ' ')} = {f.value:.4g} ({f.contribution:.1%} contribution, "
        f"typical {f.baseline:.4g})"
        for f in top[:3]
    )
    driven = f" driven by {top[0].feature.replace('_', ' ')}" if top else ""
    tail = f" Key factors: {factors}." if factors else " No single feature stands out."
    return f"{head}{driven}: {_agreement_phrase(r)}.{tail}"


def fidelity(scorer: Scorer, X: np.ndarray, *, k: int = 3) -> float:
    """Share of rows whose composite falls when their top-``k`` features are reset together.

    A row without any positive contribution counts as a failure.
    """
    X = np.asarray(X, dtype=np.float64)
    if len(X) == 0:
        return 0.0
    lowered = 0
    for row in X:
        deltas, result = occlusion_deltas(scorer, row)
        top = np.argsort(-deltas, kind="stable")[:k]
        top = top[deltas[top] > 0]
        if top.size == 0:
            continue
        reset = scorer.clean(row)[0].copy()
        reset[top] = scorer.bundle.baseline[top]
        lowered += scorer.score(reset).composite < result.composite
    return lowered / len(X)

"""Drift statistics: recent feature vectors and scores against the training reference.

**PSI** (population stability index) per feature over ``bins`` quantile bins of the training
data: ``PSI = sum_i (q_i - p_i) * ln(q_i / p_i)``. Bins are open-ended at both ends, so values
outside the training range fall into the first or last bin. Both sides are smoothed with the same
pseudo-count ``alpha`` per bin (``p_i = (n_i + alpha) / (n + alpha * bins)``, default 0.5, the
Jeffreys prior), so an empty bin, an empty window or a constant reference all give a finite PSI;
an empty window compares a uniform histogram with the reference. Repeated quantile cuts (discrete
features) leave bins empty on both sides, which then contribute nothing.

**KS** per feature: the two-sample Kolmogorov-Smirnov statistic, the largest gap between the two
empirical CDFs (what ``scipy.stats.ks_2samp`` reports as ``statistic``), against a uniform
sample of training rows kept in the bundle. An empty side gives 0 (no evidence).

A feature **drifts** when its PSI reaches ``psi_feature_threshold`` (0.2, the customary "major
shift") or its KS reaches ``ks_feature_threshold``. **Distribution drift** is the share of drifting
features; **score drift** is the PSI of the composite scores, scaled to [0, 1] by
``score_psi_scale``. The **overall drift score** is their weighted mean (``feature_weight``),
in [0, 1]; above ``threshold`` (0.15) and with at least ``min_samples`` recent vectors it alerts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from config.model import DriftSettings

__all__ = [
    "DriftReference",
    "DriftReport",
    "FeatureDrift",
    "Histogram",
    "build_reference",
    "compute_drift",
    "ks_statistic",
    "psi",
    "trend",
]

Confidence = Literal["HIGH", "MEDIUM", "LOW"]
Trend = Literal["increasing", "decreasing", "stable"]


@dataclass(frozen=True, eq=False)
class Histogram:
    """Reference distribution of ``m`` variables: quantile cuts, counts and a sorted sample.

    ``cuts`` is ``float64[m, bins - 1]``, ``counts`` ``float64[m, bins]``, ``sample``
    ``float64[m, s]`` (each row sorted).
    """

    cuts: np.ndarray
    counts: np.ndarray
    sample: np.ndarray

    def bin_counts(self, row: int, values: np.ndarray) -> np.ndarray:
        """Counts of ``values`` in the bins of variable ``row``; bin i is ``(cut[i-1], cut[i]]``."""
        idx = np.searchsorted(self.cuts[row], values, side="left")
        return np.bincount(idx, minlength=self.counts.shape[1]).astype(np.float64)


@dataclass(frozen=True, eq=False)
class DriftReference:
    """What the drift check compares with: per-feature histograms and the composite scores'."""

    features: Histogram
    scores: Histogram


def build_reference(
    X: np.ndarray, scores: np.ndarray, *, bins: int, sample_size: int, seed: int
) -> DriftReference:
    """Reference histograms and KS samples from the training rows and their composite scores."""
    X = np.asarray(X, dtype=np.float64)
    rng = np.random.default_rng(seed)
    take = rng.choice(len(X), size=min(sample_size, len(X)), replace=False)
    feats = _histogram(X.T, bins, take)
    score = _histogram(np.asarray(scores, dtype=np.float64)[None, :], bins, take)
    return DriftReference(feats, score)


def _histogram(V: np.ndarray, bins: int, take: np.ndarray) -> Histogram:
    cuts = np.quantile(V, np.linspace(0.0, 1.0, bins + 1)[1:-1], axis=1).T
    cuts = np.ascontiguousarray(cuts.reshape(len(V), bins - 1))
    sample = np.sort(V[:, take], axis=1)
    hist = Histogram(cuts, np.zeros((len(V), bins)), sample)
    counts = np.stack([hist.bin_counts(i, V[i]) for i in range(len(V))])
    return Histogram(cuts, counts, sample)


def psi(reference: np.ndarray, current: np.ndarray, alpha: float = 0.5) -> float:
    """PSI between two count vectors over the same bins, both smoothed by ``alpha`` per bin."""
    ref = np.asarray(reference, dtype=np.float64) + alpha
    cur = np.asarray(current, dtype=np.float64) + alpha
    p, q = ref / ref.sum(), cur / cur.sum()
    return float(np.sum((q - p) * np.log(q / p)))


def ks_statistic(reference: np.ndarray, current: np.ndarray) -> float:
    """Two-sample KS statistic ``max |F_ref - F_cur|``; 0.0 when either side is empty."""
    a = np.sort(np.asarray(reference, dtype=np.float64))
    b = np.sort(np.asarray(current, dtype=np.float64))
    if a.size == 0 or b.size == 0:
        return 0.0
    both = np.concatenate([a, b])
    gap = np.searchsorted(a, both, side="right") / a.size
    gap -= np.searchsorted(b, both, side="right") / b.size
    return float(np.abs(gap).max())


def trend(history: Sequence[float], *, window: int, tolerance: float) -> Trend:
    """Direction of the last ``window`` drift scores (least-squares slope per check)."""
    y = np.asarray(history[-window:], dtype=np.float64)
    if y.size < 3:
        return "stable"
    x = np.arange(y.size, dtype=np.float64) - (y.size - 1) / 2.0
    slope = float(np.dot(x, y - y.mean()) / np.dot(x, x))
    if slope > tolerance:
        return "increasing"
    if slope < -tolerance:
        return "decreasing"
    return "stable"


@dataclass(frozen=True)
class FeatureDrift:
    """Drift statistics of one feature."""

    feature: str
    psi: float
    ks: float
    drifting: bool


@dataclass(frozen=True)
class DriftReport:
    """One drift check (stored by the lifecycle, served by the drift status endpoint)."""

    sample_size: int
    drift_score: float
    is_drifting: bool
    distribution_drift: float
    psi_mean: float
    psi_max: float
    ks_max: float
    score_psi: float
    score_ks: float
    score_drift: float
    trend: Trend
    confidence: Confidence
    features: tuple[FeatureDrift, ...]

    def to_json(self) -> dict[str, Any]:
        """camelCase dict for the API and the stored check."""
        return {
            "sampleSize": self.sample_size,
            "driftScore": self.drift_score,
            "isDrifting": self.is_drifting,
            "distributionDrift": self.distribution_drift,
            "psi": {"mean": self.psi_mean, "max": self.psi_max},
            "ksStatistic": self.ks_max,
            "scoreDrift": {"psi": self.score_psi, "ks": self.score_ks, "score": self.score_drift},
            "trend": self.trend,
            "confidence": self.confidence,
            "features": [
                {"feature": f.feature, "psi": f.psi, "ks": f.ks, "drifting": f.drifting}
                for f in self.features
            ],
        }


def compute_drift(
    reference: DriftReference,
    feature_names: Sequence[str],
    X: np.ndarray,
    scores: np.ndarray,
    settings: DriftSettings,
    *,
    history: Sequence[float] = (),
) -> DriftReport:
    """Compare a recent window (rows ``X`` and their composite ``scores``) with the reference.

    ``history`` holds earlier checks' drift scores, oldest first; the trend includes this check.
    """
    X = np.asarray(X, dtype=np.float64).reshape(-1, len(feature_names))
    n = len(X)
    feats = tuple(
        _feature_drift(reference.features, i, name, X[:, i], settings)
        for i, name in enumerate(feature_names)
    )
    share = sum(f.drifting for f in feats) / max(1, len(feats))
    s = np.asarray(scores, dtype=np.float64).ravel()
    score_psi = psi(
        reference.scores.counts[0], reference.scores.bin_counts(0, s), settings.smoothing
    )
    score_drift = min(1.0, score_psi / settings.score_psi_scale)
    w = settings.feature_weight
    overall = float(np.clip(w * share + (1.0 - w) * score_drift, 0.0, 1.0))
    psis = np.array([f.psi for f in feats]) if feats else np.zeros(1)
    return DriftReport(
        sample_size=n,
        drift_score=overall,
        is_drifting=n >= settings.min_samples and overall > settings.threshold,
        distribution_drift=share,
        psi_mean=float(psis.mean()),
        psi_max=float(psis.max()),
        ks_max=max((f.ks for f in feats), default=0.0),
        score_psi=score_psi,
        score_ks=ks_statistic(reference.scores.sample[0], s),
        score_drift=score_drift,
        trend=trend(
            [*history, overall], window=settings.trend_window, tolerance=settings.trend_tolerance
        ),
        confidence=_confidence(n, settings),
        features=feats,
    )


def _feature_drift(
    ref: Histogram, i: int, name: str, values: np.ndarray, s: DriftSettings
) -> FeatureDrift:
    p = psi(ref.counts[i], ref.bin_counts(i, values), s.smoothing)
    k = ks_statistic(ref.sample[i], values)
    drifting = p >= s.psi_feature_threshold or k >= s.ks_feature_threshold
    return FeatureDrift(name, p, k, bool(drifting))


def _confidence(n: int, s: DriftSettings) -> Confidence:
    if n < s.min_samples:
        return "LOW"
    return "HIGH" if n >= s.high_confidence_samples else "MEDIUM"

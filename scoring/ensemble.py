"""The ensemble scorer: a vector -> calibrated model scores, composite, agreement, confidence.

``composite = C(w_f * s_forest + w_a * s_autoencoder)`` where ``s_*`` are the calibrated per-model
scores, ``w`` the configured weights normalised to sum 1, and ``C`` the composite's own calibration
(monotone; see :mod:`scoring.calibration`). Weights are frozen into the bundle with ``C``.

**Model agreement** is ``1 - |s_forest - s_autoencoder|``. **Confidence** is
``0.5 * agreement + 0.3 * margin + 0.2 * volume`` where ``margin = min(1, d / 0.1)`` with ``d`` the
distance from the composite to the nearest ladder threshold (a score right at a threshold is the
least certain decision), and ``volume = min(1, log10(n_train) / 5)`` (100k training rows count as
full volume). Any input-hygiene flag halves the confidence.

**Input hygiene.** Vectors are finite by contract but defended: NaN becomes the training median,
``+inf`` / ``-inf`` the training maximum / minimum, and the result carries the flag
``nonfinite_input_clipped``. A score that still came out non-finite is reported as 1.0 with the flag
``nonfinite_score`` - never a crash, never a silent NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from config.model import ThresholdSettings
from scoring.bundle import ModelBundle
from scoring.forest import as_float32

__all__ = ["BatchScores", "ScoreResult", "Scorer"]

NONFINITE_INPUT = "nonfinite_input_clipped"
NONFINITE_SCORE = "nonfinite_score"
_MARGIN_FULL = 0.1
_VOLUME_FULL_LOG10 = 5.0


@dataclass(frozen=True, slots=True)
class ScoreResult:
    """Scores of one vector, all in [0, 1], higher = more anomalous (confidence aside)."""

    iforest: float
    autoencoder: float
    composite: float
    model_agreement: float
    confidence: float
    flags: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class BatchScores:
    """Scores of many vectors as arrays (``flags[i]`` belongs to row i)."""

    iforest: np.ndarray
    autoencoder: np.ndarray
    composite: np.ndarray
    model_agreement: np.ndarray
    confidence: np.ndarray
    flags: tuple[tuple[str, ...], ...]

    def __len__(self) -> int:
        return len(self.composite)

    def __getitem__(self, i: int) -> ScoreResult:
        return ScoreResult(
            float(self.iforest[i]),
            float(self.autoencoder[i]),
            float(self.composite[i]),
            float(self.model_agreement[i]),
            float(self.confidence[i]),
            self.flags[i],
        )


class Scorer:
    """Scores vectors with one bundle (immutable; share it between tasks freely)."""

    def __init__(self, bundle: ModelBundle, thresholds: ThresholdSettings | None = None) -> None:
        self.bundle = bundle
        self.thresholds = thresholds or bundle.settings.thresholds
        total = sum(bundle.weights)
        self._wf, self._wa = (w / total for w in bundle.weights)
        self._ladder = np.array(self.thresholds.ladder())
        self._volume = min(1.0, math.log10(max(bundle.n_train, 1)) / _VOLUME_FULL_LOG10)
        self._cal = bundle.calibration
        self._baseline64 = bundle.baseline.astype(np.float64)

    @property
    def n_features(self) -> int:
        return self.bundle.n_features

    def score(self, vector: np.ndarray) -> ScoreResult:
        """Score one vector of ``n_features`` values (the hot path)."""
        x, flags = self.clean(vector)
        return self.finish(x, flags, self.bundle.forest.score_one(as_float32(x)))

    def finish(self, x: np.ndarray, flags: tuple[str, ...], raw_f: float) -> ScoreResult:
        """Scores of a clean vector whose raw forest score is already known."""
        raw_a = self.bundle.autoencoder.error_one(x)
        sf = self._cal["iforest"].one(raw_f)
        sa = self._cal["autoencoder"].one(raw_a)
        comp = self._cal["composite"].one(self._wf * sf + self._wa * sa)
        if not math.isfinite(sf + sa + comp):
            sf, sa, comp = _finite_or_one(sf), _finite_or_one(sa), _finite_or_one(comp)
            flags = (*flags, NONFINITE_SCORE)
        agreement = 1.0 - abs(sf - sa)
        margin = min(1.0, float(np.abs(self._ladder - comp).min()) / _MARGIN_FULL)
        conf = 0.5 * agreement + 0.3 * margin + 0.2 * self._volume
        return ScoreResult(sf, sa, comp, agreement, conf * 0.5 if flags else conf, flags)

    def score_batch(self, X: np.ndarray) -> BatchScores:
        """Score a 2-D batch of vectors."""
        X, flags = self.clean_batch(X)
        sf, sa, comp = self.calibrated(X)
        bad = ~np.isfinite(sf + sa + comp)
        if bad.any():
            sf, sa, comp = (np.where(np.isfinite(v), v, 1.0) for v in (sf, sa, comp))
            flags = [(*f, NONFINITE_SCORE) if b else f for f, b in zip(flags, bad, strict=True)]
        agreement = 1.0 - np.abs(sf - sa)
        margin = np.minimum(1.0, np.abs(comp[:, None] - self._ladder).min(axis=1) / _MARGIN_FULL)
        conf = 0.5 * agreement + 0.3 * margin + 0.2 * self._volume
        conf = np.where([bool(f) for f in flags], conf * 0.5, conf)
        return BatchScores(sf, sa, comp, agreement, conf, tuple(flags))

    def calibrated(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(forest, autoencoder, composite) calibrated scores of clean 2-D rows (no hygiene)."""
        sf = self._cal["iforest"](self.bundle.forest.score(X))
        sa = self._cal["autoencoder"](self.bundle.autoencoder.error(X))
        return sf, sa, self._cal["composite"](self._wf * sf + self._wa * sa)

    def mix(self, sf: np.ndarray, sa: np.ndarray) -> np.ndarray:
        """Composite from calibrated per-model scores."""
        return self._cal["composite"](self._wf * sf + self._wa * sa)

    def clean(self, vector: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
        """One vector as float64, non-finite values replaced (see module docstring)."""
        x = np.asarray(vector, dtype=np.float64)
        if x.shape != (self.n_features,):
            raise ValueError(f"expected {self.n_features} features, got shape {x.shape}")
        if np.isfinite(x).all():
            return x, ()
        return self._replace_nonfinite(x), (NONFINITE_INPUT,)

    def clean_batch(self, X: np.ndarray) -> tuple[np.ndarray, list[tuple[str, ...]]]:
        """A batch as float64 with non-finite values replaced, and per-row flags."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"expected (n, {self.n_features}) rows, got shape {X.shape}")
        finite = np.isfinite(X)
        if finite.all():
            return X, [()] * len(X)
        rows_bad = ~finite.all(axis=1)
        return self._replace_nonfinite(X), [(NONFINITE_INPUT,) if b else () for b in rows_bad]

    def _replace_nonfinite(self, X: np.ndarray) -> np.ndarray:
        b = self.bundle
        X = np.where(np.isnan(X), self._baseline64, X)
        return np.clip(X, b.train_min, b.train_max, where=np.isinf(X), out=X.copy())


def _finite_or_one(v: float) -> float:
    return v if math.isfinite(v) else 1.0

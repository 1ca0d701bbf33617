"""Calibration: a raw model score -> [0, 1], frozen at training time, same meaning after retrains.

The mapping is defined by the share of *training traffic* that scores at least as high. With
contamination ``c`` (0.05), anchor ``a`` (the MONITOR threshold, 0.65) and tail ratio ``K`` (100):

* **Body** (raw below the training ``1 - c`` quantile ``r_a``): the score is ``a`` times the
  empirical CDF rescaled, ``s = a * F(r) / (1 - c)``, interpolated between ``knots`` quantiles. A
  typical request (median) scores about ``a / 2 / (1 - c)`` = 0.34; exactly ``c`` of the training
  traffic lands at or above ``a``.
* **Tail** (raw at or above ``r_a``): the exceedances over ``r_a`` are fitted with an exponential
  distribution (peaks over threshold; scale ``beta`` = mean excess, its maximum-likelihood
  estimate), so the share of traffic above ``r`` is modelled as ``c * exp(-(r - r_a) / beta)``.
  The score is ``s = a + (1 - a) * min(1, (r - r_a) / (beta * ln K))``, i.e. the share of
  training traffic at or above score ``s`` is ``c * K ** (-(s - a) / (1 - a))``:

  ======  =========================  ================================
  score   share of training traffic  with c = 0.05, K = 100
  ======  =========================  ================================
  0.65    c                          5 %
  0.70    c * K^(-1/7)               2.6 %
  0.80    c * K^(-3/7)               0.70 %
  0.90    c * K^(-5/7)               0.19 %
  1.00    c / K                      0.05 % (and everything beyond)
  ======  =========================  ================================

  The tail is linear in the raw score, so it extrapolates smoothly beyond the largest training
  score instead of saturating at the last observed value.

Both pieces are non-decreasing and meet at ``r_a``, so the map is monotone. The forest's score is
calibrated as is; the autoencoder's reconstruction error, which is heavy-tailed, on ``log(error)``
(a monotone change that makes the exponential tail fit). The composite is calibrated the same way
from the weighted sum of the two calibrated scores, so the composite, too, puts about ``c`` of
training traffic at or above 0.65 whatever the correlation between the models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Calibration", "fit_calibration"]

_LOG_FLOOR = 1e-12


@dataclass(frozen=True, eq=False)
class Calibration:
    """A frozen monotone map from raw score to [0, 1].

    Attributes
    ----------
    knots
        Raw-score quantiles (after the optional log) at probabilities ``0 .. 1 - c``.
    anchor
        Score given to the last knot (the anomaly threshold).
    tail_scale
        Raw distance above the last knot at which the score reaches 1 (``beta * ln K``).
    log
        Whether raw scores are log-transformed before the map.
    """

    knots: np.ndarray
    anchor: float
    tail_scale: float
    log: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "_levels", np.linspace(0.0, self.anchor, len(self.knots)))
        object.__setattr__(self, "_top", float(self.knots[-1]))

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated scores for an array of raw scores (NaN stays NaN: callers flag it)."""
        r = self._transform(np.asarray(raw, dtype=np.float64))
        body = np.interp(r, self.knots, self._levels)
        tail = self.anchor + (1.0 - self.anchor) * np.minimum(
            1.0, (r - self._top) / self.tail_scale
        )
        return np.where(r > self._top, tail, body)

    def one(self, raw: float) -> float:
        """Calibrated score of one raw score (scalar fast path)."""
        r = math.log(raw + _LOG_FLOOR) if self.log else raw
        if r > self._top:
            return self.anchor + (1.0 - self.anchor) * min(1.0, (r - self._top) / self.tail_scale)
        return float(np.interp(r, self.knots, self._levels))

    def _transform(self, r: np.ndarray) -> np.ndarray:
        return np.log(r + _LOG_FLOOR) if self.log else r


def fit_calibration(
    raw: np.ndarray,
    *,
    contamination: float,
    anchor: float,
    tail_ratio: float = 100.0,
    n_knots: int = 257,
    log: bool = False,
) -> Calibration:
    """Fit the map on training-traffic raw scores (see the module docstring)."""
    r = np.asarray(raw, dtype=np.float64)
    r = np.log(r + _LOG_FLOOR) if log else r
    r = r[np.isfinite(r)]
    if r.size == 0:
        raise ValueError("calibration needs at least one finite raw score")
    knots = np.quantile(r, np.linspace(0.0, 1.0 - contamination, n_knots))
    excess = r[r > knots[-1]] - knots[-1]
    beta = float(excess.mean()) if excess.size else 0.0
    floor = 1e-9 * max(1.0, abs(float(knots[-1])))
    return Calibration(knots, anchor, max(beta, floor) * math.log(tail_ratio), log)

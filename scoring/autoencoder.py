"""Autoencoder inference in numpy (the serving process never imports torch).

The network is ``features -> encoding_dim (tanh) -> features (linear)`` on standardised inputs
``z = (x - mean) * inv_scale``. Zero-variance features have ``inv_scale = 0``: their standardised
value is always 0, so a feature that never varied in training can neither divide by zero nor
dominate the error. The raw anomaly score is the mean squared reconstruction error in standardised
space: **higher = more anomalous**.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["AutoencoderWeights", "Z_LIMIT"]

Z_LIMIT = 1e6
"""Standardised inputs are clipped to +-Z_LIMIT so the squared error cannot overflow to inf/NaN."""


@dataclass(frozen=True, eq=False)
class AutoencoderWeights:
    """Exported weights (PyTorch ``nn.Linear`` layout: ``weight[out, in]``) and the scaler.

    Attributes
    ----------
    w1, b1
        Encoder: ``float32[encoding_dim, n_features]``, ``float32[encoding_dim]``.
    w2, b2
        Decoder: ``float32[n_features, encoding_dim]``, ``float32[n_features]``.
    mean, inv_scale
        Scaler: ``float64[n_features]``; ``inv_scale`` is 1/std, or 0 for zero-variance features.
    """

    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    mean: np.ndarray
    inv_scale: np.ndarray

    def __post_init__(self) -> None:
        # Transposed float64 copies: one matmul per layer, no per-call casts.
        object.__setattr__(self, "_w1t", np.ascontiguousarray(self.w1.T, dtype=np.float64))
        object.__setattr__(self, "_w2t", np.ascontiguousarray(self.w2.T, dtype=np.float64))
        object.__setattr__(self, "_b1", self.b1.astype(np.float64))
        object.__setattr__(self, "_b2", self.b2.astype(np.float64))
        # Input bounds equivalent to |z| <= Z_LIMIT, applied *before* subtracting, so no
        # intermediate can overflow; zero-variance columns only need x - mean to stay finite.
        varying = self.inv_scale > 0
        reach = np.where(varying, Z_LIMIT / np.where(varying, self.inv_scale, 1.0), 1e300)
        object.__setattr__(self, "_lo", self.mean - reach)
        object.__setattr__(self, "_hi", self.mean + reach)

    @property
    def n_features(self) -> int:
        return int(self.w1.shape[1])

    def standardise(self, X: np.ndarray) -> np.ndarray:
        """``(x - mean) * inv_scale`` with inputs clipped so that ``|z| <= Z_LIMIT`` (float64)."""
        return (np.clip(X, self._lo, self._hi) - self.mean) * self.inv_scale

    def reconstruct(self, Z: np.ndarray) -> np.ndarray:
        """Forward pass on standardised rows (1-D or 2-D)."""
        hidden = np.tanh(Z @ self._w1t + self._b1)
        return hidden @ self._w2t + self._b2

    def error(self, X: np.ndarray) -> np.ndarray:
        """Mean squared reconstruction error per row of raw (unstandardised) inputs."""
        Z = self.standardise(X)
        return np.square(self.reconstruct(Z) - Z).mean(axis=-1)

    def error_one(self, x: np.ndarray) -> float:
        """Reconstruction error of one raw row (the hot path)."""
        return float(self.error(x))

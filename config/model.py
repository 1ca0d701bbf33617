"""Model settings: the two detectors, their ensemble, calibration, thresholds, drift and training.

Defaults follow the spec's ``modelConfig`` (100 trees x 256 samples, contamination 5 %, a 16-wide
autoencoder trained 50 epochs with batch 32 at lr 0.001, weights 0.6 / 0.4, anomaly threshold 0.65,
1,000 samples minimum over a 30-day window, retrain above 15 % drift).
"""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from config._base import Section


class IsolationForestSettings(Section):
    """The Isolation Forest (trained by scikit-learn, evaluated by our compiled arrays)."""

    n_trees: int = Field(100, ge=1, le=2000, description="Number of isolation trees.")
    sample_size: int = Field(
        256, ge=2, le=65536, description="Rows drawn (without replacement) to grow each tree."
    )
    max_depth: int = Field(
        12,
        ge=1,
        le=14,
        description=(
            "Height limit of a tree. scikit-learn exposes no such parameter: it always grows to "
            "ceil(log2(sample_size)) (8 for 256 samples), the paper's height limit. The compiled "
            "forest is cut at min(max_depth, that limit); a cut node scores depth + c(n) exactly "
            "like a leaf, so the spec's 12 (>= 8) leaves scikit-learn's trees unchanged."
        ),
    )
    contamination: float = Field(
        0.05,
        gt=0.0,
        lt=0.5,
        description="Expected share of anomalies in training traffic; anchors the calibration.",
    )
    seed: int = Field(42, description="Random seed of the forest (reproducible training).")


class AutoencoderSettings(Section):
    """The reconstruction autoencoder (features -> encoding_dim -> features)."""

    encoding_dim: int = Field(16, ge=1, le=1024, description="Width of the bottleneck layer.")
    learning_rate: float = Field(0.001, gt=0.0, le=1.0, description="Adam learning rate.")
    epochs: int = Field(50, ge=1, le=10_000, description="Maximum training epochs.")
    batch_size: int = Field(32, ge=1, le=65536, description="Mini-batch size.")
    validation_split: float = Field(
        0.2, gt=0.0, lt=0.9, description="Share of rows held out for early stopping."
    )
    early_stopping_patience: int = Field(
        5, ge=1, description="Epochs without validation improvement before training stops."
    )
    seed: int = Field(42, description="Seed of weight init, split and batch order.")
    torch_threads: int = Field(
        1, ge=1, le=64, description="Threads torch may use while training (keep the box usable)."
    )


class EnsembleSettings(Section):
    """Weights of the calibrated per-model scores in the composite (normalised to sum 1)."""

    isolation_forest: float = Field(0.6, ge=0.0, description="Weight of the forest score.")
    autoencoder: float = Field(0.4, ge=0.0, description="Weight of the autoencoder score.")

    @model_validator(mode="after")
    def _positive_total(self) -> Self:
        if self.isolation_forest + self.autoencoder <= 0.0:
            raise ValueError("ensemble weights must not both be zero")
        return self


class ThresholdSettings(Section):
    """The decision ladder on the composite score (a per-rule override is another instance)."""

    monitor: float = Field(0.65, ge=0.0, le=1.0, description="MONITOR from this score.")
    challenge: float = Field(0.70, ge=0.0, le=1.0, description="CHALLENGE from this score.")
    require_2fa: float = Field(0.80, ge=0.0, le=1.0, description="REQUIRE_2FA from this score.")
    block: float = Field(0.90, ge=0.0, le=1.0, description="BLOCK from this score.")
    strict_block: float = Field(
        0.70, ge=0.0, le=1.0, description="Strict paths BLOCK from this score."
    )

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if not self.monitor <= self.challenge <= self.require_2fa <= self.block:
            raise ValueError("thresholds must satisfy monitor <= challenge <= require_2fa <= block")
        if self.strict_block < self.monitor:
            raise ValueError("strict_block must not be below monitor")
        return self

    def ladder(self) -> tuple[float, float, float, float]:
        """The four ladder thresholds, ascending."""
        return (self.monitor, self.challenge, self.require_2fa, self.block)


class CalibrationSettings(Section):
    """How raw model scores are mapped onto [0, 1] (see scoring.calibration)."""

    tail_ratio: float = Field(
        100.0,
        gt=1.0,
        le=1e6,
        description=(
            "Score 1.0 is reached where the fitted tail predicts contamination / tail_ratio of "
            "training traffic; the ladder thresholds sit log-evenly in between."
        ),
    )
    knots: int = Field(257, ge=3, le=10_001, description="Quantile knots of the body of the map.")


class ExplanationSettings(Section):
    """Per-prediction explanations."""

    top_k: int = Field(5, ge=1, le=100, description="Features named in an explanation.")


class DriftSettings(Section):
    """Drift statistics of the recent window against the bundle's reference distributions."""

    threshold: float = Field(
        0.15, gt=0.0, le=1.0, description="Overall drift score above which retraining is due."
    )
    min_samples: int = Field(
        100, ge=1, description="Below this many recent vectors no drift alert is raised."
    )
    high_confidence_samples: int = Field(
        1000, ge=1, description="From this many recent vectors the check's confidence is HIGH."
    )
    bins: int = Field(10, ge=2, le=100, description="Quantile bins per feature for PSI.")
    smoothing: float = Field(
        0.5, gt=0.0, le=10.0, description="Pseudo-count added to every PSI bin (both sides)."
    )
    psi_feature_threshold: float = Field(
        0.2, gt=0.0, description="A feature drifts when its PSI reaches this (0.2 = major)."
    )
    ks_feature_threshold: float = Field(
        0.2, gt=0.0, le=1.0, description="... or when its KS statistic reaches this."
    )
    score_psi_scale: float = Field(
        0.5, gt=0.0, description="Score PSI that counts as full (1.0) score drift."
    )
    feature_weight: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Weight of the drifting-feature share in the overall score (rest: scores).",
    )
    reference_sample_size: int = Field(
        1000, ge=10, le=100_000, description="Training rows kept in the bundle for KS tests."
    )
    trend_window: int = Field(6, ge=2, le=1000, description="Recent checks the trend looks at.")
    trend_tolerance: float = Field(
        0.01, ge=0.0, description="Slope per check below which the trend is 'stable'."
    )


class TrainingSettings(Section):
    """Which rows a training run uses."""

    min_samples: int = Field(1000, ge=2, description="Fewer vectors than this: no training.")
    max_samples: int = Field(
        200_000, ge=2, description="Uniform sample cap (keeps training time bounded)."
    )
    window_days: int = Field(30, ge=1, le=3650, description="Rolling window of recorded vectors.")

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.max_samples < self.min_samples:
            raise ValueError("training.max_samples must be >= training.min_samples")
        return self


class ModelSettings(Section):
    """Everything that shapes a model bundle and how its scores are read."""

    isolation_forest: IsolationForestSettings = Field(default_factory=IsolationForestSettings)
    autoencoder: AutoencoderSettings = Field(default_factory=AutoencoderSettings)
    ensemble: EnsembleSettings = Field(default_factory=EnsembleSettings)
    thresholds: ThresholdSettings = Field(default_factory=ThresholdSettings)
    calibration: CalibrationSettings = Field(default_factory=CalibrationSettings)
    explanation: ExplanationSettings = Field(default_factory=ExplanationSettings)
    drift: DriftSettings = Field(default_factory=DriftSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)

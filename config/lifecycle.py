"""Model lifecycle settings: learning mode, scheduled jobs, the trainer process, safe promotion."""

from __future__ import annotations

import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator

from config._base import Section

_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class PromotionSettings(Section):
    """Shadow comparison of a candidate with the active model before it is activated."""

    enabled: bool = Field(
        True, description="Hold back a candidate that would move decision rates too much."
    )
    max_rate_factor: float = Field(
        2.0,
        gt=1.0,
        description=(
            "Largest allowed ratio (either way) between the candidate's and the active model's "
            "BLOCK rate, and their CHALLENGE-or-worse rate, on the same recent traffic."
        ),
    )
    rate_floor: float = Field(
        0.005,
        gt=0.0,
        lt=1.0,
        description="Rates below this count as this (so 0 vs 0.1 % is not an infinite ratio).",
    )
    shadow_sample_size: int = Field(
        5000, ge=1, le=1_000_000, description="Recent vectors scored by both models."
    )
    window_hours: float = Field(24.0, gt=0, description="How far back 'recent traffic' reaches.")
    min_samples: int = Field(
        100, ge=1, description="Fewer recent vectors than this: no comparison, promote."
    )


class ValidationSettings(Section):
    """Sanity checks a freshly trained candidate must pass before it is even saved."""

    heldout_rate_factor: float = Field(
        3.0,
        gt=1.0,
        description=(
            "The held-out anomaly rate (share >= monitor) must lie within contamination / f "
            "and contamination * f, or within 4 binomial standard errors of contamination."
        ),
    )


class LifecycleSettings(Section):
    """When and how the gateway trains, checks drift and runs housekeeping."""

    auto_train: bool = Field(
        True,
        description="Train without an operator: on enough samples (learning) and on drift.",
    )
    learning_check_interval_s: float = Field(
        60.0, gt=0, description="Seconds between sample counts while no model is active."
    )
    drift_check_interval_s: float = Field(
        3600.0, gt=0, description="Seconds between drift checks (one slot per interval)."
    )
    drift_window_s: float = Field(
        3600.0, gt=0, description="Recent traffic a drift check compares, seconds back."
    )
    drift_sample_limit: int = Field(
        20_000, ge=10, le=1_000_000, description="Most recent vectors one drift check reads."
    )
    drift_history: int = Field(
        168, ge=1, le=100_000, description="Drift checks kept in the database (oldest pruned)."
    )
    daily_retrain: bool = Field(True, description="Retrain once a day at daily_retrain_at.")
    daily_retrain_at: str = Field("00:00", description="Local time (HH:MM) of the daily retrain.")
    timezone: str = Field("UTC", description="IANA time zone of daily_retrain_at.")
    scheduler_tick_s: float = Field(
        30.0, gt=0, le=3600, description="Seconds between the scheduler's looks at due jobs."
    )
    trainer_timeout_s: float = Field(
        3600.0, gt=0, description="A training process running longer than this is killed."
    )
    trainer_nice: int = Field(
        10, ge=0, le=19, description="Scheduling niceness of the training process."
    )
    trainer_idle_priority: bool = Field(
        True,
        description=(
            "Run the trainer under the Linux idle scheduling class (chrt --idle): it only gets"
            " CPU the gateway leaves unused, so training cannot raise the gateway's latency."
        ),
    )
    trainer_threads: int = Field(
        1, ge=1, le=64, description="BLAS/OpenMP threads the training process may use."
    )
    promotion: PromotionSettings = Field(default_factory=PromotionSettings)
    validation: ValidationSettings = Field(default_factory=ValidationSettings)

    @field_validator("daily_retrain_at")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        if not _HHMM.match(v):
            raise ValueError("must be HH:MM (24-hour clock)")
        return v

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}") from None
        return v

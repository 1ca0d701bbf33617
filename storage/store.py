"""The records store interface and the factory choosing Postgres or embedded SQLite.

Aggregates (performance, decision counts) are computed from the ``predictions`` table on
demand, not from per-minute rollup tables: on Postgres every window query is pruned to the
daily partitions it touches and scans them through a BRIN index on ``ts``; the SQLite store
uses a b-tree on ``ts``. This keeps one source of truth (no rollup to fall out of step after
a spool replay) at the cost of scanning the window's rows per call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from config.storage import DatabaseSettings
from storage.records import (
    DecisionBucket,
    FalsePositiveReport,
    FeatureSample,
    Feedback,
    Incident,
    ModelVersion,
    PerformanceStats,
    PredictionRecord,
)

__all__ = (
    "INCIDENT_STATUSES",
    "ModelRegistry",
    "NoPreviousVersion",
    "RetentionResult",
    "Store",
    "StoreUnavailable",
    "UnknownVersion",
    "open_store",
    "run_migrations",
)

INCIDENT_STATUSES = ("open", "acknowledged", "resolved", "released")


class StoreUnavailable(Exception):
    """The database cannot be reached right now (the writer spools and retries)."""


class UnknownVersion(LookupError):
    """No model version with that number."""


class NoPreviousVersion(LookupError):
    """Rollback asked for, but no earlier activated version exists."""


@dataclass(slots=True)
class RetentionResult:
    """What one retention run removed."""

    cutoff: datetime
    dropped_partitions: list[str] = field(default_factory=list)
    deleted_predictions: int = 0
    deleted_feedback: int = 0
    deleted_incidents: int = 0


@runtime_checkable
class ModelRegistry(Protocol):
    """Versioned model bundles with exactly one active version."""

    async def save_version(
        self,
        bundle: bytes,
        *,
        feature_set_version: str,
        config: dict | None = None,
        metrics: dict | None = None,
        window_start: datetime | None = None,
        window_end: datetime | None = None,
        sample_count: int = 0,
    ) -> ModelVersion: ...

    async def list_versions(self) -> list[ModelVersion]: ...

    async def get_version(
        self, version: int, *, with_bundle: bool = True
    ) -> ModelVersion | None: ...

    async def active_version(self) -> ModelVersion | None: ...

    async def active_version_number(self) -> int | None: ...

    async def activate(self, version: int, *, by: str) -> ModelVersion: ...

    async def rollback(self, *, by: str) -> ModelVersion: ...

    def watch(self, poll_interval: float | None = None) -> AsyncIterator[int | None]: ...


@runtime_checkable
class Store(Protocol):
    """Predictions, feedback, incidents, model registry. Times are aware UTC datetimes.

    Windows are half-open: ``start <= ts < end``. Listing methods return newest first and
    page with ``before_id`` (the last id of the previous page).
    """

    registry: ModelRegistry
    dialect: str

    async def close(self) -> None: ...

    async def migrate(self) -> list[int]:
        """Apply pending schema migrations; returns the versions applied now."""
        ...

    async def insert_predictions(self, records: Sequence[PredictionRecord]) -> int:
        """Insert records, ignoring ids already present; returns how many were new.

        Raises StoreUnavailable when the database cannot be reached.
        """
        ...

    async def get_prediction(self, prediction_id: str) -> PredictionRecord | None: ...

    async def list_predictions(
        self,
        start: datetime,
        end: datetime,
        *,
        user_id: str | None = None,
        limit: int = 100,
        before_id: str | None = None,
    ) -> list[PredictionRecord]: ...

    async def add_feedback(
        self, prediction_id: str, user_id: str, *, is_false_positive: bool, notes: str = ""
    ) -> Feedback | None:
        """Record (or replace) ``user_id``'s verdict; None when the prediction is unknown."""
        ...

    async def false_positives(
        self, *, limit: int = 50, before_id: int | None = None
    ) -> list[FalsePositiveReport]: ...

    async def decision_counts(
        self, start: datetime, end: datetime, bucket_seconds: int
    ) -> list[DecisionBucket]: ...

    async def performance(self, start: datetime, end: datetime) -> PerformanceStats: ...

    async def training_sample(
        self,
        start: datetime,
        end: datetime,
        *,
        limit: int,
        feature_set_version: str | None = None,
    ) -> FeatureSample:
        """Uniform sample (≤ limit) of vectors fit to learn from: no BLOCK, no confirmed
        anomaly (latest feedback says not a false positive); confirmed false positives kept."""
        ...

    async def count_training_samples(
        self, start: datetime, end: datetime, *, feature_set_version: str | None = None
    ) -> int: ...

    async def window_features(
        self,
        start: datetime,
        end: datetime,
        *,
        limit: int,
        feature_set_version: str | None = None,
    ) -> FeatureSample:
        """Uniform sample (≤ limit) of every vector in the window (for drift checks)."""
        ...

    async def open_incident(self, incident: Incident) -> Incident: ...

    async def get_incident(self, incident_id: int) -> Incident | None: ...

    async def list_incidents(
        self, *, status: str | None = None, limit: int = 50, before_id: int | None = None
    ) -> list[Incident]: ...

    async def update_incident(
        self, incident_id: int, *, status: str, actor: str | None = None, notes: str | None = None
    ) -> Incident | None: ...

    async def apply_retention(
        self, days: int, *, now: datetime | None = None, batch: int = 10_000
    ) -> RetentionResult: ...


async def open_store(settings: DatabaseSettings) -> Store:
    """Open the configured store (Postgres when a URL is set, else the SQLite file)."""
    url = settings.url
    if url and url.startswith(("postgresql://", "postgres://")):
        from storage.pg_store import PgStore

        return await PgStore.open(settings)
    from storage.sqlite_store import SqliteStore

    path = settings.sqlite_path
    if url and url.startswith("sqlite:///"):
        # sqlite:///relative/file.db or sqlite:////absolute/file.db (SQLAlchemy convention)
        path = url.removeprefix("sqlite:///") or path
    return await SqliteStore.open(path, settings)


async def run_migrations(settings: DatabaseSettings) -> list[int]:
    """Apply pending migrations and return the versions applied (``behaviorgate migrate``)."""
    store = await open_store(settings.model_copy(update={"migrate_on_start": False}))
    try:
        return await store.migrate()
    finally:
        await store.close()

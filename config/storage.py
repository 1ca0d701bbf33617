"""Settings of the records store: database, batched prediction writer, retention."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from config._base import Section

OverflowPolicy = Literal["block_briefly", "drop_allow_first", "fail_closed"]


class DatabaseSettings(Section):
    url: str | None = Field(
        None,
        description=(
            "postgresql://user@host:port/db[?options=-csearch_path%3Dschema]; "
            "sqlite:///path/file.db; unset = embedded SQLite file at sqlite_path."
        ),
    )
    sqlite_path: str = Field(
        "data/behaviorgate.sqlite3",
        description="Embedded SQLite file used when url is unset (under the data dir).",
    )
    pool_min_size: int = Field(1, ge=0, le=100, description="Postgres connections kept open.")
    pool_max_size: int = Field(
        10, ge=1, le=500, description="Most Postgres connections in the pool."
    )
    connect_timeout: float = Field(5.0, gt=0, description="Seconds to open a database connection.")
    statement_timeout: float = Field(
        30.0, gt=0, description="Server-side limit on one statement, seconds (Postgres)."
    )
    migrate_on_start: bool = Field(
        True, description="Apply pending schema migrations when the store opens."
    )
    partition_days_ahead: int = Field(
        7, ge=1, le=60, description="Daily prediction partitions created ahead of today (Postgres)."
    )
    registry_poll_interval: float = Field(
        10.0,
        gt=0,
        description="Seconds between active-model polls (LISTEN/NOTIFY fallback; SQLite).",
    )

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        if not v.startswith(("postgresql://", "postgres://", "sqlite://")):
            raise ValueError("must start with postgresql://, postgres:// or sqlite://")
        return v


class WriterSettings(Section):
    queue_max: int = Field(
        100_000, ge=10, description="Prediction records held in memory waiting for the database."
    )
    batch_size: int = Field(2_000, ge=1, le=100_000, description="Records written per COPY.")
    flush_interval: float = Field(
        0.25,
        gt=0,
        le=60,
        description="Seconds a record may wait before a partial batch is flushed.",
    )
    spool_path: str = Field(
        "data/predictions.spool",
        description="Append-only local file taking batches while the database is unreachable.",
    )
    spool_max_bytes: int = Field(
        1024 * 1024 * 1024,
        ge=4096,
        description="Largest spool file; beyond it the overflow policy applies.",
    )
    allow_sample_rate: float = Field(
        1.0, ge=0.0, le=1.0, description="Share of ALLOW records kept (1.0 = keep every record)."
    )
    overflow_policy: OverflowPolicy = Field(
        "drop_allow_first",
        description=(
            "When queue and spool are both full: drop_allow_first (ALLOW records are refused "
            "first, others use a reserve), block_briefly (callers using put() wait up to "
            "block_timeout for room), fail_closed (refuse the record; the proxy answers 503). "
            "Every refusal is counted and logged."
        ),
    )
    priority_reserve: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="Extra queue share kept for non-ALLOW records (drop_allow_first).",
    )
    block_timeout: float = Field(
        0.05, ge=0, le=5, description="Seconds put() waits for room under block_briefly."
    )
    retry_initial: float = Field(
        0.5, gt=0, description="First wait before retrying an unreachable database, seconds."
    )
    retry_max: float = Field(
        15.0, gt=0, description="Longest wait between database retries, seconds."
    )
    close_timeout: float = Field(
        10.0, gt=0, description="Seconds close() spends draining before spooling what is left."
    )


class RetentionSettings(Section):
    days: int = Field(
        90, ge=1, le=3650, description="Predictions, feedback and incidents kept, days."
    )
    interval_hours: float = Field(6.0, gt=0, description="Hours between retention runs.")
    delete_batch: int = Field(
        10_000,
        ge=100,
        description="Rows deleted per statement where rows are deleted, not dropped.",
    )

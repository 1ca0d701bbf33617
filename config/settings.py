"""The root settings object: every section, validated once at start-up, then frozen."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from config._base import Section
from config.api import ApiSettings
from config.enforcement import EnforcementSettings
from config.gateway import (
    ForwardingSettings,
    LimitsSettings,
    LoggingSettings,
    ServerSettings,
    UpstreamSettings,
)
from config.history import HistorySettings
from config.identity import IdentitySettings
from config.lifecycle import LifecycleSettings
from config.model import ModelSettings
from config.policy import PolicySettings
from config.storage import DatabaseSettings, RetentionSettings, WriterSettings


class RedisSettings(Section):
    url: str | None = Field(
        None,
        description=(
            "redis:// or rediss:// URL; unset = embedded in-process store (one process only)."
        ),
    )
    timeout: float = Field(
        2.0,
        gt=0,
        le=60,
        description="Seconds Redis may take to answer a command or pipeline before its connection"
        " is dropped and its callers fail (a stalled server must not hold connections); the hot"
        " path gives up sooner, at scoring.budget_ms.",
    )

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, v: str | None) -> str | None:
        if v is None:
            return None
        if not v.startswith(("redis://", "rediss://", "unix://")):
            # "" too: an empty templated value must not silently mean a private in-process store.
            raise ValueError(
                "must start with redis://, rediss:// or unix:// (leave it unset for the embedded"
                " store)"
            )
        return v


class ScoringSettings(Section):
    enabled: bool = Field(
        True, description="Score requests; off = a plain policy-aware proxy (benchmarks)."
    )
    budget_ms: float = Field(
        25.0,
        gt=0,
        le=10_000,
        description="Time the history read + scoring may take before the fail policy applies.",
    )


class Settings(Section):
    """Everything the gateway is configured with. Build it with `config.loader.load_settings`."""

    mode: Literal["enforce", "shadow"] = Field(
        "enforce", description="enforce: act on decisions; shadow: record them and change nothing."
    )
    data_dir: Path = Field(
        Path("./data"), description="Where the embedded stores, spool file and models live."
    )
    server: ServerSettings = Field(default_factory=ServerSettings)
    upstream: UpstreamSettings = Field(default_factory=UpstreamSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    forwarding: ForwardingSettings = Field(default_factory=ForwardingSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    scoring: ScoringSettings = Field(default_factory=ScoringSettings)
    identity: IdentitySettings = Field(default_factory=IdentitySettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    history: HistorySettings = Field(default_factory=HistorySettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    enforcement: EnforcementSettings = Field(default_factory=EnforcementSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    writer: WriterSettings = Field(default_factory=WriterSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    lifecycle: LifecycleSettings = Field(default_factory=LifecycleSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)

    @model_validator(mode="after")
    def _shared_stores_for_workers(self) -> Settings:
        # Embedded stores live inside one process: several workers would each see a different
        # history and fight over one SQLite file.
        if self.server.workers > 1 and (self.redis.url is None or self.database.url is None):
            raise ValueError("server.workers > 1 needs redis.url and database.url (shared stores)")
        return self

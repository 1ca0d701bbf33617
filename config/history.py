"""Settings of the behavioural history kept in Redis (sessions and per-user baselines).

Every per-user collection has a cap, so the memory one user can occupy is bounded whatever the
traffic; ``docs/features.md`` and ``storage.history`` state the bound these caps imply.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from config._base import Section


class HistorySettings(Section):
    key_prefix: str = Field(
        "bg:",
        description="Namespace of every Redis key. Must not contain '{' or '}' (hash tags).",
    )
    session_events_cap: int = Field(
        200, ge=1, le=10_000, description="Most recent events kept per session (older are trimmed)."
    )
    session_ttl_seconds: int = Field(
        1800,
        ge=60,
        description=(
            "A session idle this long starts again (events forgotten, age reset); the same"
            " 30-minute inactivity split the access-log importer uses."
        ),
    )
    baseline_short_days: int = Field(
        7, ge=1, le=365, description="Short baseline window (IP and network diversity), days."
    )
    baseline_long_days: int = Field(
        30,
        ge=1,
        le=365,
        description="Long baseline window: IPs, networks, devices, endpoints, sessions older than "
        "this are forgotten, and idle users' keys expire after it.",
    )
    max_ips: int = Field(64, ge=1, description="Most IP addresses remembered per user.")
    max_networks: int = Field(
        32, ge=1, description="Most network prefixes (/24 IPv4, /48 IPv6) remembered per user."
    )
    max_devices: int = Field(16, ge=1, description="Most device fingerprints remembered per user.")
    max_endpoints: int = Field(256, ge=1, description="Most route templates remembered per user.")
    max_bigrams: int = Field(
        1024, ge=1, description="Most route-template bigram counts kept per user (rarest evicted)."
    )
    max_trigrams: int = Field(
        2048, ge=1, description="Most route-template trigram counts kept per user (rarest evicted)."
    )
    max_sessions: int = Field(
        64,
        ge=1,
        description="Most sessions remembered per user; the least recently seen one is evicted "
        "together with its event list.",
    )
    max_switches: int = Field(
        64, ge=1, description="Most session-switch timestamps kept per user (last hour is used)."
    )
    hour_histogram_decay_total: int = Field(
        10_000,
        ge=24,
        description="When the user's hour-of-week histogram total exceeds this, every bin is "
        "halved, so old habits fade and counts stay bounded.",
    )
    concurrent_window_seconds: int = Field(
        300,
        ge=1,
        description="Another session of the same user seen within this many seconds counts as "
        "concurrent.",
    )
    timezone: str = Field(
        "UTC", description="IANA time zone in which hours and weekdays of users are counted."
    )
    coalesce_reads: bool = Field(
        True,
        description="Send all history reads issued in one event-loop tick as one Redis pipeline.",
    )
    max_batch: int = Field(
        256, ge=1, le=10_000, description="Most reads coalesced into one pipeline."
    )

    @field_validator("key_prefix")
    @classmethod
    def _no_braces(cls, value: str) -> str:
        if "{" in value or "}" in value:
            raise ValueError("key_prefix must not contain '{' or '}' (it would break hash tags)")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _windows_ordered(self) -> HistorySettings:
        if self.baseline_short_days > self.baseline_long_days:
            raise ValueError("baseline_short_days must not exceed baseline_long_days")
        return self

"""The ML anomaly API served by the gateway itself: prefix, admin tokens, rate limits, paging."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from config._base import Section

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


class ApiSettings(Section):
    """Routes under ``prefix`` are answered by the gateway and never forwarded upstream."""

    enabled: bool = Field(True, description="Serve the API (off = every path is proxied).")
    prefix: str = Field(
        "/api/ml-anomaly", description="Path prefix of the API (absolute, no trailing slash)."
    )
    admin_token_hashes: tuple[str, ...] = Field(
        (),
        description="SHA-256 hex digests of API tokens that act as admins (a comma-separated "
        "string is accepted). Tokens themselves are never stored.",
    )
    admin_tokens_env: str = Field(
        "BEHAVIORGATE_API_TOKENS",
        description="Environment variable with comma-separated plaintext admin tokens, hashed "
        "at start-up (for secrets injected by the platform).",
    )
    feedback_per_minute: int = Field(
        10, ge=1, le=10_000, description="Feedback submissions allowed per user per minute."
    )
    admin_per_minute: int = Field(
        600, ge=1, le=100_000, description="Admin requests allowed per admin per minute."
    )
    metrics: Literal["admin", "off"] = Field(
        "admin", description="Prometheus metrics at {prefix}/metrics for admins, or not at all."
    )
    page_size: int = Field(50, ge=1, le=1000, description="Default page size of listings.")
    max_page_size: int = Field(500, ge=1, le=10_000, description="Largest page a caller may ask.")
    max_window_hours: int = Field(
        24 * 30, ge=1, le=24 * 3650, description="Longest time window a query may cover."
    )
    max_body_bytes: int = Field(
        65_536, ge=1024, le=16 * 1024 * 1024, description="Largest request body accepted."
    )
    batch_max_items: int = Field(
        100, ge=1, le=10_000, description="Sessions + users one batch analysis may list."
    )
    what_if_max_records: int = Field(
        200_000, ge=1, description="Stored predictions a what-if replay reads at most."
    )

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not v.startswith("/") or v.endswith("/") or "//" in v or len(v) < 2:
            raise ValueError("must start with '/', not end with '/' and not be '/'")
        return v

    @field_validator("admin_token_hashes", mode="before")
    @classmethod
    def _split(cls, v: object) -> object:
        if isinstance(v, str):
            return tuple(p.strip() for p in v.split(",") if p.strip())
        return v

    @field_validator("admin_token_hashes")
    @classmethod
    def _hex(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        out = tuple(h.lower() for h in v)
        for h in out:
            if not _SHA256_HEX.match(h):
                raise ValueError("each entry must be a SHA-256 hex digest (64 hex characters)")
        return out

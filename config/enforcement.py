"""How decisions are acted on: step-up, revocation, escalation, webhooks, fail policy."""

from __future__ import annotations

from typing import Literal

from pydantic import AnyHttpUrl, Field, field_validator

from config._base import Section


class StepUpSettings(Section):
    verify_path: str = Field(
        "/api/auth/2fa/verify",
        description="Upstream path whose 2xx answer, for the same session, completes a step-up.",
    )
    verify_methods: tuple[str, ...] = Field(
        ("POST",), description="Methods of the verification call."
    )
    grant_ttl_seconds: int = Field(
        900, ge=1, le=86_400, description="How long a completed step-up lasts."
    )
    retry_after_seconds: int = Field(5, ge=0, le=3600, description="Retry hint sent with a 401.")
    challenge_method: str = Field(
        "challenge", description="Step-up named for CHALLENGE in the 401 body."
    )
    require_2fa_method: str = Field(
        "2fa", description="Step-up named for REQUIRE_2FA in the 401 body."
    )

    @field_validator("verify_path")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError("must be an absolute path starting with '/'")
        return v


class EscalationSettings(Section):
    enabled: bool = Field(True, description="Block a user who keeps getting challenged.")
    challenges: int = Field(
        5, ge=1, le=1000, description="CHALLENGE/REQUIRE_2FA count that escalates…"
    )
    window_seconds: int = Field(3600, ge=60, le=86_400 * 7, description="…within this window.")


class WebhookSettings(Section):
    url: AnyHttpUrl = Field(description="Receives a JSON POST per incident.")
    secret: str = Field(
        min_length=16,
        description="HMAC-SHA256 key; the signature is sent as X-BehaviorGate-Signature.",
    )
    events: tuple[Literal["block", "escalation", "drift", "retrain"], ...] = Field(
        ("block", "escalation"), description="Which events this webhook receives."
    )


class NotifySettings(Section):
    webhooks: tuple[WebhookSettings, ...] = Field((), description="Incident receivers.")
    timeout_seconds: float = Field(5.0, gt=0, le=60, description="Per delivery attempt.")
    max_attempts: int = Field(
        6, ge=1, le=20, description="Attempts before a delivery is given up (logged)."
    )
    backoff_initial_seconds: float = Field(
        0.5, gt=0, description="First retry delay; doubles each time."
    )
    backoff_max_seconds: float = Field(60.0, gt=0, description="Longest retry delay.")
    queue_max: int = Field(
        10_000, ge=1, description="Deliveries waiting; beyond it the oldest is logged and dropped."
    )


class BreakerSettings(Section):
    failures: int = Field(
        5, ge=1, le=1000, description="Consecutive Redis failures that open the breaker."
    )
    reset_seconds: float = Field(
        2.0, gt=0, le=600, description="Open time before one trial request."
    )
    min_failure_seconds: float = Field(
        1.0,
        ge=0,
        le=600,
        description="The consecutive failures must also span this long: one latency blip that"
        " times out many concurrent reads at once is not an outage.",
    )


class EnforcementSettings(Section):
    stepup: StepUpSettings = Field(default_factory=StepUpSettings)
    escalation: EscalationSettings = Field(default_factory=EscalationSettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    revocation_ttl_seconds: int = Field(
        86_400, ge=60, description="Revocation lasts until the token expires, or at most this long."
    )
    default_fail: Literal["open", "closed"] = Field(
        "open",
        description="Fail policy of non-strict rules when scoring fails (strict rules: closed).",
    )
    report_path: str = Field(
        "/api/ml-anomaly/predictions/{id}/feedback",
        description="Where a challenged user reports 'this was me' ({id} = prediction id).",
    )

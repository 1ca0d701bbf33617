"""Identity settings: how a request's user and session are established.

Order of trust: a verified JWT, then a header set by a trusted auth proxy in front (only when the
TCP peer is one of ``trusted_proxies``), then, if allowed, an anonymous pseudo-session derived
from the client IP and user agent.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from config._base import Section

JwtAlgorithm = Literal["HS256", "RS256", "ES256"]
_MIN_HS256_SECRET_BYTES = 32  # RFC 7518 section 3.2: the key must be at least the hash size.


class JwtSettings(Section):
    """Verification of bearer tokens. Each key type verifies only its own algorithm."""

    algorithms: tuple[JwtAlgorithm, ...] = Field(
        ("HS256", "RS256", "ES256"),
        min_length=1,
        description="Algorithms accepted; a token's alg must be listed and have a key configured.",
    )
    hs256_secret: SecretStr | None = Field(
        None, description="Shared HS256 secret (>= 32 bytes). Unset: read from hs256_secret_env."
    )
    hs256_secret_env: str = Field(
        "BEHAVIORGATE_JWT_SECRET",
        description="Environment variable holding the HS256 secret when hs256_secret is unset.",
    )
    public_key_pem: str | None = Field(
        None, description="RSA (RS256) or EC P-256 (ES256) public key, PEM text."
    )
    public_key_path: Path | None = Field(None, description="File holding the public key PEM.")
    jwks_file: Path | None = Field(None, description="JWKS JSON file; tokens pick a key by kid.")
    user_claim: str = Field("sub", min_length=1, description="Claim naming the user (dots nest).")
    session_claim: str = Field(
        "sid", min_length=1, description="Claim naming the session; fallback jti, then token hash."
    )
    role_claim: str = Field(
        "roles",
        min_length=1,
        description="Claim holding roles: a list or a space-separated string.",
    )
    admin_roles: tuple[str, ...] = Field(("admin",), description="Roles that make a user an admin.")
    audience: tuple[str, ...] = Field(
        (), description="Accepted aud values; empty = aud not checked."
    )
    issuer: str | None = Field(None, description="Required iss; unset = not checked.")
    leeway_seconds: float = Field(30.0, ge=0, le=600, description="Clock skew allowed on exp/nbf.")
    require_exp: bool = Field(True, description="Reject tokens without an exp claim.")
    required: bool = Field(
        False, description="Every request must carry a valid token (or a trusted-header identity)."
    )
    max_token_bytes: int = Field(
        8192, ge=256, le=65536, description="Longer tokens are rejected before any parsing."
    )
    cookie_name: str | None = Field(
        None, description="Also read the token from this cookie when there is no Authorization."
    )

    @field_validator("hs256_secret")
    @classmethod
    def _secret_length(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value().encode()) < _MIN_HS256_SECRET_BYTES:
            raise ValueError(f"must be at least {_MIN_HS256_SECRET_BYTES} bytes")
        return v

    @model_validator(mode="after")
    def _one_public_key(self) -> JwtSettings:
        if self.public_key_pem is not None and self.public_key_path is not None:
            raise ValueError("set public_key_pem or public_key_path, not both")
        return self


class TrustedHeaderSettings(Section):
    """Headers an auth proxy in front sets; honoured only when the peer is a trusted proxy."""

    user_header: str | None = Field(
        None, description="Header carrying the user id, e.g. X-Auth-User."
    )
    session_header: str | None = Field(
        None, description="Header carrying the session id; unset/missing = derived from user+IP+UA."
    )
    roles_header: str | None = Field(None, description="Header carrying comma-separated roles.")


class IdentitySettings(Section):
    """Who is making the request, and which client IP it comes from."""

    jwt: JwtSettings = Field(default_factory=JwtSettings)
    invalid_token: Literal["reject", "anonymous"] = Field(
        "reject", description="An invalid or expired token: 401 from the gateway, or anonymous."
    )
    trusted_header: TrustedHeaderSettings = Field(default_factory=TrustedHeaderSettings)
    allow_anonymous: bool = Field(
        True, description="Requests without identity get a pseudo-session from client IP + UA."
    )
    trusted_proxies: tuple[str, ...] = Field(
        (),
        description="CIDRs of proxies in front whose X-Forwarded-For and identity headers are "
        "believed. Empty: the TCP peer is the client.",
    )
    token_cache_size: int = Field(
        10_000, ge=0, le=1_000_000, description="Verified tokens remembered (LRU, until exp)."
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_cidrs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(str(ipaddress.ip_network(c.strip(), strict=False)) for c in v)

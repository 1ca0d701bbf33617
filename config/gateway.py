"""Settings of the HTTP edge: listener, upstream, limits, forwarding, logging."""

from __future__ import annotations

from typing import Literal

from pydantic import AnyHttpUrl, Field, field_validator

from config._base import Section


class ServerSettings(Section):
    host: str = Field("127.0.0.1", description="Address the gateway listens on.")
    port: int = Field(
        8080, ge=0, le=65535, description="Port the gateway listens on (0 = any free port)."
    )
    workers: int = Field(1, ge=1, le=64, description="Processes sharing the port (SO_REUSEPORT).")
    internal_prefix: str = Field(
        "/_behaviorgate",
        description="Prefix of the gateway's own endpoints (healthz, readyz); never forwarded.",
    )
    shutdown_timeout: float = Field(
        15.0, gt=0, le=600, description="Seconds SIGTERM waits for in-flight requests to finish."
    )
    keepalive_timeout: float = Field(75.0, gt=0, description="Idle client keep-alive, seconds.")
    header_read_timeout: float = Field(
        10.0, gt=0, description="A client must send its request headers within this many seconds."
    )
    body_read_timeout: float = Field(
        60.0, gt=0, description="Longest pause allowed between two chunks of a request body."
    )
    gc_freeze: bool = Field(
        True,
        description="After start-up, move the heap built so far out of the garbage collector's"
        " scans (gc.freeze): full collections then cost what the live traffic allocates.",
    )

    @field_validator("internal_prefix")
    @classmethod
    def _prefix_shape(cls, v: str) -> str:
        if not v.startswith("/") or v.endswith("/") or len(v) < 2:
            raise ValueError("must start with '/' and not end with '/'")
        return v


class UpstreamSettings(Section):
    url: AnyHttpUrl = Field(
        "http://127.0.0.1:8000",
        description="Base URL of the protected service (scheme://host:port).",
    )
    connect_timeout: float = Field(5.0, gt=0, description="Seconds to open a connection upstream.")
    read_timeout: float = Field(
        30.0,
        gt=0,
        description="Longest silence while waiting for upstream bytes (headers or body).",
    )
    total_timeout: float = Field(
        120.0, gt=0, description="Upper bound on the upstream exchange up to its response headers."
    )
    pool_size: int = Field(256, ge=1, description="Keep-alive connections kept to the upstream.")
    preserve_host: bool = Field(
        False, description="Send the client's Host header upstream instead of the upstream's host."
    )

    @field_validator("url")
    @classmethod
    def _no_path(cls, v: AnyHttpUrl) -> AnyHttpUrl:
        if v.path not in (None, "", "/") or v.query or v.fragment:
            raise ValueError("must be scheme://host[:port] with no path, query or fragment")
        return v


class LimitsSettings(Section):
    max_body_bytes: int = Field(
        100 * 1024 * 1024,
        ge=0,
        description="Largest request body forwarded (413 above; 0 = no limit).",
    )
    max_header_bytes: int = Field(
        32 * 1024, ge=1024, description="Largest total size of request headers (431 above)."
    )
    max_header_count: int = Field(100, ge=8, description="Most request header lines (431 above).")


class ForwardingSettings(Section):
    decision_headers: bool = Field(
        True, description="Send X-BehaviorGate-Decision/-Score/-Prediction-Id to the upstream."
    )
    expose_decision_to_client: bool = Field(
        False,
        description="Also show the decision headers to the client (off: clients never see scores).",
    )
    set_x_forwarded: bool = Field(True, description="Set X-Forwarded-For/-Proto/-Host upstream.")


class LoggingSettings(Section):
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    format: Literal["auto", "json", "console"] = Field(
        "auto", description="auto: console renderer on a TTY, JSON lines otherwise."
    )
    access_log: bool = Field(True, description="One access event per request.")

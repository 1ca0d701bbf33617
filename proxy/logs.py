"""structlog set-up: JSON lines in production, a console renderer on a TTY."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from config.gateway import LoggingSettings

# Values under these keys never reach a log line (a token in a log is a stolen session).
REDACTED_KEYS = frozenset(
    {"authorization", "cookie", "set-cookie", "token", "password", "secret", "api_key"}
)


def _redact(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    for key in list(event):
        if key.lower() in REDACTED_KEYS:
            event[key] = "[redacted]"
    return event


def configure_logging(settings: LoggingSettings) -> None:
    level = getattr(logging, settings.level.upper())
    use_console = settings.format == "console" or (
        settings.format == "auto" and sys.stderr.isatty()
    )
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False)
        if use_console
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )

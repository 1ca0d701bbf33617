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
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            stamp,
            _redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # One write per line (PrintLogger writes the text and the newline apart): workers sharing
        # one stderr file then never glue two records together.
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Libraries' and our stdlib loggers (writer, spool, asyncpg, aiohttp) render the same way,
    # a traceback as one field, so every line of the log is one record.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                stamp,
                _redact,
                structlog.processors.format_exc_info,
            ],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)

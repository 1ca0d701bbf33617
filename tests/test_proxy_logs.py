"""Every line the gateway logs is one JSON record, whoever logs it (structlog, our stdlib
loggers, libraries), tracebacks included. Run in a child process: logging set-up is global."""

from __future__ import annotations

import json
import subprocess
import sys

SNIPPET = """
import logging, structlog
from config.gateway import LoggingSettings
from proxy.logs import configure_logging
configure_logging(LoggingSettings(format="json", level="info"))
logging.getLogger("storage.writer").warning("store unreachable, spooling %d batches", 3)
try:
    raise ConnectionResetError("peer went away\\nsecond line")
except ConnectionResetError:
    logging.getLogger("asyncpg.pool").exception("Failed to restore the pool")
structlog.get_logger("behaviorgate").info("request", status=200, authorization="Bearer s3cret")
logging.getLogger("storage.writer").debug("below the level")
"""


def test_stdlib_and_structlog_records_are_single_json_lines():
    proc = subprocess.run(
        [sys.executable, "-c", SNIPPET], capture_output=True, text=True, timeout=60, check=True
    )
    records = [json.loads(line) for line in proc.stderr.splitlines()]  # each line parses alone
    assert [(r["event"], r["level"]) for r in records] == [
        ("store unreachable, spooling 3 batches", "warning"),
        ("Failed to restore the pool", "error"),
        ("request", "info"),
    ]
    assert records[0]["logger"] == "storage.writer"
    assert "ConnectionResetError: peer went away" in records[1]["exception"]
    assert records[2]["authorization"] == "[redacted]" and "s3cret" not in proc.stderr

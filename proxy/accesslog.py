"""Read nginx/Apache access logs (combined and common formats, plain or gzip) and sessionize them.

Log lines are hostile input: every line is length-capped, decoded with replacement characters and
matched by one anchored regular expression. A line that does not fit is counted and a few are kept
as samples; it never stops the read. Trailing fields after the user agent (several sites append
one, e.g. ``"-"`` for a forwarded-for column) are accepted and ignored.

Sessions follow the usual web-analytics rule: the log's user field (``%u``) is the identity when
present, otherwise client IP + user agent; a gap of inactivity longer than ``gap_s`` starts a new
session of the same identity.
"""

from __future__ import annotations

import gzip
import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import BinaryIO

__all__ = (
    "DEFAULT_GAP_S",
    "LogRecord",
    "ParseStats",
    "Sessionizer",
    "SessionRef",
    "open_log",
    "parse_line",
    "read_logs",
    "iter_records",
)

DEFAULT_GAP_S = 30 * 60.0
#: Longer lines are refused (a 64 KiB request line is an attack or a corrupt file, not traffic).
MAX_LINE_BYTES = 65_536
MAX_SAMPLES = 10
_SAMPLE_CHARS = 240

_Q = r'"((?:[^"\\]|\\.)*)"'  # a quoted field; Apache escapes '"' inside as '\"'
_LINE_RE = re.compile(
    r"(?P<host>\S+) (?P<ident>\S+) (?P<user>\S+) \[(?P<time>[^\]]{20,40})\] "
    rf"{_Q} (?P<status>\d{{3}}) (?P<size>\d+|-)"
    rf"(?: {_Q} {_Q})?(?P<extra>(?:\s.*)?)"
)
_REQUEST_RE = re.compile(r"([A-Z][A-Z0-9_-]{0,31}) (\S+)(?: (HTTP/\d(?:\.\d)?))?")
_TIME_RE = re.compile(
    r"(\d{2})/([A-Z][a-z]{2})/(\d{4}):(\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})"
)
_MONTHS = {
    m: i
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One parsed access-log line. ``referer`` / ``user_agent`` are None in common format."""

    source: str
    line_no: int
    ts: float
    client_ip: str
    user: str | None
    method: str
    target: str
    protocol: str
    status: int
    size: int
    referer: str | None
    user_agent: str | None


@dataclass
class ParseStats:
    """How a read went: counts per outcome and a few malformed lines as samples."""

    parsed: int = 0
    malformed: int = 0
    samples: list[tuple[str, int, str, str]] = field(default_factory=list)

    def reject(self, source: str, line_no: int, reason: str, text: str) -> None:
        self.malformed += 1
        if len(self.samples) < MAX_SAMPLES:
            self.samples.append((source, line_no, reason, text[:_SAMPLE_CHARS]))

    def to_json(self) -> dict[str, object]:
        return {
            "parsed": self.parsed,
            "malformed": self.malformed,
            "malformed_samples": [
                {"file": s, "line": n, "reason": r, "text": t} for s, n, r, t in self.samples
            ],
        }


class MalformedLine(ValueError):
    """A line that is not an access-log entry; the message is the reason."""


def _parse_time(text: str) -> float:
    m = _TIME_RE.fullmatch(text)
    if m is None:
        raise MalformedLine("bad timestamp")
    day, mon, year, hh, mm, ss, sign, oh, om = m.groups()
    month = _MONTHS.get(mon)
    if month is None:
        raise MalformedLine("bad month")
    offset = timedelta(hours=int(oh), minutes=int(om)) * (-1 if sign == "-" else 1)
    try:
        dt = datetime(
            int(year), month, int(day), int(hh), int(mm), int(ss), tzinfo=timezone(offset)
        )
    except ValueError:
        raise MalformedLine("bad timestamp") from None
    return dt.timestamp()


def _unescape(value: str) -> str:
    return value.replace('\\"', '"').replace("\\\\", "\\")


def _dash(value: str | None) -> str | None:
    return None if value is None or value == "-" else value


def parse_line(line: str, *, source: str = "", line_no: int = 0) -> LogRecord:
    """Parse one combined- or common-format line.

    Raises:
        MalformedLine: the line is not an access-log entry (the message says why).
    """
    m = _LINE_RE.fullmatch(line.rstrip("\r\n"))
    if m is None:
        raise MalformedLine("not combined/common format")
    request, referer, agent = m.group(5), m.group(8), m.group(9)
    if agent is None and m.group("extra").strip():
        raise MalformedLine("unterminated or extra fields")
    req = _REQUEST_RE.fullmatch(_unescape(request))
    if req is None:
        raise MalformedLine("no usable request line")
    size = m.group("size")
    return LogRecord(
        source=source,
        line_no=line_no,
        ts=_parse_time(m.group("time")),
        client_ip=m.group("host"),
        user=_dash(m.group("user")),
        method=req.group(1),
        target=req.group(2),
        protocol=req.group(3) or "HTTP/0.9",
        status=int(m.group("status")),
        size=0 if size == "-" else int(size),
        referer=_dash(None if referer is None else _unescape(referer)),
        user_agent=None if agent is None else _unescape(agent),
    )


def open_log(path: str | Path) -> BinaryIO:
    """Open a log file for binary reading, gunzipping it when it starts with the gzip magic."""
    fh = open(path, "rb")  # noqa: SIM115 - returned to the caller
    if fh.peek(2)[:2] == _GZIP_MAGIC:
        return gzip.GzipFile(fileobj=fh, mode="rb")  # type: ignore[return-value]
    return fh


def _lines(fh: BinaryIO) -> Iterator[bytes]:
    """Lines of at most MAX_LINE_BYTES + 1 bytes (a longer one is cut and flagged by length)."""
    while True:
        raw = fh.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while True:  # skip the rest of the overlong line
                rest = fh.readline(MAX_LINE_BYTES)
                if not rest or rest.endswith(b"\n"):
                    break
        yield raw


def iter_records(paths: Iterable[str | Path], stats: ParseStats) -> Iterator[LogRecord]:
    """Parsed records of every file in order; malformed lines go to ``stats``."""
    for path in paths:
        source = Path(path).name
        with open_log(path) as fh:
            for line_no, raw in enumerate(_lines(fh), 1):
                text = raw.decode("utf-8", errors="replace")
                if len(raw) > MAX_LINE_BYTES:
                    stats.reject(source, line_no, "line too long", text)
                    continue
                if not text.strip():
                    continue  # blank lines are not entries and not errors
                try:
                    record = parse_line(text, source=source, line_no=line_no)
                except MalformedLine as exc:
                    stats.reject(source, line_no, str(exc), text.rstrip("\r\n"))
                    continue
                stats.parsed += 1
                yield record


def read_logs(paths: Iterable[str | Path]) -> tuple[list[LogRecord], ParseStats]:
    """Every parsed record of ``paths``, sorted by time (stable: equal times keep file order)."""
    stats = ParseStats()
    records = list(iter_records(paths, stats))
    records.sort(key=lambda r: r.ts)
    return records, stats


@dataclass(frozen=True, slots=True)
class SessionRef:
    """The session a record belongs to.

    ``user_id`` is the log's user field or None; ``session_id`` is stable for the same input
    (the first session of an anonymous client is the gateway's own pseudo-session id).
    """

    user_id: str | None
    session_id: str
    identity: str
    index: int


def _digest(*parts: str) -> str:
    # Same construction as proxy.identity's anonymous pseudo-session, kept here so this module
    # has no JWT/crypto imports.
    return hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:32]


class Sessionizer:
    """Assigns records, in time order, to sessions split on inactivity gaps."""

    def __init__(self, gap_s: float = DEFAULT_GAP_S) -> None:
        if gap_s <= 0:
            raise ValueError("gap_s must be positive")
        self.gap_s = gap_s
        self._last: dict[str, tuple[float, int]] = {}
        self.sessions = 0

    def assign(self, record: LogRecord) -> SessionRef:
        """The session of ``record``; records must come in non-decreasing time order."""
        if record.user is not None:
            identity = "u:" + record.user
            base = f"log:{_digest('user', record.user)[:16]}"
        else:
            identity = "a:" + _digest(record.client_ip, record.user_agent or "")
            base = "anon:" + identity[2:]
        prev = self._last.get(identity)
        if prev is None:
            index = 0
            self.sessions += 1
        elif record.ts - prev[0] > self.gap_s:
            index = prev[1] + 1
            self.sessions += 1
        else:
            index = prev[1]
        self._last[identity] = (record.ts, index)
        session_id = base if index == 0 else f"{base}.{index}"
        return SessionRef(record.user, session_id, identity, index)

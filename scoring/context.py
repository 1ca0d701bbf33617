"""What one request looks like to the scorer: its context, its outcome, and its history.

The proxy builds a :class:`RequestContext` per request and an :class:`EventOutcome` after the
response; storage builds a :class:`HistorySnapshot` from one Redis round trip. All three are plain
frozen values so that feature extraction stays a pure function of them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

#: Decision names in increasing severity; the index is the severity code stored with each event.
DECISIONS: tuple[str, ...] = ("ALLOW", "MONITOR", "CHALLENGE", "REQUIRE_2FA", "BLOCK")
_SEVERITY = {name: i for i, name in enumerate(DECISIONS)}


def severity_of(decision: str) -> int:
    """Severity code of a decision name (0 = ALLOW ... 4 = BLOCK); unknown names count as ALLOW.

    Learning mode and shadow mode record their own labels; they carry no enforcement weight.
    """
    return _SEVERITY.get(decision.upper(), 0)


@lru_cache(maxsize=8192)
def network_of(ip: str) -> str:
    """Network prefix standing in for location: /24 for IPv4, /48 for IPv6.

    An unparsable address is its own network (it is still a stable, comparable value).
    """
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    bits = 24 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{addr}/{bits}", strict=False))


@dataclass(frozen=True, slots=True)
class RequestContext:
    """The request being scored, as the proxy sees it before forwarding."""

    ts: float
    method: str
    path: str
    route: str
    user_id: str | None
    session_id: str
    client_ip: str
    user_agent: str
    request_bytes: int
    sensitivity: int
    authenticated: bool


@dataclass(frozen=True, slots=True)
class EventOutcome:
    """What happened to a request: recorded into the history after the response."""

    status: int
    response_bytes: int
    latency_ms: float
    decision: str
    score: float


def _empty_f64() -> np.ndarray:
    return np.zeros(0, dtype=np.float64)


def _empty_i64() -> np.ndarray:
    return np.zeros(0, dtype=np.int64)


@dataclass(frozen=True, slots=True)
class HistorySnapshot:
    """A session's earlier events and the user's baselines, as read before scoring.

    Session events are column arrays ordered oldest → newest (the current request is NOT among
    them). Categorical columns are integer codes into the matching ``*_vocab`` tuple. User
    baseline fields describe the user's habits over the configured 7/30-day windows; ``*_last_seen``
    is the epoch time the current request's IP/network/device/route was last seen for this user
    (``None``: never within the long window).
    """

    # -- session events, oldest first --------------------------------------------------------
    ts: np.ndarray = field(default_factory=_empty_f64)
    status: np.ndarray = field(default_factory=_empty_i64)
    severity: np.ndarray = field(default_factory=_empty_i64)
    score: np.ndarray = field(default_factory=_empty_f64)
    route_codes: np.ndarray = field(default_factory=_empty_i64)
    route_vocab: tuple[str, ...] = ()
    ip_codes: np.ndarray = field(default_factory=_empty_i64)
    ip_vocab: tuple[str, ...] = ()
    device_codes: np.ndarray = field(default_factory=_empty_i64)
    device_vocab: tuple[str, ...] = ()
    # -- enforcement state of the session ------------------------------------------------------
    revoked: bool = False
    stepup_until: float | None = None
    session_first_seen: float | None = None
    # -- the user's baselines (current request's values looked up) -----------------------------
    ip_last_seen: float | None = None
    network_last_seen: float | None = None
    device_last_seen: float | None = None
    endpoint_last_seen: float | None = None
    ips_7d: int = 0
    networks_7d: int = 0
    devices_30d: int = 0
    other_sessions_24h: int = 0
    concurrent_sessions: int = 0
    avg_session_duration_s: float = 0.0
    session_switches_1h: int = 0
    bigram_count: float = 0.0
    bigram_total: float = 0.0
    trigram_count: float = 0.0
    trigram_total: float = 0.0
    hour_histogram: np.ndarray = field(default_factory=lambda: np.zeros(24, dtype=np.float64))

    @classmethod
    def empty(cls) -> HistorySnapshot:
        """A snapshot for a user and session never seen before."""
        return cls()

    @property
    def n_events(self) -> int:
        """Number of earlier events of the session held in the snapshot."""
        return int(self.ts.shape[0])

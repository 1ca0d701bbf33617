"""The 59 behavioural features: a pure function of (history snapshot, request context, now).

Five categories, as in the specification: temporal, statistical, sequence, context and
graph/relationship. ``docs/features.md`` is the reference table (definition, unit, range and the
behaviour each feature exposes); this module is its executable form.

Conventions
-----------
* The *session window* is the session's earlier events plus the current request. Rates, scores
  and outcome ratios use the earlier events only (the current request has no outcome yet);
  inter-arrival, burst, diversity and sequence features include the current request.
* An event stamped later than ``now`` (clock skew between replicas) counts as happening at
  ``now``; events may arrive out of order, times are sorted where order matters.
* Empty statistics are 0 (documented per feature), so the vector is always finite.
* Hours and weekdays are those of ``now`` in ``tz`` (the users' configured time zone).

Changing any definition, order or constant below changes :data:`FEATURE_SET_VERSION`.
"""

from __future__ import annotations

import math
from datetime import datetime, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo

import numpy as np

from scoring.context import HistorySnapshot, RequestContext
from scoring.useragent import fingerprint, is_bot_fingerprint

FEATURE_SET_VERSION = "bg-59.1"

_SPEC: tuple[tuple[str, str], ...] = (
    # temporal
    ("req_rate_1m", "temporal"),
    ("req_rate_5m", "temporal"),
    ("req_rate_1h", "temporal"),
    ("rate_acceleration", "temporal"),
    ("secs_since_last", "temporal"),
    ("hour_sin", "temporal"),
    ("hour_cos", "temporal"),
    ("dow_sin", "temporal"),
    ("dow_cos", "temporal"),
    ("iat_mean_s", "temporal"),
    ("iat_cv", "temporal"),
    ("burst_max_10s", "temporal"),
    ("hour_entropy_user", "temporal"),
    # statistical
    ("status_3xx_ratio", "statistical"),
    ("status_4xx_ratio", "statistical"),
    ("status_5xx_ratio", "statistical"),
    ("auth_failure_ratio", "statistical"),
    ("auth_failure_streak", "statistical"),
    ("score_mean", "statistical"),
    ("score_std", "statistical"),
    ("score_min", "statistical"),
    ("score_max", "statistical"),
    ("score_median", "statistical"),
    ("anomaly_ratio", "statistical"),
    ("challenge_ratio", "statistical"),
    ("block_ratio", "statistical"),
    ("endpoint_entropy", "statistical"),
    # sequence
    ("bigram_repeat_ratio", "sequence"),
    ("transition_predictability", "sequence"),
    ("trigram_predictability", "sequence"),
    ("sequence_regularity", "sequence"),
    ("cyclic_pattern", "sequence"),
    ("state_transition_rate", "sequence"),
    ("risk_trend", "sequence"),
    # context
    ("sensitivity", "context"),
    ("method_risk", "context"),
    ("request_bytes_log", "context"),
    ("session_age_s", "context"),
    ("session_event_count", "context"),
    ("is_weekend", "context"),
    ("is_business_hours", "context"),
    ("authenticated", "context"),
    ("ua_is_bot", "context"),
    ("user_history_log", "context"),
    # graph / relationship
    ("sessions_24h", "graph"),
    ("concurrent_sessions", "graph"),
    ("avg_session_duration_s", "graph"),
    ("session_switch_rate", "graph"),
    ("device_diversity_30d", "graph"),
    ("ip_diversity_7d", "graph"),
    ("network_diversity_7d", "graph"),
    ("session_ip_count", "graph"),
    ("session_device_count", "graph"),
    ("session_endpoint_count", "graph"),
    ("new_ip", "graph"),
    ("new_network", "graph"),
    ("new_device", "graph"),
    ("new_endpoint", "graph"),
    ("unusual_hour", "graph"),
)

FEATURE_NAMES: tuple[str, ...] = tuple(name for name, _ in _SPEC)
FEATURE_CATEGORIES: dict[str, str] = dict(_SPEC)
N_FEATURES = 59
INDEX: dict[str, int] = {name: i for i, name in enumerate(FEATURE_NAMES)}

#: Value of ``secs_since_last`` with no earlier event, and its upper clamp (one day).
NO_GAP_S = 86_400.0
#: Upper clamp of ``session_age_s`` (30 days).
MAX_SESSION_AGE_S = 30 * 86_400.0
#: Composite score from which an earlier request counts as an anomaly (the MONITOR threshold).
ANOMALY_SCORE = 0.65
BURST_WINDOW_S = 10.0
TREND_WINDOW = 20
MAX_CYCLE_LAG = 8
#: ``unusual_hour`` needs this many requests in the user's hour histogram before it can fire.
UNUSUAL_HOUR_MIN_OBS = 20.0
#: ... and fires when the current hour ±1 holds less than this share of them.
UNUSUAL_HOUR_SHARE = 0.02
_METHOD_RISK = {
    "GET": 0.0,
    "HEAD": 0.0,
    "OPTIONS": 0.0,
    "POST": 1.0,
    "PUT": 2.0,
    "PATCH": 2.0,
    "DELETE": 3.0,
}
_LOG2_24 = math.log2(24.0)
_AUTH_FAIL = (401, 403)

assert len(FEATURE_NAMES) == N_FEATURES == len(set(FEATURE_NAMES))


@lru_cache(maxsize=64)
def _zone(name: str) -> tzinfo:
    return ZoneInfo(name)


def _local(now: float, tz: str | tzinfo) -> tuple[float, int]:
    """Fractional local hour [0, 24) and weekday (Monday = 0) of ``now``."""
    zone = _zone(tz) if isinstance(tz, str) else tz
    dt = datetime.fromtimestamp(now, zone)
    return dt.hour + dt.minute / 60.0 + dt.second / 3600.0, dt.weekday()


def _code(vocab: tuple[str, ...], value: str) -> int:
    """Code of ``value`` in ``vocab``; a value not in it gets the next free code."""
    try:
        return vocab.index(value)
    except ValueError:
        return len(vocab)


def _with_current(codes: np.ndarray, vocab: tuple[str, ...], value: str) -> np.ndarray:
    """The session's codes followed by the current request's code."""
    out = np.empty(codes.shape[0] + 1, dtype=np.int64)
    out[:-1] = codes
    out[-1] = _code(vocab, value)
    return out


def _entropy_bits(counts: np.ndarray) -> float:
    total = float(counts.sum())
    if total <= 0:
        return 0.0
    p = counts / total
    p = p[p > 0]  # after dividing: a subnormal count can round to 0
    return max(0.0, -float(np.dot(p, np.log2(p))))


def _distinct(codes: np.ndarray) -> int:
    return int(np.count_nonzero(np.bincount(codes)))


def _temporal(
    out: np.ndarray, times: np.ndarray, now: float, local: tuple[float, int], hist: np.ndarray
) -> None:
    """``times``: earlier events' times, clamped to ``now`` and sorted, then ``now`` itself."""
    n = times.shape[0] - 1
    c1, c5, c60 = (
        n - np.searchsorted(times[:-1], (now - 60.0, now - 300.0, now - 3600.0), side="right")
    ).tolist()
    out[0], out[1], out[2] = c1, c5 / 5.0, c60 / 60.0
    out[3] = c1 - c5 / 5.0
    out[4] = min(now - float(times[-2]), NO_GAP_S) if n else NO_GAP_S
    hour, dow = local
    out[5], out[6] = math.sin(2 * math.pi * hour / 24.0), math.cos(2 * math.pi * hour / 24.0)
    out[7], out[8] = math.sin(2 * math.pi * dow / 7.0), math.cos(2 * math.pi * dow / 7.0)
    if n:
        mean = (now - float(times[0])) / n
        gaps = times[1:] - times[:-1]
        out[9] = mean
        if mean > 0:
            out[10] = math.sqrt(max(float(np.dot(gaps, gaps)) / n - mean * mean, 0.0)) / mean
    ends = np.searchsorted(times, times + BURST_WINDOW_S, side="left")
    out[11] = int((ends - np.arange(n + 1)).max())
    out[12] = _entropy_bits(hist) / _LOG2_24


def _outcomes(out: np.ndarray, st: np.ndarray, sev: np.ndarray) -> None:
    n = st.shape[0]
    if n:
        classes = np.bincount(np.minimum(np.maximum(st // 100, 0), 9), minlength=10).tolist()
        out[13], out[14], out[15] = classes[3] / n, classes[4] / n, sum(classes[5:]) / n
        passed = (st | 2) != 403  # 401 | 2 == 403 | 2 == 403: the two auth failures
        last_passed = np.flatnonzero(passed)
        out[16] = (n - np.count_nonzero(passed)) / n
        out[17] = n - 1 - int(last_passed[-1]) if last_passed.shape[0] else n
    if sev.shape[0]:
        levels = np.bincount(np.minimum(np.maximum(sev, 0), 4), minlength=5).tolist()
        out[24] = (levels[2] + levels[3]) / sev.shape[0]
        out[25] = levels[4] / sev.shape[0]


def _scores(out: np.ndarray, sc: np.ndarray) -> None:
    n = sc.shape[0]
    if not n:
        return
    ordered = np.sort(sc)
    mean = float(ordered.sum()) / n
    out[18] = mean
    out[19] = math.sqrt(max(float(np.dot(ordered, ordered)) / n - mean * mean, 0.0))
    out[20], out[21] = ordered[0], ordered[-1]
    out[22] = (ordered[(n - 1) // 2] + ordered[n // 2]) / 2.0
    out[23] = (n - np.searchsorted(ordered, ANOMALY_SCORE, side="left")) / n


def _pair_counts(s: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Distinct (previous, next) pairs of the route sequence, their counts, and the code width."""
    width = int(s.max()) + 1
    ids = s[:-1] * width + s[1:]
    if width <= 64:  # a dense count table is cheaper than sorting
        table = np.bincount(ids)
        present = np.flatnonzero(table)
        return present, table[present].astype(np.float64), width
    ids = np.sort(ids)
    starts = np.flatnonzero(np.concatenate(((True,), ids[1:] != ids[:-1])))
    counts = np.diff(np.append(starts, ids.shape[0])).astype(np.float64)
    return ids[starts], counts, width


def _regularity(pair_ids: np.ndarray, pair_counts: np.ndarray, width: int, n_routes: int) -> float:
    """1 − H(next | previous) / log2(routes); 1 when each route always has the same successor."""
    prev = pair_ids // width
    out_of_prev = np.bincount(prev, weights=pair_counts)[prev]
    n = float(pair_counts.sum())
    h = -float(np.dot(pair_counts / n, np.log2(pair_counts / out_of_prev)))
    return min(1.0, max(0.0, 1.0 - h / math.log2(max(2, n_routes))))


def _cyclic(s: np.ndarray) -> float:
    """How much better the sequence matches itself at some lag ≥ 2 than at lag 1.

    With ``L = min(MAX_CYCLE_LAG, m // 2)``, agreement at lag k is the share of positions
    ``i < m - L`` where ``s[i] == s[i + k]`` (the same positions for every lag).
    """
    m = s.shape[0]
    if m < 4:
        return 0.0
    lags = min(MAX_CYCLE_LAG, m // 2)
    s = np.ascontiguousarray(s)
    # Row i is s[i : i + lags + 1], a strided view (no copy) over the contiguous codes.
    window = np.ndarray(
        (m - lags, lags + 1), dtype=s.dtype, buffer=s, strides=(s.itemsize, s.itemsize)
    )
    agree = (window[:, 1:] == window[:, :1]).sum(axis=0).tolist()
    return max(0.0, (max(agree[1:]) - agree[0]) / (m - lags))


def _slope(y: np.ndarray) -> float:
    """Least-squares slope of ``y`` against its index (per request)."""
    n = y.shape[0]
    if n < 2:
        return 0.0
    x = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
    return float(np.dot(x, y) / np.dot(x, x))


def _smoothed(count: float, total: float) -> float:
    """(count + ½) / (total + 1) in [0, 1]: ½ without evidence, → 1 for the habitual next step."""
    count, total = max(count, 0.0), max(total, 0.0)
    return min(1.0, (count + 0.5) / (total + 1.0))


def _sequence(out: np.ndarray, snap: HistorySnapshot, s: np.ndarray) -> None:
    m = s.shape[0]
    if m >= 3:
        pair_ids, pair_counts, width = _pair_counts(s)
        out[27] = 1.0 - pair_ids.shape[0] / (m - 1)
        out[30] = _regularity(pair_ids, pair_counts, width, _distinct(s))
    out[28] = _smoothed(snap.bigram_count, snap.bigram_total)
    out[29] = _smoothed(snap.trigram_count, snap.trigram_total)
    out[31] = _cyclic(s)
    out[32] = np.count_nonzero(s[1:] != s[:-1]) / (m - 1) if m >= 2 else 0.0
    out[33] = _slope(snap.score[-TREND_WINDOW:])


def _session_age(snap: HistorySnapshot, t: np.ndarray, now: float) -> float:
    if snap.session_first_seen is not None:
        first = snap.session_first_seen
    elif t.size:
        first = float(t.min())
    else:
        return 0.0
    return min(max(now - first, 0.0), MAX_SESSION_AGE_S)


def _context(
    out: np.ndarray,
    snap: HistorySnapshot,
    ctx: RequestContext,
    t: np.ndarray,
    now: float,
    local: tuple[float, int],
    device: str,
    hist: np.ndarray,
) -> None:
    hour, dow = local
    out[34] = min(max(ctx.sensitivity, 0), 3)
    out[35] = _METHOD_RISK.get(ctx.method.upper(), 1.0)
    out[36] = math.log1p(max(ctx.request_bytes, 0))
    out[37] = _session_age(snap, t, now)
    out[38] = t.size
    out[39] = 1.0 if dow >= 5 else 0.0
    out[40] = 1.0 if dow < 5 and 9.0 <= hour < 18.0 else 0.0
    out[41] = 1.0 if ctx.authenticated else 0.0
    out[42] = 1.0 if is_bot_fingerprint(device) else 0.0
    out[43] = math.log1p(float(hist.sum()))


def _unusual_hour(hist: np.ndarray, hour: float) -> float:
    total = float(hist.sum())
    if total < UNUSUAL_HOUR_MIN_OBS:
        return 0.0
    h = int(hour)
    near = hist[(h - 1) % 24] + hist[h] + hist[(h + 1) % 24]
    return 1.0 if near / total < UNUSUAL_HOUR_SHARE else 0.0


def _graph(
    out: np.ndarray,
    snap: HistorySnapshot,
    ctx: RequestContext,
    routes: np.ndarray,
    hour: float,
    device: str,
    hist: np.ndarray,
) -> None:
    out[44] = snap.other_sessions_24h + 1
    out[45] = snap.concurrent_sessions
    out[46] = max(snap.avg_session_duration_s, 0.0)
    out[47] = snap.session_switches_1h
    out[48] = snap.devices_30d
    out[49] = snap.ips_7d
    out[50] = snap.networks_7d
    out[51] = _distinct(_with_current(snap.ip_codes, snap.ip_vocab, ctx.client_ip))
    out[52] = _distinct(_with_current(snap.device_codes, snap.device_vocab, device))
    out[53] = _distinct(routes)
    out[54] = 1.0 if snap.ip_last_seen is None else 0.0
    out[55] = 1.0 if snap.network_last_seen is None else 0.0
    out[56] = 1.0 if snap.device_last_seen is None else 0.0
    out[57] = 1.0 if snap.endpoint_last_seen is None else 0.0
    out[58] = _unusual_hour(hist, hour)


def extract(
    snapshot: HistorySnapshot, ctx: RequestContext, now: float, tz: str | tzinfo = "UTC"
) -> np.ndarray:
    """The feature vector of one request.

    Parameters
    ----------
    snapshot
        The session's earlier events and the user's baselines (storage reads them in one trip).
    ctx
        The current request.
    now
        Current epoch time in seconds; must be finite.
    tz
        Time zone (IANA name or tzinfo) in which hours and weekdays are taken.

    Returns
    -------
    numpy.ndarray
        float32 of shape ``(59,)`` ordered as :data:`FEATURE_NAMES`; always finite.
    """
    if not math.isfinite(now):
        raise ValueError("now must be a finite epoch time")
    out = np.zeros(N_FEATURES, dtype=np.float64)
    # NaN or future event times (clock skew) count as "now"; fmin drops NaN.
    times = np.sort(np.fmin(snapshot.ts, now))
    times = np.append(times, now)
    hist = np.fmax(snapshot.hour_histogram, 0.0)
    local = _local(now, tz)
    device = fingerprint(ctx.user_agent)
    routes = _with_current(snapshot.route_codes, snapshot.route_vocab, ctx.route)
    _temporal(out, times, now, local, hist)
    _outcomes(out, snapshot.status, snapshot.severity)
    _scores(out, snapshot.score)
    out[26] = _entropy_bits(np.bincount(routes))
    _sequence(out, snapshot, routes)
    _context(out, snapshot, ctx, times[:-1], now, local, device, hist)
    _graph(out, snapshot, ctx, routes, local[0], device, hist)
    if not np.isfinite(out).all():
        out = np.nan_to_num(out, nan=0.0, posinf=3.0e38, neginf=-3.0e38)
    return out.astype(np.float32)

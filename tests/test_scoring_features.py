"""Each feature against small hand-built histories; expected values are worked out by hand."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scoring.context import HistorySnapshot, RequestContext
from scoring.features import (
    FEATURE_CATEGORIES,
    FEATURE_NAMES,
    FEATURE_SET_VERSION,
    INDEX,
    N_FEATURES,
    NO_GAP_S,
    extract,
)

MONDAY_NOON = 1704110400.0  # 2024-01-01 12:00:00 UTC, a Monday
CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36"


def ctx(**kw: object) -> RequestContext:
    base = dict(
        ts=MONDAY_NOON,
        method="GET",
        path="/a",
        route="/a",
        user_id="u1",
        session_id="s1",
        client_ip="10.0.0.1",
        user_agent=CHROME,
        request_bytes=0,
        sensitivity=0,
        authenticated=True,
    )
    base.update(kw)
    return RequestContext(**base)  # type: ignore[arg-type]


def events(offsets: list[float], **cols: object) -> HistorySnapshot:
    """A session whose events happened ``offsets`` seconds before MONDAY_NOON."""
    n = len(offsets)
    kw: dict[str, object] = dict(
        ts=np.array([MONDAY_NOON - o for o in offsets]),
        status=np.full(n, 200),
        severity=np.zeros(n, dtype=np.int64),
        score=np.zeros(n),
        route_codes=np.zeros(n, dtype=np.int64),
        route_vocab=("/a",),
    )
    kw.update(cols)
    return HistorySnapshot(**kw)  # type: ignore[arg-type]


def f(
    snap: HistorySnapshot,
    c: RequestContext | None = None,
    now: float = MONDAY_NOON,
    tz: str = "UTC",
) -> dict[str, float]:
    vec = extract(snap, c or ctx(), now, tz)
    assert vec.dtype == np.float32 and vec.shape == (N_FEATURES,)
    assert np.isfinite(vec).all()
    return {name: float(vec[i]) for i, name in enumerate(FEATURE_NAMES)}


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6)


def test_names_are_59_unique_in_five_categories() -> None:
    assert len(FEATURE_NAMES) == 59 == N_FEATURES == len(set(FEATURE_NAMES))
    assert set(FEATURE_CATEGORIES.values()) == {
        "temporal",
        "statistical",
        "sequence",
        "context",
        "graph",
    }
    assert FEATURE_SET_VERSION
    assert all(FEATURE_NAMES[INDEX[n]] == n for n in FEATURE_NAMES)


def test_empty_history_gives_documented_values() -> None:
    v = f(HistorySnapshot.empty())
    expected_nonzero = {
        "secs_since_last": NO_GAP_S,
        "hour_cos": -1.0,
        "dow_cos": 1.0,
        "burst_max_10s": 1.0,
        "transition_predictability": 0.5,
        "trigram_predictability": 0.5,
        "is_business_hours": 1.0,
        "authenticated": 1.0,
        "sessions_24h": 1.0,
        "session_ip_count": 1.0,
        "session_device_count": 1.0,
        "session_endpoint_count": 1.0,
        "new_ip": 1.0,
        "new_network": 1.0,
        "new_device": 1.0,
        "new_endpoint": 1.0,
    }
    for name, value in v.items():
        assert close(value, expected_nonzero.get(name, 0.0)), name


def test_request_rates_and_gap() -> None:
    v = f(events([10, 30, 100, 1000, 5000]))
    assert v["req_rate_1m"] == 2.0
    assert close(v["req_rate_5m"], 3 / 5)
    assert close(v["req_rate_1h"], 4 / 60)
    assert close(v["rate_acceleration"], 2 - 3 / 5)
    assert v["secs_since_last"] == 10.0
    assert v["session_event_count"] == 5.0


def test_inter_arrival_statistics() -> None:
    even = f(events([30, 20, 10]))
    assert close(even["iat_mean_s"], 10.0) and close(even["iat_cv"], 0.0)
    uneven = f(events([30, 10]))  # gaps 20 and 10: mean 15, population std 5
    assert close(uneven["iat_mean_s"], 15.0) and close(uneven["iat_cv"], 5 / 15)


def test_out_of_order_events_are_sorted() -> None:
    assert close(f(events([10, 30]))["iat_mean_s"], 15.0)
    assert f(events([10, 30]))["secs_since_last"] == 10.0


def test_identical_timestamps() -> None:
    v = f(events([0, 0, 0]))
    assert v["iat_mean_s"] == 0.0 and v["iat_cv"] == 0.0 and v["secs_since_last"] == 0.0
    assert v["burst_max_10s"] == 4.0
    assert v["req_rate_1m"] == 3.0


def test_future_timestamps_count_as_now() -> None:
    v = f(events([-100, -5]))  # both in the future (clock skew)
    assert v["secs_since_last"] == 0.0 and v["req_rate_1m"] == 2.0 and v["iat_mean_s"] == 0.0


def test_burst_window() -> None:
    # times -25, -24, -23, -5, 0: the densest 10 s window holds -25..-23
    assert f(events([25, 24, 23, 5]))["burst_max_10s"] == 3.0


def test_local_time_encoding_and_flags() -> None:
    v = f(HistorySnapshot.empty())
    assert close(v["hour_sin"], 0.0) and close(v["hour_cos"], -1.0)
    saturday = MONDAY_NOON + 5 * 86400
    s = f(HistorySnapshot.empty(), now=saturday)
    assert s["is_weekend"] == 1.0 and s["is_business_hours"] == 0.0
    assert close(s["dow_sin"], math.sin(2 * math.pi * 5 / 7))
    assert f(HistorySnapshot.empty(), now=MONDAY_NOON - 3 * 3600 - 60)["is_business_hours"] == 0.0
    assert f(HistorySnapshot.empty(), now=MONDAY_NOON + 6 * 3600)["is_business_hours"] == 0.0
    ny = f(HistorySnapshot.empty(), tz="America/New_York")  # 07:00 EST
    assert close(ny["hour_sin"], math.sin(2 * math.pi * 7 / 24))
    assert ny["is_business_hours"] == 0.0


def test_outcome_distribution_and_auth_failure_streak() -> None:
    status = np.array([200, 302, 401, 403, 404, 500, 401, 401])
    v = f(events([80, 70, 60, 50, 40, 30, 20, 10], status=status))
    assert close(v["status_3xx_ratio"], 1 / 8)
    assert close(v["status_4xx_ratio"], 5 / 8)
    assert close(v["status_5xx_ratio"], 1 / 8)
    assert close(v["auth_failure_ratio"], 4 / 8)
    assert v["auth_failure_streak"] == 2.0
    all_fail = f(events([3, 2, 1], status=np.array([401, 403, 401])))
    assert all_fail["auth_failure_streak"] == 3.0


def test_score_statistics_and_trend() -> None:
    v = f(events([40, 30, 20, 10], score=np.array([0.1, 0.7, 0.3, 0.9])))
    assert close(v["score_mean"], 0.5)
    assert close(v["score_std"], math.sqrt(0.1))
    assert close(v["score_min"], 0.1) and close(v["score_max"], 0.9)
    assert close(v["score_median"], 0.5)
    assert close(v["anomaly_ratio"], 0.5)
    # x - mean(x) = -1.5, -.5, .5, 1.5; sum(x*y) = 1.0; sum(x^2) = 5
    assert close(v["risk_trend"], 0.2)


def test_decision_severity_distribution() -> None:
    v = f(events([6, 5, 4, 3, 2, 1], severity=np.array([0, 1, 2, 3, 4, 4])))
    assert close(v["challenge_ratio"], 2 / 6) and close(v["block_ratio"], 2 / 6)


def _routes(seq: str) -> dict[str, object]:
    vocab = tuple(sorted(set(seq)))
    return dict(route_codes=np.array([vocab.index(ch) for ch in seq]), route_vocab=vocab)


def test_alternating_sequence() -> None:
    # earlier A B A, current B: bigrams AB BA AB
    v = f(events([3, 2, 1], **_routes("ABA")), ctx(route="B"))
    assert close(v["endpoint_entropy"], 1.0)
    assert close(v["bigram_repeat_ratio"], 1 / 3)
    assert v["state_transition_rate"] == 1.0
    assert close(v["cyclic_pattern"], 1.0)
    assert close(v["sequence_regularity"], 1.0)
    assert v["session_endpoint_count"] == 2.0
    assert v["new_endpoint"] == 1.0


def test_branching_sequence_regularity() -> None:
    # A B A C: pairs AB BA AC; H(next|prev) = 2/3 bit over log2(3 routes)
    v = f(events([3, 2, 1], **_routes("ABA")), ctx(route="C"))
    assert close(v["sequence_regularity"], 1 - (2 / 3) / math.log2(3))
    assert close(v["bigram_repeat_ratio"], 0.0)


def test_monotone_sequence_is_not_cyclic() -> None:
    v = f(events([4, 3, 2, 1], **_routes("AAAA")), ctx(route="A"))
    assert v["cyclic_pattern"] == 0.0 and v["state_transition_rate"] == 0.0
    assert close(v["bigram_repeat_ratio"], 3 / 4)
    assert v["endpoint_entropy"] == 0.0


def test_predictability_from_user_transition_counts() -> None:
    snap = replace(events([1]), bigram_count=3.0, bigram_total=5.0)
    v = f(snap)
    assert close(v["transition_predictability"], 3.5 / 6)
    assert close(v["trigram_predictability"], 0.5)


def test_request_context_features() -> None:
    v = f(
        HistorySnapshot.empty(),
        ctx(
            method="POST",
            request_bytes=1023,
            sensitivity=5,
            authenticated=False,
            user_agent="Googlebot/2.1",
        ),
    )
    assert v["method_risk"] == 1.0 and v["sensitivity"] == 3.0
    assert close(v["request_bytes_log"], math.log(1024))
    assert v["authenticated"] == 0.0 and v["ua_is_bot"] == 1.0
    assert f(HistorySnapshot.empty(), ctx(method="DELETE"))["method_risk"] == 3.0
    assert f(HistorySnapshot.empty(), ctx(method="patch"))["method_risk"] == 2.0


def test_session_age() -> None:
    assert f(replace(events([5]), session_first_seen=MONDAY_NOON - 100))["session_age_s"] == 100
    assert f(events([50, 5]))["session_age_s"] == 50.0
    assert f(replace(events([]), session_first_seen=MONDAY_NOON + 9))["session_age_s"] == 0.0


def test_user_relationship_values() -> None:
    snap = replace(
        events([3, 2, 1]),
        ip_codes=np.array([0, 0, 1]),
        ip_vocab=("1.1.1.1", "2.2.2.2"),
        device_codes=np.array([0, 0, 0]),
        device_vocab=("chrome|windows|desktop",),
        other_sessions_24h=2,
        concurrent_sessions=1,
        avg_session_duration_s=600.0,
        session_switches_1h=4,
        devices_30d=2,
        ips_7d=3,
        networks_7d=2,
        ip_last_seen=MONDAY_NOON - 10,
        network_last_seen=MONDAY_NOON - 10,
        device_last_seen=MONDAY_NOON - 10,
        endpoint_last_seen=MONDAY_NOON - 10,
    )
    v = f(snap, ctx(client_ip="3.3.3.3"))
    assert v["sessions_24h"] == 3.0 and v["concurrent_sessions"] == 1.0
    assert v["avg_session_duration_s"] == 600.0 and v["session_switch_rate"] == 4.0
    assert v["device_diversity_30d"] == 2.0 and v["ip_diversity_7d"] == 3.0
    assert v["network_diversity_7d"] == 2.0
    assert v["session_ip_count"] == 3.0 and v["session_device_count"] == 1.0
    assert v["new_ip"] == v["new_network"] == v["new_device"] == v["new_endpoint"] == 0.0


def _hist(bins: dict[int, float]) -> np.ndarray:
    h = np.zeros(24)
    for k, c in bins.items():
        h[k] = c
    return h


def test_hour_habits() -> None:
    night_owl = f(replace(HistorySnapshot.empty(), hour_histogram=_hist({3: 99})))
    assert night_owl["unusual_hour"] == 1.0
    assert close(night_owl["user_history_log"], math.log(100))
    assert night_owl["hour_entropy_user"] == 0.0
    near = f(replace(HistorySnapshot.empty(), hour_histogram=_hist({3: 99, 11: 3})))
    assert near["unusual_hour"] == 0.0  # 3 of 102 within ±1 h of noon is ≥ 2 %
    few = f(replace(HistorySnapshot.empty(), hour_histogram=_hist({3: 10})))
    assert few["unusual_hour"] == 0.0  # too little history to judge
    two = f(replace(HistorySnapshot.empty(), hour_histogram=_hist({3: 5, 4: 5})))
    assert close(two["hour_entropy_user"], 1 / math.log2(24))
    flat = f(replace(HistorySnapshot.empty(), hour_histogram=np.ones(24)))
    assert close(flat["hour_entropy_user"], 1.0)


def test_nan_inputs_stay_finite() -> None:
    snap = events([2, 1], score=np.array([np.nan, 0.5]))
    snap = replace(snap, ts=np.array([np.nan, MONDAY_NOON - 1]), hour_histogram=np.full(24, np.nan))
    f(snap)


def test_non_finite_now_is_rejected() -> None:
    with pytest.raises(ValueError):
        extract(HistorySnapshot.empty(), ctx(), float("nan"))


@st.composite
def histories(draw: st.DrawFn) -> tuple[HistorySnapshot, RequestContext, float]:
    n = draw(st.integers(0, 220))
    now = draw(st.floats(1e9, 2e9))
    offs = draw(st.lists(st.floats(-1e5, 1e7, allow_nan=False), min_size=n, max_size=n))
    nroutes = draw(st.integers(1, 80))
    codes = draw(st.lists(st.integers(0, nroutes - 1), min_size=n, max_size=n))
    statuses = draw(st.lists(st.integers(100, 599), min_size=n, max_size=n))
    scores = draw(st.lists(st.floats(0, 1), min_size=n, max_size=n))
    sev = draw(st.lists(st.integers(0, 4), min_size=n, max_size=n))
    hist = draw(st.lists(st.floats(0, 1e6), min_size=24, max_size=24))
    snap = HistorySnapshot(
        ts=now - np.array(offs, dtype=np.float64),
        status=np.array(statuses, dtype=np.int64),
        severity=np.array(sev, dtype=np.int64),
        score=np.array(scores, dtype=np.float64),
        route_codes=np.array(codes, dtype=np.int64),
        route_vocab=tuple(f"/r{i}" for i in range(nroutes)),
        ip_codes=np.zeros(n, dtype=np.int64),
        ip_vocab=("1.1.1.1",),
        device_codes=np.zeros(n, dtype=np.int64),
        device_vocab=("x|y|z",),
        session_first_seen=draw(st.none() | st.floats(0, 3e9)),
        avg_session_duration_s=draw(st.floats(0, 1e7)),
        bigram_count=draw(st.floats(0, 1e6)),
        bigram_total=draw(st.floats(0, 1e6)),
        hour_histogram=np.array(hist),
    )
    c = ctx(
        route=f"/r{draw(st.integers(0, 90))}",
        request_bytes=draw(st.integers(-5, 10**12)),
        method=draw(st.sampled_from(["GET", "POST", "BREW", ""])),
        user_agent=draw(st.text(max_size=40)),
    )
    return snap, c, now


@settings(max_examples=150, deadline=None)
@given(histories())
def test_random_histories_give_59_finite_deterministic_values(
    case: tuple[HistorySnapshot, RequestContext, float],
) -> None:
    snap, c, now = case
    a = extract(snap, c, now)
    assert a.shape == (59,) and a.dtype == np.float32 and np.isfinite(a).all()
    assert np.array_equal(a, extract(snap, c, now))

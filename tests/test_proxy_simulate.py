"""The traffic simulator: deterministic plans, labels, the shape of each attack, the live driver."""

from __future__ import annotations

import io
import socket
from collections import Counter
from datetime import UTC, datetime

import pytest
from aiohttp import web

from proxy.accesslog import parse_line
from proxy.sample_upstream import create_sample_upstream
from proxy.simulate import (
    NORMAL,
    SCENARIOS,
    build_population,
    drive,
    gateway_action,
    generate_history,
    plan_live,
    summarize,
    write_log,
)

START = datetime(2024, 3, 4, tzinfo=UTC)  # a Monday


def _history(seed: int = 3, rate: float = 0.05, days: int = 7) -> list:
    users = build_population(12, seed)
    return generate_history(users, start=START, days=days, seed=seed, attack_rate=rate)


def _log_text(plan: list, seed: int = 3) -> str:
    buf = io.StringIO()
    write_log(plan, buf, None, build_population(12, seed))
    return buf.getvalue()


def test_same_seed_same_log_other_seed_other_log() -> None:
    assert _log_text(_history(3)) == _log_text(_history(3))
    assert _log_text(_history(3)) != _log_text(_history(4), seed=4)


def test_population_is_the_upstreams_accounts() -> None:
    users = build_population(5, 1)
    assert [u.name for u in users] == [f"user{i}" for i in range(1, 6)]
    assert all(1 <= len(u.devices) <= 2 and u.start_hour < u.end_hour for u in users)
    with pytest.raises(ValueError):
        build_population(201, 1)


def test_every_request_labelled_and_attack_rate_held() -> None:
    plan = _history(rate=0.1, days=14)
    assert {r.label for r in plan} == {NORMAL, *SCENARIOS}
    assert all((r.attack_id is None) == (r.label == NORMAL) for r in plan)
    attack_sessions = {r.session for r in plan if r.attack_id}
    normal_sessions = {r.session for r in plan} - attack_sessions
    attacks = {r.attack_id for r in plan if r.attack_id}
    # attacks / (attacks + normal sessions) = 10 %; an attack session opening with the victim's
    # own (normal-labelled) login is still an attack session
    assert len(attacks) == round(0.1 * len(normal_sessions) / 0.9)
    assert all(START.timestamp() <= r.ts < START.timestamp() + 14 * 86400 for r in plan)
    assert [r.ts for r in plan] == sorted(r.ts for r in plan)


def _by_scenario(plan: list) -> dict[str, list]:
    out: dict[str, list] = {}
    for r in plan:
        if r.attack_id:
            out.setdefault(r.attack_id, []).append(r)
    return out


def test_each_scenario_has_its_shape() -> None:
    users = build_population(12, 3)
    homes = {u.home_ip for u in users} | {u.office_ip for u in users}
    plan = generate_history(users, start=START, days=14, seed=3, attack_rate=0.15)
    text = _log_text(plan)
    status = [parse_line(line).status for line in text.splitlines()]
    statuses = {id(r): s for r, s in zip(plan, status, strict=True)}
    seen = set()
    for rs in _by_scenario(plan).values():
        label = rs[0].label
        seen.add(label)
        gaps = [b.ts - a.ts for a, b in zip(rs, rs[1:], strict=False)]
        if label == "credential_stuffing":
            assert len(rs) >= 20 and all(r.path == "/api/auth/login" for r in rs)
            assert all(statuses[id(r)] == 401 for r in rs)  # all guesses are wrong
            assert all(r.user is None for r in rs)
        elif label == "enumeration":
            ids = [int(r.path.rsplit("/", 1)[1]) for r in rs]
            assert len(set(ids)) == len(ids) >= 40 and ids == sorted(ids)
        elif label == "export_burst":
            assert sum(r.path == "/api/financial/export" for r in rs) >= 3
            assert max(gaps) <= 4.0
        elif label == "admin_probe":
            assert all("admin" in r.path or r.path in ("/.env", "/api/internal/debug") for r in rs)
            assert all(statuses[id(r)] in (403, 404) for r in rs)
        elif label in ("token_replay", "impossible_travel"):
            assert all(r.client_ip not in homes for r in rs)  # a network the user never used
            assert all(r.user == rs[0].account for r in rs)  # with the victim's identity
        elif label == "slow_low":
            assert min(gaps) >= 60.0 and len(rs) >= 10
    assert seen == set(SCENARIOS)


def test_impossible_travel_follows_the_victims_own_requests() -> None:
    plan = generate_history(build_population(12, 3), start=START, days=14, seed=3, attack_rate=0.15)
    for rs in _by_scenario(plan).values():
        if rs[0].label != "impossible_travel":
            continue
        before = [r for r in plan if r.session == rs[0].session and r.label == NORMAL]
        assert len(before) >= 3 and before[-1].ts < rs[0].ts <= before[-1].ts + 240
        assert before[-1].client_ip != rs[0].client_ip
        assert before[-1].user_agent == rs[0].user_agent


def test_log_lines_parse_with_user_field() -> None:
    plan = _history()
    records = [parse_line(line) for line in _log_text(plan).splitlines()]
    assert len(records) == len(plan)
    assert [r.user for r in records] == [p.user for p in plan]
    logins = [r for r in records if r.target == "/api/auth/login"]
    assert logins and all(r.user is None for r in logins)


@pytest.mark.parametrize(
    ("status", "body", "want"),
    [
        (401, {"action": "challenge", "prediction_id": "p1"}, "CHALLENGE"),
        (401, {"action": "2fa"}, "REQUIRE_2FA"),
        (401, {"action": "REQUIRE_2FA"}, "REQUIRE_2FA"),
        (403, {"action": "BLOCK"}, "BLOCK"),
        (403, {"error": "forbidden"}, None),  # the upstream's own 403
        (401, {"error": "invalid credentials"}, None),
        (200, {"action": "BLOCK"}, None),
        (403, "not json", None),
    ],
)
def test_gateway_action(status: int, body: object, want: str | None) -> None:
    assert gateway_action(status, body) == want


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_live_driver_logs_in_and_records_answers() -> None:
    """Against the sample upstream itself (no gateway): logins succeed, labels are kept."""
    runner = web.AppRunner(create_sample_upstream(latency_scale=0.0))
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        users = build_population(6, 5)
        plan = plan_live(
            users,
            seed=5,
            now=START.timestamp(),
            sessions=6,
            duration_s=200,
            attack_rate=0.5,
            scenarios=("credential_stuffing", "enumeration"),
        )
        results = await drive(
            f"http://127.0.0.1:{port}", plan, duration_s=10.0, max_requests=120, time_scale=0.005
        )
    finally:
        await runner.cleanup()
    assert 0 < len(results) <= 120
    labels = Counter(r.label for r in results)
    assert labels[NORMAL] > 0 and labels["credential_stuffing"] + labels["enumeration"] > 0
    ok_logins = [r for r in results if r.path == "/api/auth/login" and r.label == NORMAL]
    assert ok_logins and all(r.status == 200 for r in ok_logins if r.error is None)
    authed = [r for r in results if r.label == NORMAL and r.path != "/api/auth/login"]
    assert authed and all(r.status in (200, 201) for r in authed)  # the JWT was used
    assert all(r.action is None for r in results)  # no gateway in front
    summary = summarize(results)
    assert summary["normal"]["challenge_or_stronger"] == 0.0
    assert all(v["caught"] == 0 for v in summary["scenarios"].values())


async def test_live_driver_refuses_non_loopback() -> None:
    with pytest.raises(ValueError, match="127.0.0.1"):
        await drive("http://example.org", [], duration_s=1, max_requests=1)

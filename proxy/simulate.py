"""Traffic simulator: users with habits plus labelled attacks, offline (a log) or live (HTTP).

A *population* of users is drawn from a seed: each has a time zone and working hours, one or two
devices (user agents), a home and an office network, favourite endpoints (a Markov chain over
the sample API), a think-time scale and a chance of travelling. Attack sessions are injected at
a known rate, cycling through :data:`SCENARIOS`. Every request carries its ground truth
(``normal`` or the scenario name) and the attack session it belongs to.

* :func:`generate_history` plans weeks of timestamped traffic quickly; :func:`write_log` writes it
  as an Apache combined log whose user field is set on authenticated requests (so it goes
  through ``import-log`` like any other log), with a JSONL file of labels beside it.
* :func:`drive` sends a bounded plan to a gateway on 127.0.0.1 with aiohttp, logging in through
  the gateway for JWTs and presenting each user's network via ``X-Forwarded-For`` (the gateway
  must list 127.0.0.1 as a trusted proxy); it records each request's label and the answer.

Deterministic for a seed: the population, plans and labels depend on nothing else (the live
driver's answers depend on the gateway, of course).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import math
import random
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import IO, Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

__all__ = (
    "NORMAL",
    "SCENARIOS",
    "LiveResult",
    "SimRequest",
    "UserProfile",
    "add_simulate_parser",
    "build_population",
    "drive",
    "generate_history",
    "plan_live",
    "run_simulate",
    "summarize",
    "write_log",
)

NORMAL = "normal"
SCENARIOS: tuple[str, ...] = (
    "credential_stuffing",
    "token_replay",
    "enumeration",
    "export_burst",
    "admin_probe",
    "impossible_travel",
    "slow_low",
)
LOGIN = "/api/auth/login"
DEMO_PASSWORD = "pass"  # noqa: S105 - the sample upstream's demo accounts, not a secret
N_TRANSACTIONS = 500  # the sample upstream's seeded transaction ids 1..500
_ZONES = (
    "Europe/Berlin",
    "Europe/London",
    "America/New_York",
    "America/Chicago",
    "America/Los_Angeles",
    "Asia/Tokyo",
    "Asia/Kolkata",
    "Australia/Sydney",
    "Europe/Madrid",
    "America/Sao_Paulo",
)
_BROWSERS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.2 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/119.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36 Edg/120.0.0.0",
)
_MOBILE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.2 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Mobile Safari/537.36",
)
_TOOLS = (
    "python-requests/2.31.0",
    "curl/8.4.0",
    "Go-http-client/1.1",
    "okhttp/4.12.0",
    "Mozilla/5.0 (compatible; scanner/1.0)",
)
_ADMIN_PROBES = (
    "/api/admin/users",
    "/api/admin/settings",
    "/api/admin/users/1",
    "/admin",
    "/api/admin/export",
    "/api/admin/roles",
    "/.env",
    "/api/internal/debug",
    "/api/admin/audit-log",
    "/wp-admin/",
)
# Habit chain: action -> successors; a user's weights reshape the successor choice.
_ACTIONS = ("list", "get", "create", "expenses", "reports", "export")
_NEXT = {
    "start": ("list", "expenses", "reports"),
    "list": ("get", "get", "create", "expenses", "list"),
    "get": ("get", "list", "create", "expenses"),
    "create": ("list", "get", "expenses"),
    "expenses": ("list", "reports", "expenses", "create"),
    "reports": ("export", "list", "expenses"),
    "export": ("list", "reports"),
}


# ------------------------------------------------------------------------------ population


@dataclass(frozen=True, slots=True)
class UserProfile:
    """One user's habits."""

    name: str
    password: str
    role: str
    tz: str
    start_hour: float
    end_hour: float
    weekend_rate: float
    sessions_per_day: float
    devices: tuple[str, ...]
    home_ip: str
    office_ip: str
    travel_ip: str
    travel_rate: float
    think_median_s: float
    session_length: int
    habits: tuple[tuple[str, float], ...]

    def weight(self, action: str) -> float:
        return dict(self.habits).get(action, 1.0)


def _ip(rng: random.Random, first_octets: Sequence[int]) -> str:
    a, b, c = rng.randrange(256), rng.randrange(256), rng.randrange(1, 255)
    return f"{rng.choice(first_octets)}.{a}.{b}.{c}"


def _user(rng: random.Random, i: int) -> UserProfile:
    role = rng.choices(("clerk", "accountant", "manager"), (5, 3, 2))[0]
    devices = (rng.choice(_BROWSERS),) + ((rng.choice(_MOBILE),) if rng.random() < 0.4 else ())
    start = rng.choice((7.0, 7.5, 8.0, 8.5, 9.0, 9.5, 10.0))
    export_w = {"clerk": 0.05, "accountant": 0.6, "manager": 0.3}[role]
    habits = tuple((a, round(rng.uniform(0.3, 2.0), 2)) for a in _ACTIONS if a != "export")
    return UserProfile(
        name=f"user{i}",
        password=DEMO_PASSWORD,
        role=role,
        tz=rng.choice(_ZONES),
        start_hour=start,
        end_hour=start + rng.choice((7.5, 8.0, 8.5, 9.0)),
        weekend_rate=rng.choice((0.0, 0.05, 0.15)),
        sessions_per_day=rng.uniform(1.0, 3.0),
        devices=devices,
        home_ip=_ip(rng, range(81, 96)),
        office_ip=_ip(rng, range(62, 66)),
        travel_ip=_ip(rng, (203, 202, 200)),
        travel_rate=rng.choice((0.0, 0.0, 0.1, 0.2)),
        think_median_s=rng.uniform(4.0, 20.0),
        session_length=rng.randint(5, 25),
        habits=(*habits, ("export", export_w)),
    )


def build_population(n_users: int, seed: int) -> tuple[UserProfile, ...]:
    """``user1 … userN`` (the sample upstream's accounts, password ``pass``); N ≤ 200."""
    if not 1 <= n_users <= 200:
        raise ValueError("n_users must be within 1..200 (the sample upstream's accounts)")
    rng = random.Random(f"population:{seed}")
    return tuple(_user(rng, i) for i in range(1, n_users + 1))


# ------------------------------------------------------------------------------ requests


@dataclass(frozen=True, slots=True)
class SimRequest:
    """One planned request. ``ts`` is epoch seconds (offline) or seconds from the run's start
    (live). ``user`` is the identity a log would show (None before login / anonymous)."""

    ts: float
    method: str
    path: str
    label: str
    session: str
    client_ip: str
    user_agent: str
    account: str | None
    user: str | None
    password: str | None = None
    body: dict[str, Any] | None = None
    attack_id: str | None = None


@dataclass
class _Session:
    """Builds one session's requests with think times."""

    rng: random.Random
    t: float
    session: str
    ip: str
    ua: str
    account: str | None
    label: str = NORMAL
    attack_id: str | None = None
    out: list[SimRequest] = field(default_factory=list)

    def add(
        self,
        method: str,
        path: str,
        *,
        gap: float = 0.0,
        anonymous: bool = False,
        password: str | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        self.t += gap
        self.out.append(
            SimRequest(
                self.t,
                method,
                path,
                self.label,
                self.session,
                self.ip,
                self.ua,
                self.account,
                None if anonymous else self.account,
                password,
                body,
                self.attack_id,
            )
        )

    def login(self, password: str, *, gap: float = 0.0) -> None:
        self.add(
            "POST",
            LOGIN,
            gap=gap,
            anonymous=True,
            password=password,
            body={"username": self.account, "password": password},
        )


def _think(rng: random.Random, median: float) -> float:
    return min(600.0, max(0.8, rng.lognormvariate(math.log(median), 0.7)))


def _action_request(s: _Session, action: str) -> tuple[str, str, dict[str, Any] | None]:
    if action == "list":
        return "GET", "/api/transactions", None
    if action == "get":
        return "GET", f"/api/transactions/{s.rng.randint(1, N_TRANSACTIONS)}", None
    if action == "create":
        amount = round(s.rng.uniform(5, 400), 2)
        return "POST", "/api/transactions", {"amount": amount, "memo": "expense"}
    if action == "expenses":
        return "GET", "/api/expenses", None
    if action == "reports":
        return "GET", "/api/reports", None
    return "GET", "/api/financial/export", None


def _habit_walk(s: _Session, user: UserProfile, n: int) -> None:
    state = "start"
    for _ in range(n):
        options = _NEXT[state]
        state = s.rng.choices(options, [user.weight(a) for a in options])[0]
        method, path, body = _action_request(s, state)
        s.add(method, path, gap=_think(s.rng, user.think_median_s), body=body)


def normal_session(
    rng: random.Random, user: UserProfile, t0: float, sid: str, ip: str, ua: str
) -> list[SimRequest]:
    """Login, then a walk over the user's favourite endpoints with human think times."""
    s = _Session(rng, t0, sid, ip, ua, user.name)
    if rng.random() < 0.03:  # a mistyped password now and then
        s.login("wrong-" + user.password)
        s.login(user.password, gap=_think(rng, 6.0))
    else:
        s.login(user.password)
    n = max(2, int(rng.gauss(user.session_length, user.session_length / 3)))
    _habit_walk(s, user, n)
    return s.out


# ------------------------------------------------------------------------------ attacks


def _attacker_ip(rng: random.Random) -> str:
    return _ip(rng, (185, 45, 193, 91))


def _credential_stuffing(rng: random.Random, s: _Session, victims: Sequence[UserProfile]) -> None:
    s.ua = rng.choice(_TOOLS + _BROWSERS[:1])
    for i in range(rng.randint(20, 60)):
        name = (
            rng.choice(victims).name
            if rng.random() < 0.5
            else f"{rng.choice('abcdefgh')}{rng.randint(1, 9999)}"
        )
        pw = rng.choice(("123456", "password", "qwerty", "letmein", "Summer2024!"))
        s.account = name
        s.add(
            "POST",
            LOGIN,
            gap=rng.uniform(0.3, 3.0) if i else 0.0,
            anonymous=True,
            password=pw,
            body={"username": name, "password": pw},
        )


def _walk_ids(s: _Session, n: int, lo: float, hi: float, start: int) -> None:
    for k in range(n):
        s.add("GET", f"/api/transactions/{start + k}", gap=s.rng.uniform(lo, hi))


def _attack(
    rng: random.Random,
    scenario: str,
    victim: UserProfile,
    t0: float,
    sid: str,
    victims: Sequence[UserProfile],
    attack_id: str,
) -> list[SimRequest]:
    """One attack session; the victim's own requests (a login) are labelled normal."""
    s = _Session(
        rng, t0, sid, _attacker_ip(rng), rng.choice(_TOOLS), victim.name, scenario, attack_id
    )
    if scenario == "credential_stuffing":
        _credential_stuffing(rng, s, victims)
        return s.out
    # Every other scenario holds a valid session of the victim: it starts with the victim's login.
    legit = _Session(rng, t0, sid, victim.home_ip, victim.devices[0], victim.name)
    legit.login(victim.password)
    s.t = t0 + rng.uniform(1.0, 5.0)
    if scenario == "token_replay":
        s.ua = rng.choice([b for b in _BROWSERS if b not in victim.devices] or _BROWSERS)
        for _ in range(rng.randint(10, 25)):
            s.add(
                "GET",
                rng.choice(("/api/transactions", "/api/financial/export", "/api/reports")),
                gap=rng.uniform(1.0, 6.0),
            )
    elif scenario == "enumeration":
        _walk_ids(s, rng.randint(40, 120), 0.2, 1.2, rng.randint(1, 450))
    elif scenario == "export_burst":
        s.ip, s.ua = victim.office_ip, victim.devices[0]
        for _ in range(rng.randint(8, 20)):
            s.add(
                "GET",
                rng.choice(("/api/financial/export",) * 3 + ("/api/reports",)),
                gap=rng.uniform(0.5, 4.0),
            )
    elif scenario == "admin_probe":
        s.ip, s.ua = victim.home_ip, victim.devices[0]
        for _ in range(rng.randint(10, 30)):
            s.add("GET", rng.choice(_ADMIN_PROBES), gap=rng.uniform(0.5, 3.0))
    elif scenario == "impossible_travel":
        legit.ua = s.ua = victim.devices[0]
        for _ in range(rng.randint(2, 4)):  # the victim works normally from home first ...
            legit.add("GET", "/api/transactions", gap=_think(rng, victim.think_median_s))
        s.t = legit.t + rng.uniform(30.0, 240.0)  # ... then, minutes later, another continent
        s.ip = _ip(rng, (1, 14, 27, 36, 41, 101, 177))
        _habit_walk(s, victim, rng.randint(8, 15))
    elif scenario == "slow_low":
        s.ua = rng.choice(_BROWSERS)
        for k in range(rng.randint(10, 25)):
            path = (
                "/api/financial/export"
                if rng.random() < 0.2
                else f"/api/transactions/{rng.randint(1, 520)}"
            )
            s.add("GET", path, gap=rng.uniform(60.0, 300.0) if k else 0.0)
    else:
        raise ValueError(f"unknown scenario {scenario!r}")
    return legit.out + s.out


# ------------------------------------------------------------------------------ offline plan


def _local_time(day: datetime, hour: float, tz: str) -> float:
    local = day.replace(tzinfo=ZoneInfo(tz)) + timedelta(hours=hour)
    return local.timestamp()


def _sid(rng: random.Random) -> str:
    return f"{rng.getrandbits(64):016x}"


def _user_days(
    rng: random.Random, user: UserProfile, start: datetime, days: int, end_ts: float
) -> list[SimRequest]:
    out: list[SimRequest] = []
    trip: set[int] = set()
    if rng.random() < user.travel_rate * days / 7:
        d0 = rng.randrange(days)
        trip = set(range(d0, d0 + rng.randint(2, 5)))
    for d in range(days):
        day = (start + timedelta(days=d)).replace(tzinfo=None)
        weekend = day.weekday() >= 5
        if weekend and rng.random() >= user.weekend_rate:
            continue
        n_sessions = _poisson(rng, 1.0 if weekend else user.sessions_per_day)
        for _ in range(n_sessions or (0 if weekend else 1)):
            hour = rng.uniform(user.start_hour, user.end_hour - 0.5)
            at_office = not weekend and hour < user.end_hour - 1 and rng.random() < 0.7
            ip = user.travel_ip if d in trip else user.office_ip if at_office else user.home_ip
            ua = user.devices[-1] if rng.random() < 0.25 else user.devices[0]
            t0 = _local_time(day, hour, user.tz)
            if t0 < end_ts:
                out += normal_session(rng, user, t0, _sid(rng), ip, ua)
    return out


def _poisson(rng: random.Random, lam: float) -> int:
    k, p, limit = 0, 1.0, math.exp(-lam)
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _attacks(
    rng: random.Random,
    users: Sequence[UserProfile],
    n: int,
    t_lo: float,
    t_hi: float,
    scenarios: Sequence[str],
) -> list[SimRequest]:
    out: list[SimRequest] = []
    order = list(scenarios)
    rng.shuffle(order)
    for k in range(n):
        scenario = order[k % len(order)]
        out += _attack(
            rng,
            scenario,
            rng.choice(users),
            rng.uniform(t_lo, t_hi),
            _sid(rng),
            users,
            f"{scenario}-{k}",
        )
    return out


def generate_history(
    users: Sequence[UserProfile],
    *,
    start: datetime,
    days: int,
    seed: int,
    attack_rate: float = 0.02,
    scenarios: Sequence[str] = SCENARIOS,
) -> list[SimRequest]:
    """Weeks of traffic from ``start`` (aware datetime): every user's sessions plus attack
    sessions making up ``attack_rate`` of all sessions; sorted by time, ends before
    ``start + days``."""
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    if not 0.0 <= attack_rate < 1.0:
        raise ValueError("attack_rate must be within [0, 1)")
    end_ts = (start + timedelta(days=days)).timestamp()
    out: list[SimRequest] = []
    for user in users:
        rng = random.Random(f"history:{seed}:{user.name}")
        out += _user_days(rng, user, start, days, end_ts)
    n_normal = len({r.session for r in out})
    n_attacks = round(attack_rate * n_normal / (1.0 - attack_rate))
    rng = random.Random(f"attacks:{seed}")
    out += _attacks(rng, users, n_attacks, start.timestamp(), end_ts - 3 * 3600, scenarios)
    out.sort(key=lambda r: r.ts)
    start_ts = start.timestamp()
    return [r for r in out if start_ts <= r.ts < end_ts]


# ------------------------------------------------------------------------------ offline log


class _Upstream:
    """What the sample upstream would answer, for writing a log without running it."""

    def __init__(self) -> None:
        self.next_id = N_TRANSACTIONS + 1

    def answer(self, r: SimRequest, accounts: dict[str, str]) -> tuple[int, int]:
        if r.path == LOGIN:
            ok = r.account is not None and accounts.get(r.account) == r.password
            return (200, 310) if ok else (401, 31)
        if r.path == "/api/transactions":
            if r.method == "POST":
                self.next_id += 1
                return 201, 70
            return 200, 1450
        if r.path.startswith("/api/transactions/"):
            tail = r.path.rsplit("/", 1)[1]
            return (200, 68) if tail.isdigit() and 1 <= int(tail) < self.next_id else (404, 21)
        sizes = {"/api/expenses": 870, "/api/reports": 160, "/api/financial/export": 9300}
        if r.path in sizes:
            return 200, sizes[r.path]
        if r.path == "/api/admin/users":
            return (200, 2600) if r.user == "admin" else (403, 21)
        return 404, 21


def _clf_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")


def write_log(
    requests: Iterable[SimRequest],
    log: IO[str],
    labels: IO[str] | None = None,
    users: Sequence[UserProfile] = (),
) -> int:
    """Write requests as an Apache combined log (+ one JSON label per line); returns lines."""
    accounts = {u.name: u.password for u in users}
    upstream = _Upstream()
    n = 0
    for n, r in enumerate(requests, 1):
        status, size = upstream.answer(r, accounts)
        log.write(
            f'{r.client_ip} - {r.user or "-"} [{_clf_time(r.ts)}] "{r.method} {r.path} '
            f'HTTP/1.1" {status} {size} "-" "{r.user_agent}"\n'
        )
        if labels is not None:
            labels.write(
                json.dumps(
                    {
                        "line": n,
                        "ts": round(r.ts, 3),
                        "label": r.label,
                        "attack_id": r.attack_id,
                        "session": r.session,
                        "user": r.user,
                        "account": r.account,
                        "method": r.method,
                        "path": r.path,
                        "status": status,
                    }
                )
                + "\n"
            )
    return n


# ------------------------------------------------------------------------------ live


def _local_hour(user: UserProfile, now: float) -> tuple[float, int]:
    dt = datetime.fromtimestamp(now, ZoneInfo(user.tz))
    return dt.hour + dt.minute / 60.0, dt.weekday()


def active_users(users: Sequence[UserProfile], now: float) -> list[UserProfile]:
    """Users inside their working hours at ``now`` (all users when nobody is)."""
    on = []
    for u in users:
        hour, dow = _local_hour(u, now)
        if u.start_hour <= hour < u.end_hour and (dow < 5 or u.weekend_rate > 0):
            on.append(u)
    return on or list(users)


def plan_live(
    users: Sequence[UserProfile],
    *,
    seed: int,
    now: float,
    sessions: int,
    duration_s: float,
    attack_rate: float = 0.2,
    scenarios: Sequence[str] = SCENARIOS,
) -> list[SimRequest]:
    """A live plan: ``ts`` in seconds from the start, every session starting in the first half
    of ``duration_s``; ``attack_rate`` of the sessions are attacks (at least one if > 0).

    A user's normal sessions never overlap (a session that would start while all the users at
    work are busy is dropped), so fewer normal sessions than asked for may be planned.
    """
    rng = random.Random(f"live:{seed}")
    pool = active_users(users, now)
    n_attack = max(1, round(sessions * attack_rate)) if attack_rate > 0 else 0
    out: list[SimRequest] = []
    busy_until: dict[str, float] = {}  # a person works in one session at a time
    for k in range(sessions - n_attack):
        t0 = rng.uniform(0, duration_s / 2)
        free = [u for u in pool if busy_until.get(u.name, -math.inf) < t0]
        if not free:
            continue
        u = rng.choice(free)
        ua = u.devices[-1] if rng.random() < 0.25 else u.devices[0]
        ip = u.office_ip if rng.random() < 0.7 else u.home_ip
        session = normal_session(rng, u, t0, f"live-{k}", ip, ua)
        busy_until[u.name] = session[-1].ts
        out += session
    out += _attacks(rng, pool, n_attack, 0.0, duration_s / 2, scenarios)
    out.sort(key=lambda r: r.ts)
    return [r for r in out if r.ts < duration_s]


@dataclass(frozen=True, slots=True)
class LiveResult:
    """One request sent to the gateway and what came back.

    ``action`` is the gateway's decision when it answered itself (401 CHALLENGE/REQUIRE_2FA,
    403 BLOCK), else None (the upstream answered, or the gateway errored). ``decision`` is the
    ``X-BehaviorGate-Decision`` header of a forwarded answer, when the gateway exposes it
    (``forwarding.expose_decision_to_client``): the only way a client sees MONITOR.
    """

    seq: int
    t: float
    label: str
    attack_id: str | None
    session: str
    account: str | None
    method: str
    path: str
    status: int
    action: str | None
    latency_ms: float
    error: str | None = None
    decision: str | None = None


def _loopback_only(url: str) -> str:
    host = urlsplit(url).hostname or ""
    try:
        ok = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"the live driver only talks to 127.0.0.1 / localhost, not {host!r}")
    return url.rstrip("/")


def gateway_action(status: int, body: Any) -> str | None:
    """The gateway's own decision from its 401/403 JSON answer, or None for an upstream answer."""
    if status not in (401, 403) or not isinstance(body, dict):
        return None
    raw = body.get("action")
    if not isinstance(raw, str):
        by_gateway = "prediction_id" in body or "predictionId" in body
        return "BLOCK" if status == 403 and by_gateway else None
    word = raw.strip().upper()
    if word in ("BLOCK", "BLOCKED"):
        return "BLOCK"
    if "2FA" in word or "MFA" in word:
        return "REQUIRE_2FA"
    return "CHALLENGE" if status == 401 else "BLOCK"


@dataclass
class _LiveState:
    tokens: dict[str, str] = field(default_factory=dict)
    blocked: set[str] = field(default_factory=set)
    sent: int = 0


async def _send(
    session: Any, base: str, r: SimRequest, state: _LiveState, seq: int, t_start: float
) -> LiveResult:
    headers = {"X-Forwarded-For": r.client_ip, "User-Agent": r.user_agent}
    token = state.tokens.get(r.session)
    if r.user is not None and token:
        headers["Authorization"] = f"Bearer {token}"
    t0 = time.perf_counter()
    status, body, error, decision = 0, None, None, None
    try:
        async with session.request(
            r.method, base + r.path, json=r.body, headers=headers, allow_redirects=False
        ) as resp:
            status = resp.status
            decision = resp.headers.get("X-BehaviorGate-Decision")
            raw = await resp.content.read(65_536)
            if resp.content_type == "application/json":
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
    except Exception as exc:  # noqa: BLE001 - a failed request is a result, not a crash
        error = type(exc).__name__
    latency = (time.perf_counter() - t0) * 1000
    if r.path == LOGIN and status == 200 and isinstance(body, dict):
        if isinstance(body.get("token"), str):
            state.tokens[r.session] = body["token"]
    action = gateway_action(status, body)
    if action == "BLOCK":
        state.blocked.add(r.session)
    return LiveResult(
        seq,
        round(time.perf_counter() - t_start, 3),
        r.label,
        r.attack_id,
        r.session,
        r.account,
        r.method,
        r.path,
        status,
        action,
        round(latency, 2),
        error,
        decision,
    )


async def _run_session(
    client: Any,
    base: str,
    reqs: list[SimRequest],
    state: _LiveState,
    t_start: float,
    deadline: float,
    max_requests: int,
    time_scale: float,
    out: list[LiveResult],
) -> None:
    loop = asyncio.get_running_loop()
    for r in reqs:
        delay = t_start + r.ts * time_scale - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if loop.time() >= deadline or state.sent >= max_requests or r.session in state.blocked:
            return
        state.sent += 1
        out.append(await _send(client, base, r, state, state.sent, t_start))


async def drive(
    base_url: str,
    plan: Sequence[SimRequest],
    *,
    duration_s: float,
    max_requests: int,
    time_scale: float = 1.0,
    concurrency: int = 64,
) -> list[LiveResult]:
    """Send ``plan`` to the gateway at ``base_url`` (loopback only), each session in its own
    task, pacing by ``ts * time_scale``; stops at ``duration_s`` or ``max_requests``."""
    import aiohttp

    base = _loopback_only(base_url)
    by_session: dict[str, list[SimRequest]] = defaultdict(list)
    for r in plan:
        by_session[r.session].append(r)
    state, out = _LiveState(), []
    loop = asyncio.get_running_loop()
    t_start = loop.time()
    deadline = t_start + duration_s
    conn = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as client:
        await asyncio.gather(
            *(
                _run_session(
                    client, base, reqs, state, t_start, deadline, max_requests, time_scale, out
                )
                for reqs in by_session.values()
            )
        )
    out.sort(key=lambda x: x.seq)
    return out


# ------------------------------------------------------------------------------ summary


_STRONG = frozenset({"CHALLENGE", "REQUIRE_2FA", "BLOCK"})
_MONITOR_UP = _STRONG | {"MONITOR"}


def summarize(results: Sequence[LiveResult]) -> dict[str, Any]:
    """Per scenario: attack sessions, how many the gateway stopped (CHALLENGE or stronger) and at
    which of their attack requests it first did; for normal traffic, the shares it stopped."""
    attacks: dict[str, list[LiveResult]] = defaultdict(list)
    normal = [r for r in results if r.label == NORMAL]
    for r in results:
        if r.attack_id is not None and r.label != NORMAL:
            attacks[r.attack_id].append(r)
    per: dict[str, dict[str, Any]] = {}
    for rs in attacks.values():
        entry = per.setdefault(
            rs[0].label, {"sessions": 0, "caught": 0, "caught_within_10": 0, "first_stop_at": []}
        )
        entry["sessions"] += 1
        first = next((i for i, r in enumerate(rs, 1) if r.action in _STRONG), None)
        if first is not None:
            entry["caught"] += 1
            entry["caught_within_10"] += first <= 10
            entry["first_stop_at"].append(first)
    n = max(len(normal), 1)
    actions = Counter(r.action for r in normal)
    return {
        "requests": len(results),
        "scenarios": per,
        "normal": {
            "requests": len(normal),
            "monitor_or_stronger": sum(1 for r in normal if (r.action or r.decision) in _MONITOR_UP)
            / n,
            "challenge_or_stronger": sum(actions[a] for a in _STRONG) / n,
            "block": actions["BLOCK"] / n,
            "errors": sum(1 for r in normal if r.error) / n,
        },
        "latency_ms_p50": _quantile([r.latency_ms for r in results], 0.5),
        "latency_ms_p99": _quantile([r.latency_ms for r in results], 0.99),
    }


def _quantile(xs: Sequence[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


# ------------------------------------------------------------------------------ CLI


def _parse_start(text: str | None, days: int) -> datetime:
    if text:
        dt = datetime.fromisoformat(text)
        return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    return now - timedelta(days=days)


def _scenarios(text: str | None) -> tuple[str, ...]:
    if not text:
        return SCENARIOS
    chosen = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown:
        raise SystemExit(f"behaviorgate simulate: unknown scenarios {unknown}; known {SCENARIOS}")
    return chosen


def _run_offline(args: argparse.Namespace) -> int:
    users = build_population(args.users, args.seed)
    start = _parse_start(args.start, args.days)
    plan = generate_history(
        users,
        start=start,
        days=args.days,
        seed=args.seed,
        attack_rate=args.attack_rate,
        scenarios=_scenarios(args.scenarios),
    )
    labels_path = args.labels or f"{args.log}.labels.jsonl"
    with (
        open(args.log, "w", encoding="utf-8") as log,
        open(labels_path, "w", encoding="utf-8") as lab,
    ):
        n = write_log(plan, log, lab, users)
    mix = Counter(r.label for r in plan)
    print(
        json.dumps(
            {
                "log": args.log,
                "labels": labels_path,
                "lines": n,
                "users": len(users),
                "start": start.isoformat(),
                "days": args.days,
                "seed": args.seed,
                "labels_mix": dict(mix),
                "attack_sessions": len({r.attack_id for r in plan if r.attack_id}),
            },
            indent=2,
        )
    )
    return 0


def _run_live(args: argparse.Namespace) -> int:
    users = build_population(args.users, args.seed)
    plan = plan_live(
        users,
        seed=args.seed,
        now=time.time(),
        sessions=args.sessions,
        duration_s=args.duration,
        attack_rate=args.attack_rate,
        scenarios=_scenarios(args.scenarios),
    )
    results = asyncio.run(
        drive(
            args.gateway,
            plan,
            duration_s=args.duration,
            max_requests=args.max_requests,
            time_scale=args.time_scale,
        )
    )
    if args.results:
        with open(args.results, "w", encoding="utf-8") as fh:
            for r in results:
                fh.write(json.dumps(asdict(r)) + "\n")
    print(json.dumps({"seed": args.seed, **summarize(results)}, indent=2))
    return 0


def run_simulate(args: argparse.Namespace) -> int:
    """``behaviorgate simulate offline|live``."""
    try:
        return _run_offline(args) if args.mode == "offline" else _run_live(args)
    except ValueError as exc:
        print(f"behaviorgate simulate: {exc}", file=sys.stderr)
        return 2


def add_simulate_parser(subparsers: Any) -> None:
    """Register ``simulate`` on an ``add_subparsers()`` object."""
    p = subparsers.add_parser("simulate", help="synthetic users + labelled attacks (log or live)")
    p.add_argument(
        "mode",
        choices=("offline", "live"),
        help="offline: write weeks of history as a log; live: drive a gateway",
    )
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--users", type=int, default=30, help="population size (≤ 200)")
    p.add_argument(
        "--attack-rate",
        type=float,
        default=None,
        help="share of sessions that are attacks (offline 0.02, live 0.2)",
    )
    p.add_argument("--scenarios", help=f"comma-separated subset of {','.join(SCENARIOS)}")
    g = p.add_argument_group("offline")
    g.add_argument("--log", default="simulated-access.log", help="combined log to write")
    g.add_argument("--labels", help="labels JSONL (default LOG.labels.jsonl)")
    g.add_argument("--days", type=int, default=21)
    g.add_argument("--start", help="ISO start time (default: DAYS before the current hour)")
    g = p.add_argument_group("live")
    g.add_argument("--gateway", default="http://127.0.0.1:8080", help="gateway base URL (loopback)")
    g.add_argument("--sessions", type=int, default=40, help="sessions to start")
    g.add_argument("--duration", type=float, default=60.0, help="seconds, at most")
    g.add_argument("--max-requests", type=int, default=2000)
    g.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="multiply think times (below 1 makes humans look like bots)",
    )
    g.add_argument("--results", help="write one JSON object per request here")
    p.set_defaults(func=_defaults_then_run)


def _defaults_then_run(args: argparse.Namespace) -> int:
    if args.attack_rate is None:
        args.attack_rate = 0.02 if args.mode == "offline" else 0.2
    return run_simulate(args)

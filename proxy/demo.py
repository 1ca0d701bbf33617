"""``behaviorgate demo``: the sample API behind the gateway, weeks of history, live attacks.

One command, embedded stores, everything under ``--data-dir`` (default ``./data/demo``):

1. The simulator writes weeks of its users' traffic as an access log (with ~2 % attack sessions,
   as real history would hold); it goes through the same path as ``import-log``.
2. Bootstrap twice. Vectors built in learning mode see a score of 0 for every earlier request,
   while live traffic sees real scores (the ``score_*`` and anomaly-count features), so a model
   trained on them alone would meet live vectors it never saw. Model A is trained on the first
   half of the history in learning mode; the whole history is then replayed *with A* into the
   history store the gateway will use, so the history holds real scores and decisions; model B
   is trained on those replayed vectors, registered and activated.
3. The sample upstream runs as a child process, the gateway in this process (it shares the
   embedded history store the replay filled), the live driver as a second child process
   (``behaviorgate simulate live``) so that its timings are not taken inside the gateway's loop.
4. The report: per scenario, sessions caught and the request number of the first CHALLENGE or
   stronger; for normal traffic the shares at MONITOR+, CHALLENGE+ and BLOCK; the latency the
   gateway adds (a paired probe: the same request straight to the upstream and through the
   gateway); where the dashboard is.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import secrets
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from config.history import HistorySettings
from config.loader import load_settings
from config.model import ModelSettings
from config.settings import Settings
from proxy.accesslog import DEFAULT_GAP_S, LogRecord, read_logs
from proxy.offline import OfflinePass, OfflineSettings, featurize, train
from proxy.sample_upstream import JWT_SECRET_ENV
from proxy.simulate import (
    NORMAL,
    SCENARIOS,
    LiveResult,
    build_population,
    generate_history,
    summarize,
    write_log,
)
from scoring.bundle import ModelBundle
from scoring.ensemble import Scorer
from scoring.features import FEATURE_NAMES

__all__ = ("DemoOptions", "add_demo_parser", "format_report", "run_demo")

EXAMPLE_CONFIG = Path(__file__).resolve().parent.parent / "config" / "examples" / "expenseflow.yaml"
PROBE_PATH = "/health"  # the upstream answers it without delay: the probe times the gateway alone
_STRONG = frozenset({"CHALLENGE", "REQUIRE_2FA", "BLOCK"})
_LEVELS = ("ALLOW", "MONITOR", "CHALLENGE", "REQUIRE_2FA", "BLOCK", "LEARNING", "ERROR")
# Files a demo run writes in its directory, removed first so that every run starts fresh.
_OWN_FILES = (
    "bg.sqlite3",
    "bg.sqlite3-wal",
    "bg.sqlite3-shm",
    "predictions.spool",
    "history.log",
    "history.log.labels.jsonl",
    "live-results.jsonl",
    "report.json",
    "model-a.bundle",
    "model-b.bundle",
)


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """Everything a demo run depends on (the seed fixes population, history, plan and training)."""

    seed: int = 1
    users: int = 30
    days: int = 14
    history_attack_rate: float = 0.02
    minutes: float = 1.5
    sessions: int = 100
    attack_rate: float = 0.2
    max_requests: int = 5000
    probe_requests: int = 300
    data_dir: Path = Path("data/demo")
    host: str = "127.0.0.1"
    port: int = 0
    keep_running: bool = False
    model: dict[str, Any] = field(default_factory=dict)


Say = Callable[[str], None]


def _say_stderr(text: str) -> None:
    print(f"behaviorgate demo: {text}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ settings


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (bound and released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _demo_rules(example_rules: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ExpenseFlow rules, with the health check scored in shadow mode for the latency probe."""
    rules = [r for r in example_rules if r.get("match") != PROBE_PATH]
    return [{"name": "latency-probe", "match": PROBE_PATH, "mode": "shadow"}, *rules]


def demo_settings(
    opts: DemoOptions, *, upstream_port: int, port: int, jwt_secret: str, admin_token: str
) -> Settings:
    """The ExpenseFlow example, pointed at the sample upstream, with embedded stores."""
    import yaml

    example = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    data = str(opts.data_dir)
    overrides: dict[str, Any] = {
        "server": {"host": opts.host, "port": port},
        "upstream": {"url": f"http://127.0.0.1:{upstream_port}"},
        "data_dir": data,
        "database": {"url": None, "sqlite_path": f"{data}/bg.sqlite3"},
        "redis": {"url": None},
        "writer": {"spool_path": f"{data}/predictions.spool", "flush_interval": 0.2},
        # A session ends after the offline sessionizer's inactivity gap, as on most web apps: with
        # the 24 h default an anonymous pseudo-session (client IP + user agent: every login) never
        # ends for a daily user, while import-log splits it at 30 min — the model would meet
        # logins with a session age of days that it never saw in training.
        "history": {"session_ttl_seconds": int(DEFAULT_GAP_S)},
        "identity": {
            **example["identity"],
            "trusted_proxies": ["127.0.0.1/32"],
            "jwt": {**example["identity"]["jwt"], "hs256_secret": jwt_secret},
        },
        "policy": {"rules": _demo_rules(example["policy"]["rules"])},
        # The driver reads the decision header: the only way a client can see MONITOR.
        "forwarding": {"expose_decision_to_client": True},
        # The demo trains explicitly; nothing should retrain behind its back while it measures.
        "lifecycle": {"auto_train": False, "daily_retrain": False},
        "api": {"admin_token_hashes": [hashlib.sha256(admin_token.encode()).hexdigest()]},
        "logging": {"access_log": False, "level": "warning"},
    }
    if opts.model:
        overrides["model"] = opts.model
    return load_settings(EXAMPLE_CONFIG, environ={}, overrides=overrides)


def _clean(data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    for name in _OWN_FILES:
        with contextlib.suppress(FileNotFoundError):
            (data_dir / name).unlink()


# ------------------------------------------------------------------------------ history


def write_history(opts: DemoOptions, end: datetime) -> tuple[Path, Counter[str], int]:
    """Weeks of simulated traffic ending at ``end``, as a combined log + labels beside it."""
    users = build_population(opts.users, opts.seed)
    start = end - timedelta(days=opts.days)
    plan = generate_history(
        users, start=start, days=opts.days, seed=opts.seed, attack_rate=opts.history_attack_rate
    )
    log_path = opts.data_dir / "history.log"
    with (
        open(log_path, "w", encoding="utf-8") as log,
        open(f"{log_path}.labels.jsonl", "w", encoding="utf-8") as labels,
    ):
        write_log(plan, log, labels, users)
    attacks = len({r.attack_id for r in plan if r.attack_id})
    return log_path, Counter(r.label for r in plan), attacks


def _first_part(records: Sequence[LogRecord], min_samples: int) -> list[LogRecord]:
    """The first half of the history by time, or all of it when half is too little to train on."""
    if not records:
        return []
    mid = (records[0].ts + records[-1].ts) / 2
    head = [r for r in records if r.ts <= mid]
    return head if len(head) >= 2 * min_samples else list(records)


async def replay_into(
    store: Any, records: Sequence[LogRecord], settings: OfflineSettings, bundle: ModelBundle
) -> tuple[np.ndarray, Counter[str]]:
    """Score every record against the history before it and record it in ``store``.

    Returns the vectors (training data for the next model) and the decision mix.
    """
    run = OfflinePass(store, settings, Scorer(bundle))
    rows: list[np.ndarray] = []
    mix: Counter[str] = Counter()
    for record in records:
        line = await run.step(record)
        mix[line.decision] += 1
        if line.vector is not None:
            rows.append(line.vector)
    await store.drain()
    X = np.vstack(rows) if rows else np.zeros((0, len(FEATURE_NAMES)), dtype=np.float32)
    return X, mix


async def expire_idle_sessions(redis: Any, history: HistorySettings, now: float) -> int:
    """Forget sessions idle longer than ``session_ttl_seconds`` at ``now``; returns how many.

    The history store's expiry runs on the wall clock from when an event was *written*, so a
    history seeded within a minute from weeks of past events keeps every session alive, which a
    gateway that had served that traffic live would not have. A user's expired session loses
    its events (its first/last-seen stay: they feed the user's session baselines). An anonymous
    owner *is* its pseudo-session, and the offline sessionizer gives every session after a gap
    a fresh owner, so an idle anonymous owner is forgotten whole.
    """
    cutoff = now - history.session_ttl_seconds
    dropped = 0
    async for raw in redis.scan_iter(match=f"{history.key_prefix}*:sl", count=1000):
        key = raw.decode() if isinstance(raw, bytes) else raw
        base = key[: -len("sl")]
        stale = [_text(s) for s in await redis.zrangebyscore(key, "-inf", f"({cutoff}")]
        if not stale:
            continue
        dropped += len(stale)
        if base.startswith(f"{history.key_prefix}{{a:"):
            owned = [k async for k in redis.scan_iter(match=base + "*", count=1000)]
            await redis.delete(*owned)
        else:
            await redis.delete(*(f"{base}s:{sid}:ev" for sid in stale))
    return dropped


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def register_model(settings: Settings, bundle: ModelBundle, note: str) -> int:
    """Save and activate ``bundle`` in the demo's model registry."""
    from storage.store import open_store

    store = await open_store(settings.database)
    try:
        version = await store.registry.save_version(
            bundle.to_bytes(),
            feature_set_version=bundle.feature_set_version,
            config={"source": "demo", "note": note},
            metrics=bundle.metrics,
            sample_count=bundle.n_train,
        )
        await store.registry.activate(version.version, by="demo")
        return version.version
    finally:
        await store.close()


@dataclass
class Bootstrap:
    """What the offline half of the demo produced."""

    history_lines: int
    history_labels: dict[str, int]
    history_attack_sessions: int
    model_a_samples: int
    model_b_samples: int
    history_decisions: dict[str, int]
    seconds: dict[str, float]
    model_version: int


async def bootstrap(opts: DemoOptions, settings: Settings, redis: Any, say: Say) -> Bootstrap:
    """History → model A (learning-mode vectors) → replay with A into ``redis`` → model B."""
    from storage.history import HistoryStore

    timings: dict[str, float] = {}
    t = time.perf_counter()
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    log_path, labels, attacks = write_history(opts, end)
    records, stats = read_logs([log_path])
    timings["history"] = time.perf_counter() - t
    say(
        f"history: {stats.parsed} requests over {opts.days} days for {opts.users} users "
        f"({attacks} attack sessions) → {log_path}"
    )
    offline = OfflineSettings.from_settings(settings)

    t = time.perf_counter()
    head = _first_part(records, settings.model.training.min_samples)
    X_a, _ = await featurize(head, offline)
    model_a = train(X_a, settings.model, opts.seed)
    timings["model_a"] = time.perf_counter() - t
    say(f"model A: {len(X_a)} learning-mode vectors, {timings['model_a']:.1f} s")

    t = time.perf_counter()
    store = HistoryStore(redis, settings.history)
    X_b, mix = await replay_into(store, records, offline, model_a)
    dropped = await expire_idle_sessions(redis, settings.history, time.time())
    model_b = train(X_b, settings.model, opts.seed)
    timings["model_b"] = time.perf_counter() - t
    version = await register_model(settings, model_b, "bootstrap B: history replayed with A")
    say(
        f"model B: {len(X_b)} vectors scored by A, {timings['model_b']:.1f} s "
        f"→ version {version} active; {dropped} idle sessions expired"
    )
    return Bootstrap(
        stats.parsed,
        dict(labels),
        attacks,
        len(X_a),
        len(X_b),
        dict(mix),
        {k: round(v, 2) for k, v in timings.items()},
        version,
    )


# ------------------------------------------------------------------------------ processes


async def start_upstream(port: int, jwt_secret: str) -> asyncio.subprocess.Process:
    """The sample API as a child process; returns once it answers.

    The secret goes by environment: on the command line any local user could read it, and a
    secret starting with '-' would be taken for an option (one random secret in 64)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy.cli",
        "sample-upstream",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        env={**os.environ, JWT_SECRET_ENV: jwt_secret},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await wait_http(f"http://127.0.0.1:{port}/health", proc)
    return proc


async def wait_http(
    url: str, proc: asyncio.subprocess.Process | None = None, timeout: float = 30.0
) -> None:
    """Poll ``url`` until it answers 200 (or the process dies, or time runs out)."""
    import aiohttp

    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as client:
        while time.monotonic() < deadline:
            if proc is not None and proc.returncode is not None:
                raise RuntimeError(f"{url}: process exited with {proc.returncode}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with client.get(url) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


async def stop_process(proc: asyncio.subprocess.Process | None) -> None:
    """SIGTERM the child we started, then SIGKILL it if it lingers."""
    if proc is None or proc.returncode is not None:
        return
    proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), 10)
    except TimeoutError:
        proc.kill()
        await proc.wait()


async def start_gateway(settings: Settings, redis: Any) -> Any:
    """The gateway in this process on ``settings.server``; returns the aiohttp runner."""
    from aiohttp import web

    from proxy.app import create_app, server_options

    app = create_app(settings, redis=redis)
    opts = server_options(settings)
    runner = web.AppRunner(
        app,
        access_log=None,
        handler_cancellation=opts.pop("handler_cancellation"),
        shutdown_timeout=settings.server.shutdown_timeout,
        **opts,
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.server.host, settings.server.port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


async def drive_live(opts: DemoOptions, gateway_url: str) -> tuple[list[LiveResult], float]:
    """``behaviorgate simulate live`` as a child process; its per-request results."""
    results = opts.data_dir / "live-results.jsonl"
    duration = opts.minutes * 60.0
    argv = [
        sys.executable,
        "-m",
        "proxy.cli",
        "simulate",
        "live",
        "--gateway",
        gateway_url,
        "--seed",
        str(opts.seed),
        "--users",
        str(opts.users),
        "--sessions",
        str(opts.sessions),
        "--attack-rate",
        str(opts.attack_rate),
        "--duration",
        str(duration),
        "--max-requests",
        str(opts.max_requests),
        "--results",
        str(results),
    ]
    t = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), duration + 120)
    except TimeoutError:
        await stop_process(proc)
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"simulate live failed ({proc.returncode}): {err.decode()[-500:]}")
    return load_results(results), time.perf_counter() - t


def load_results(path: Path) -> list[LiveResult]:
    """Read the driver's JSONL back (unknown keys ignored)."""
    names = {f.name for f in fields(LiveResult)}
    with open(path, encoding="utf-8") as fh:
        return [
            LiveResult(**{k: v for k, v in json.loads(line).items() if k in names})
            for line in fh
            if line.strip()
        ]


# ------------------------------------------------------------------------------ latency


async def latency_probe(upstream_url: str, gateway_url: str, n: int) -> dict[str, Any]:
    """``n`` paired requests to the same instant route, straight and through the gateway.

    Alternating the two keeps slow moments of this shared machine from favouring either side.
    The gateway scores every probe request (a shadow rule: full hot path, never enforced).
    """
    import aiohttp

    direct: list[float] = []
    via: list[float] = []
    headers = {"User-Agent": "behaviorgate-demo-latency-probe"}
    async with aiohttp.ClientSession() as client:
        for i in range(n):
            for base, sink in ((upstream_url, direct), (gateway_url, via))[:: 1 if i % 2 else -1]:
                t0 = time.perf_counter()
                async with client.get(base + PROBE_PATH, headers=headers) as resp:
                    await resp.read()
                sink.append((time.perf_counter() - t0) * 1000)
    added = [g - d for g, d in zip(via, direct, strict=True)]
    return {
        "requests": n,
        "direct_ms": _percentiles(direct),
        "gateway_ms": _percentiles(via),
        "added_ms": _percentiles(added),
    }


def _percentiles(xs: Sequence[float]) -> dict[str, float | None]:
    if not xs:
        return {"p50": None, "p99": None}
    p50, p99 = np.percentile(np.asarray(xs, dtype=float), [50, 99])
    return {"p50": round(float(p50), 2), "p99": round(float(p99), 2)}


# ------------------------------------------------------------------------------ report


def _level(r: LiveResult) -> str:
    """The gateway's decision on one request as the client could see it."""
    return r.action or r.decision or ("ERROR" if r.error else "UNKNOWN")


def scenario_table(results: Sequence[LiveResult]) -> dict[str, dict[str, Any]]:
    """Per scenario: sessions, caught (CHALLENGE+ at any point), within 10, first-stop numbers."""
    per = summarize(results)["scenarios"]
    out = {}
    for name in SCENARIOS:
        entry = per.get(name)
        if entry is None:
            continue
        out[name] = {**entry, "first_stop_at": sorted(entry["first_stop_at"])}
    return out


def build_report(
    opts: DemoOptions,
    boot: Bootstrap,
    results: Sequence[LiveResult],
    live_s: float,
    probe: dict[str, Any],
    gateway_url: str,
    admin_token: str,
) -> dict[str, Any]:
    """Everything the demo prints, as plain JSON-able data."""
    summary = summarize(results)
    # An attack session begins with its victim's own login (labelled normal); that login belongs
    # to the attack session, not to normal traffic. The driver names normal sessions live-<k>.
    in_attack = {
        r.session for r in results if r.label != NORMAL or not r.session.startswith("live-")
    }
    normal = [r for r in results if r.session not in in_attack]
    attacks = [r for r in results if r.label != NORMAL]
    victim_logins = [r for r in results if r.session in in_attack and r.label == NORMAL]
    scenarios = scenario_table(results)
    n_sessions = sum(s["sessions"] for s in scenarios.values())
    within = sum(s["caught_within_10"] for s in scenarios.values())
    normal_sessions = {r.session for r in normal}
    stopped_sessions = {r.session for r in normal if r.action in _STRONG}
    attacked = {r.session for r in attacks}
    stopped_at_login = {r.session for r in victim_logins if r.action == "BLOCK"} - attacked
    return {
        "seed": opts.seed,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()},
        "bootstrap": asdict(boot),
        "live": {
            "seconds": round(live_s, 1),
            "requests": len(results),
            "attack_requests": len(attacks),
            "decisions_normal": dict(Counter(_level(r) for r in normal)),
            "decisions_attack": dict(Counter(_level(r) for r in attacks)),
        },
        "scenarios": scenarios,
        "attacks": {
            "sessions": n_sessions,
            "caught_within_10": within,
            "share_within_10": round(within / n_sessions, 4) if n_sessions else None,
            "victim_logins": dict(Counter(_level(r) for r in victim_logins)),
            "blocked_at_victim_login": len(stopped_at_login),
        },
        "normal": {
            **_shares(normal),
            "sessions": len(normal_sessions),
            "sessions_stopped": len(stopped_sessions),
        },
        "latency": {
            "live_through_gateway_ms": {
                "p50": summary["latency_ms_p50"],
                "p99": summary["latency_ms_p99"],
            },
            "probe": probe,
        },
        "dashboard": f"{gateway_url}/api/ml-anomaly/dashboard",
        "admin_token": admin_token,
    }


def _shares(rs: Sequence[LiveResult]) -> dict[str, Any]:
    """Requests and the shares at MONITOR+, CHALLENGE+ and BLOCK as the client saw them."""
    n = max(len(rs), 1)
    levels = Counter(_level(r) for r in rs)
    strong = sum(levels[a] for a in _STRONG)
    return {
        "requests": len(rs),
        "monitor_or_stronger": round((strong + levels["MONITOR"]) / n, 5),
        "challenge_or_stronger": round(strong / n, 5),
        "block": round(levels["BLOCK"] / n, 5),
        "errors": round(levels["ERROR"] / n, 5),
    }


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f} %"


def format_report(report: dict[str, Any]) -> str:
    """The human-readable report."""
    boot, live, normal = report["bootstrap"], report["live"], report["normal"]
    lines = [
        f"BehaviorGate demo (seed {report['seed']})",
        f"history: {boot['history_lines']} requests, {boot['history_attack_sessions']} attack "
        f"sessions; model A on {boot['model_a_samples']} vectors, model B on "
        f"{boot['model_b_samples']} (version {boot['model_version']})",
        f"live: {live['requests']} requests in {live['seconds']} s "
        f"({live['attack_requests']} attack requests)",
        "",
        f"{'scenario':<22}{'sessions':>9}{'caught':>8}{'≤10':>6}  first CHALLENGE+ at request #",
    ]
    for name, s in report["scenarios"].items():
        firsts = ", ".join(str(x) for x in s["first_stop_at"]) or "-"
        lines.append(
            f"{name:<22}{s['sessions']:>9}{s['caught']:>8}{s['caught_within_10']:>6}  {firsts}"
        )
    a = report["attacks"]
    lines += [
        f"attack sessions at CHALLENGE+ within their first 10 requests: "
        f"{a['caught_within_10']}/{a['sessions']} = {_pct(a['share_within_10'])} (target ≥ 90 %)",
        f"victims' own logins that opened the attack sessions: {_mix(a['victim_logins'])}; "
        f"attack sessions blocked at that login, before any attack request: "
        f"{a['blocked_at_victim_login']}",
        "",
        f"normal traffic: {normal['requests']} requests in {normal['sessions']} sessions — "
        f"MONITOR+ {_pct(normal['monitor_or_stronger'])}, CHALLENGE+ "
        f"{_pct(normal['challenge_or_stronger'])} (target ≤ 2 %), BLOCK {_pct(normal['block'])} "
        f"(target ≤ 0.1 %); sessions stopped at least once: {normal['sessions_stopped']}",
        "decisions (normal): " + _mix(live["decisions_normal"]),
        "decisions (attack): " + _mix(live["decisions_attack"]),
    ]
    lat = report["latency"]
    probe, live_lat = lat["probe"], lat["live_through_gateway_ms"]
    lines += [
        "",
        f"latency added by the gateway (paired probe, {probe['requests']} requests, full "
        f"scoring): p50 {probe['added_ms']['p50']} ms, p99 {probe['added_ms']['p99']} ms "
        f"(direct p50 {probe['direct_ms']['p50']} ms, via gateway p50 "
        f"{probe['gateway_ms']['p50']} ms)",
        f"live requests through the gateway, upstream time included: p50 {live_lat['p50']} ms, "
        f"p99 {live_lat['p99']} ms",
        "",
        f"dashboard: {report['dashboard']}  (admin token: {report['admin_token']})",
        "  (up while the demo runs; `behaviorgate demo --keep-running` keeps it up to explore)",
        "targets and where they are missed, with the reasons: docs/demo.md",
    ]
    return "\n".join(lines)


def _mix(counts: dict[str, int]) -> str:
    order = [k for k in _LEVELS if k in counts] + sorted(set(counts) - set(_LEVELS))
    return "  ".join(f"{k} {counts[k]}" for k in order) or "-"


# ------------------------------------------------------------------------------ run


async def run_demo(
    opts: DemoOptions, say: Say = _say_stderr, stop: asyncio.Event | None = None
) -> dict[str, Any]:
    """The whole demo; returns the report (also written to ``DATA_DIR/report.json``).

    With ``opts.keep_running`` the gateway and upstream stay up until ``stop`` is set.
    """
    from storage.redis_conn import create_redis

    _clean(opts.data_dir)
    upstream_port = free_port()
    jwt_secret, admin_token = secrets.token_urlsafe(32), secrets.token_urlsafe(24)

    def with_ports(port: int) -> Settings:
        return demo_settings(
            opts,
            upstream_port=upstream_port,
            port=port,
            jwt_secret=jwt_secret,
            admin_token=admin_token,
        )

    port = opts.port or free_port(opts.host)
    settings = with_ports(port)
    redis = create_redis(None)
    upstream = runner = None
    try:
        # Free ports are taken at once: the bootstrap's minute of connections could reuse them.
        upstream = await start_upstream(upstream_port, jwt_secret)
        boot = await bootstrap(opts, settings, redis, say)
        if not opts.port:
            port = free_port(opts.host)
            settings = with_ports(port)
        runner = await start_gateway(settings, redis)
        gateway_url = f"http://{opts.host}:{port}"
        await wait_http(gateway_url + settings.server.internal_prefix + "/readyz")
        say(
            f"gateway on {gateway_url} → sample API on 127.0.0.1:{upstream_port}; "
            f"live traffic for {opts.minutes:g} min"
        )
        results, live_s = await drive_live(opts, gateway_url)
        probe = await latency_probe(
            f"http://127.0.0.1:{upstream_port}", gateway_url, opts.probe_requests
        )
        report = build_report(opts, boot, results, live_s, probe, gateway_url, admin_token)
        (opts.data_dir / "report.json").write_text(json.dumps(report, indent=2), "utf-8")
        if opts.keep_running:
            say(
                f"gateway stays up on {gateway_url} (Ctrl-C to stop); report in "
                f"{opts.data_dir / 'report.json'}"
            )
            print(format_report(report), flush=True)
            await (stop or asyncio.Event()).wait()
        return report
    finally:
        if runner is not None:
            await runner.cleanup()
        await stop_process(upstream)
        await redis.aclose()


def _options(args: argparse.Namespace) -> DemoOptions:
    model: dict[str, Any] = {}
    if args.model_settings:
        with open(args.model_settings, encoding="utf-8") as fh:
            model = ModelSettings.model_validate(json.load(fh)).model_dump(mode="json")
    return DemoOptions(
        seed=args.seed,
        users=args.users,
        days=args.days,
        minutes=args.minutes,
        sessions=args.sessions,
        attack_rate=args.attack_rate,
        history_attack_rate=args.history_attack_rate,
        max_requests=args.max_requests,
        probe_requests=args.probe_requests,
        data_dir=Path(args.data_dir),
        host=args.host,
        port=args.port,
        keep_running=args.keep_running,
        model=model,
    )


def run_demo_command(args: argparse.Namespace) -> int:
    """``behaviorgate demo``."""
    opts = _options(args)

    async def main() -> dict[str, Any]:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await run_demo(opts, stop=stop)

    from config.gateway import LoggingSettings
    from proxy.logs import configure_logging

    configure_logging(LoggingSettings(level="warning", access_log=False))
    report = asyncio.run(main())
    if not opts.keep_running:
        print(format_report(report), flush=True)
    return 0


def add_demo_parser(subparsers: Any) -> None:
    """Register ``demo`` on an ``add_subparsers()`` object."""
    d = DemoOptions()
    p = subparsers.add_parser("demo", help="sample API + gateway + simulated users and attacks")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--users", type=int, default=d.users, help="simulated users (≤ 200)")
    p.add_argument("--days", type=int, default=d.days, help="days of history seeded offline")
    p.add_argument(
        "--history-attack-rate",
        type=float,
        default=d.history_attack_rate,
        help="share of history sessions that are attacks (unlabelled to the model)",
    )
    p.add_argument("--minutes", type=float, default=d.minutes, help="live traffic duration")
    p.add_argument("--sessions", type=int, default=d.sessions, help="live sessions to start")
    p.add_argument(
        "--attack-rate",
        type=float,
        default=d.attack_rate,
        help="share of live sessions that are attacks",
    )
    p.add_argument("--max-requests", type=int, default=d.max_requests, help="live request cap")
    p.add_argument(
        "--probe-requests",
        type=int,
        default=d.probe_requests,
        help="paired requests of the latency probe",
    )
    p.add_argument("--data-dir", default=str(d.data_dir), help="where the demo's files go")
    p.add_argument("--host", default=d.host, help="gateway address")
    p.add_argument("--port", type=int, default=d.port, help="gateway port (0: a free one)")
    p.add_argument("--model-settings", help="JSON file with ModelSettings for both trainings")
    p.add_argument(
        "--keep-running",
        action="store_true",
        help="leave the gateway and sample API up for exploring (Ctrl-C stops)",
    )
    p.set_defaults(func=run_demo_command)

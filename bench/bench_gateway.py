"""The whole hot path under load, beside the floor: upstream direct, minimal pass-through,
gateway with scoring off, full gateway (real Redis + Postgres writer + active model).

Every figure comes from one run on one machine; wrk runs in its own process with a Lua script
that spreads requests over many users (one session and JWT each) and the sample upstream's read
routes. The full gateway runs in shadow mode, so every request is scored and forwarded.
Usage: python -m bench.bench_gateway [--seconds 10] [--connections 64] [--sessions 500] [--profile]
       [--workers2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import asyncpg
import jwt

from bench.procs import LoadResult, free_port, process, py, wrk
from bench.trafficmodel import BENCH_PATHS, BENCH_UA, bench_bundle_bytes
from config.storage import DatabaseSettings
from scoring.features import FEATURE_SET_VERSION
from storage.store import open_store

SECRET = "bench-secret-0123456789abcdef-0123456789"
PG_ADMIN = os.environ.get("BG_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BG_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def client_paths(n: int = 997) -> list[str]:
    """The request targets the clients cycle through: the sample upstream's read routes."""
    out = []
    for i in range(n):
        path = BENCH_PATHS[i % len(BENCH_PATHS)]
        out.append(path.replace("{id}", str(1 + (i * 37) % 500)))
    return out


def tokens_script(path: Path, n: int) -> None:
    """A wrk Lua script spreading requests over `n` users (one session each) and the paths of
    :func:`client_paths`; also the tokens (.txt) and paths (.paths) one per line, for the open
    loop."""
    now = int(time.time())
    toks = [
        jwt.encode(
            {"sub": f"user{i}", "sid": f"bench-{i}", "iat": now, "exp": now + 7200},
            SECRET,
            "HS256",
        )
        for i in range(n)
    ]
    paths = client_paths()
    path.with_suffix(".txt").write_text("\n".join(toks))
    path.with_suffix(".paths").write_text("\n".join(paths))
    lua_tokens = ",\n".join(f'"{t}"' for t in toks)
    lua_paths = ", ".join(f'"{p}"' for p in paths)
    path.write_text(
        f"local tokens = {{\n{lua_tokens}\n}}\nlocal paths = {{{lua_paths}}}\nlocal i = 0\n"
        "request = function()\n  i = i + 1\n"
        '  return wrk.format("GET", paths[(i % #paths) + 1], {["Authorization"] = "Bearer " .. '
        f'tokens[(i % #tokens) + 1], ["User-Agent"] = "{BENCH_UA}"}})\nend\n'
    )


async def admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def seed_model(dsn: str, bundle: bytes) -> int:
    store = await open_store(DatabaseSettings(url=dsn))
    try:
        v = await store.registry.save_version(bundle, feature_set_version=FEATURE_SET_VERSION)
        await store.registry.activate(v.version, by="bench")
        return v.version
    finally:
        await store.close()


def open_loop(
    url: str, rate: float, seconds: int, tokens: Path | None = None, paths: Path | None = None
) -> dict[str, float]:
    cmd = py("-m", "bench.openloop", url, "--rate", str(int(rate)), "--seconds", str(seconds))
    if tokens is not None:
        cmd += ["--tokens", str(tokens)]
    if paths is not None:
        cmd += ["--paths", str(paths)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=seconds * 4 + 60)  # noqa: S603
    return json.loads(out.stdout.strip().splitlines()[-1])


ADMIN_TOKEN = "bench-admin-token-" + "0123456789abcdef"
#: Thresholds at which this model flags only the rare outlier of the benchmark's traffic, as on an
#: ordinary day in production (the default thresholds flag most of it: its sessions are far
#: faster than people, and a flagged request's score feeds the next one's score features).
ORDINARY = {
    "BEHAVIORGATE_MODEL__THRESHOLDS__MONITOR": "0.95",
    "BEHAVIORGATE_MODEL__THRESHOLDS__CHALLENGE": "0.96",
    "BEHAVIORGATE_MODEL__THRESHOLDS__REQUIRE_2FA": "0.97",
    "BEHAVIORGATE_MODEL__THRESHOLDS__BLOCK": "0.98",
    "BEHAVIORGATE_MODEL__THRESHOLDS__STRICT_BLOCK": "0.96",
}
#: Closed loop measures capacity: at saturation the 25 ms scoring budget would otherwise expire,
#: the breaker would open and requests would pass unscored (ERROR) — cheap, and not scoring.
CAPACITY = {"BEHAVIORGATE_SCORING__BUDGET_MS": "2000"}


def decisions(port: int) -> dict[str, float]:
    """Requests per decision so far, from the gateway's own metrics (what was really measured:
    an ERROR is a request whose scoring failed or was skipped by the breaker). With several
    workers this is the counters of whichever worker answers the scrape: a sample of one."""
    req = urllib.request.Request(  # noqa: S310 - loopback only
        f"http://127.0.0.1:{port}/api/ml-anomaly/metrics",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
        text = resp.read().decode()
    mix: dict[str, float] = {}
    for decision, value in re.findall(
        r'^behaviorgate_requests_total\{decision="(\w+)",rule="[^"]*"\} (\S+)$', text, re.M
    ):
        mix[decision] = mix.get(decision, 0.0) + float(value)
    return mix


def mix_text(before: dict[str, float], after: dict[str, float]) -> str:
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    total = sum(delta.values()) or 1.0
    return ", ".join(
        f"{k} {100 * v / total:.1f}%" for k, v in sorted(delta.items(), key=lambda kv: -kv[1]) if v
    )


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker_rss_mib(pid: int) -> str:
    """RSS of the serving process, or of each worker when ``pid`` supervises several."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return " / ".join(f"{rss_mib(p):.1f}" for p in (children or [pid]))


def gateway_env(work: Path, dsn: str, prefix: str) -> dict[str, str]:
    """The gateway's settings in the real-store benches: own database, Redis prefix and data dir.

    Shadow mode: every request is scored (and explained when not ALLOW) and then forwarded, so a
    flagged session keeps costing the full path instead of a cheap 401/403.
    """
    return {
        "BEHAVIORGATE_LOGGING__ACCESS_LOG": "false",
        "BEHAVIORGATE_IDENTITY__JWT__HS256_SECRET": SECRET,
        "BEHAVIORGATE_DATA_DIR": str(work),
        "REDIS_URL": REDIS_URL,
        "DATABASE_URL": dsn,
        "BEHAVIORGATE_HISTORY__KEY_PREFIX": prefix,
        "BEHAVIORGATE_API_TOKENS": ADMIN_TOKEN,
        "BEHAVIORGATE_MODE": "shadow",
    }


def _profiler(pid: int, seconds: int, out: Path) -> subprocess.Popen[bytes]:
    exe = str(Path(sys.executable).with_name("py-spy"))
    args = [
        exe,
        "record",
        "-d",
        str(seconds),
        "-r",
        "200",
        "-f",
        "raw",
        "-o",
        str(out),
        "-p",
        str(pid),
    ]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603


def run(args: argparse.Namespace) -> tuple[list[tuple[str, LoadResult]], dict[str, object]]:
    rows: list[tuple[str, LoadResult]] = []
    extra: dict[str, object] = {}
    up, mini, gw = free_port(), free_port(), free_port()
    db = f"bgbench_{secrets.token_hex(4)}"
    prefix = f"bgbench:{secrets.token_hex(4)}:"
    asyncio.run(admin(f'CREATE DATABASE "{db}"'))
    dsn = PG_ADMIN.rpartition("/")[0] + f"/{db}"
    work = Path(tempfile.mkdtemp(prefix="bgbench-"))
    script = work / "tokens.lua"
    tokens_script(script, args.sessions)
    tokens, paths = script.with_suffix(".txt"), script.with_suffix(".paths")
    load = {"seconds": args.seconds, "connections": args.connections, "script": script}
    upstream_cmd = py(
        "-m", "proxy.cli", "sample-upstream", "--port", str(up), "--latency-scale", "0",
        "--jwt-secret", SECRET,
    )  # fmt: skip
    mini_cmd = py("-m", "bench.minimal_proxy", f"http://127.0.0.1:{up}", str(mini))
    gw_cmd = py(
        "-m", "proxy.cli", "serve", "--upstream", f"http://127.0.0.1:{up}", "--port", str(gw)
    )
    env = gateway_env(work, dsn, prefix)
    gw_url, mini_url = f"http://127.0.0.1:{gw}", f"http://127.0.0.1:{mini}"

    def closed(label: str, cmd: list[str], env_extra: dict[str, str]) -> None:
        with process(cmd, gw, env={**env, **CAPACITY, **env_extra}) as proc:
            time.sleep(0.5)
            spy = None
            if args.profile and label == "gateway, full scoring":
                spy = _profiler(proc.pid, args.seconds, work / "profile.txt")
            before = decisions(gw)
            rows.append((label, wrk(gw_url, **load)))
            extra.setdefault("mixes", []).append((label, mix_text(before, decisions(gw))))
            if spy is not None:
                spy.wait()
                print(f"profile: {work / 'profile.txt'}")

    def opened(label: str, cmd: list[str], rate: float) -> None:
        with process(cmd, gw, env={**env, **ORDINARY}) as proc:
            time.sleep(0.5)
            before = decisions(gw)
            result = open_loop(gw_url, rate, args.seconds, tokens, paths)
            extra.setdefault("open", []).append((label, result, mix_text(before, decisions(gw))))
            extra.setdefault("rss", []).append((label, worker_rss_mib(proc.pid)))

    try:
        # Sessions come back every `sessions / rps` seconds; the model knows that pace.
        asyncio.run(seed_model(dsn, bench_bundle_bytes((0.1, 3.0))))
        with process(upstream_cmd, up):
            rows.append(("upstream direct", wrk(f"http://127.0.0.1:{up}", **load)))
            with process(mini_cmd, mini):
                rows.append(("minimal aiohttp pass-through", wrk(mini_url, **load)))
            closed("gateway, scoring off", gw_cmd, {"BEHAVIORGATE_SCORING__ENABLED": "false"})
            closed("gateway, full scoring", gw_cmd, ORDINARY)
            capacity = rows[-1][1].rps
            closed("gateway, full scoring, most flagged", gw_cmd, {})
            rate = max(50, capacity * 0.5)
            extra["open_loop_rate"] = int(rate)
            with process(mini_cmd, mini):
                extra["passthrough_open_loop"] = open_loop(
                    mini_url, rate, args.seconds, tokens, paths
                )
            opened("gateway, full scoring", gw_cmd, rate)
            if args.workers2:
                two = [*gw_cmd, "--workers", "2"]
                closed("gateway, full scoring, 2 workers", two, ORDINARY)
                opened("gateway, 2 workers", two, rate)
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        asyncio.run(_clean_redis(prefix))
    return rows, extra


async def _clean_redis(prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        for i in range(0, len(keys), 1000):
            await client.delete(*keys[i : i + 1000])
    finally:
        await client.aclose()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--sessions", type=int, default=500, help="users, one session each")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--workers2", action="store_true", help="also measure --workers 2")
    args = ap.parse_args()
    rows, extra = run(args)
    base = rows[1][1].rps
    head = f"closed loop, wrk -c{args.connections}"
    print(
        f"{head:36} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'x pass-through':>15}"
    )
    for name, r in rows:
        print(
            f"{name:36} {r.rps:9.0f} {r.p50_ms:8.2f} {r.p99_ms:8.2f} {r.errors:7d} {r.rps / base:15.2f}"
        )
    for name, mix in extra["mixes"]:
        if mix:  # nothing to show when scoring is off
            print(f"  decisions, {name}: {mix}")
    rate = extra["open_loop_rate"]
    print(
        f"\nopen loop at {rate} req/s (50% of the full gateway's max), latency from the scheduled"
        " time, default 25 ms scoring budget:"
    )
    m = extra["passthrough_open_loop"]
    runs = [("minimal pass-through", m, "")] + extra["open"]
    for name, r, mix in runs:
        print(
            f"  {name:24} p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms"
            f"  p99.9 {r['p999_ms']:7.2f} ms  errors {r['errors']}"
            f"  added p99 {r['p99_ms'] - m['p99_ms']:7.2f} ms"
        )
        if mix:
            print(f"  {'':24} decisions: {mix}")
    for name, rss in extra["rss"]:
        print(f"RSS after the open loop, {name} ({args.sessions} sessions): {rss} MiB")


if __name__ == "__main__":
    main()

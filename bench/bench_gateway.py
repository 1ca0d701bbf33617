"""The whole hot path under load, beside the floor: upstream direct, minimal pass-through,
gateway with scoring off, full gateway (real Redis + Postgres writer + active model).

Every figure comes from one run on one machine; wrk runs in its own process with a Lua script
that spreads requests over many users and sessions (one JWT each).
Usage: python -m bench.bench_gateway [--seconds 10] [--connections 64] [--sessions 500] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import jwt

from bench.procs import LoadResult, free_port, process, py, wrk
from bench.trafficmodel import tiny_bundle_bytes
from config.storage import DatabaseSettings
from scoring.features import FEATURE_SET_VERSION
from storage.store import open_store

SECRET = "bench-secret-0123456789abcdef-0123456789"
PG_ADMIN = os.environ.get("BG_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BG_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def tokens_script(path: Path, n: int) -> None:
    """A wrk Lua script cycling through `n` sessions, and the same tokens one per line (.txt)."""
    now = int(time.time())
    toks = [
        jwt.encode(
            {"sub": f"user{i % 200}", "sid": f"bench-{i}", "iat": now, "exp": now + 7200},
            SECRET,
            "HS256",
        )
        for i in range(n)
    ]
    path.with_suffix(".txt").write_text("\n".join(toks))
    lines = ",\n".join(f'"{t}"' for t in toks)
    path.write_text(
        f"local tokens = {{\n{lines}\n}}\nlocal i = 0\n"
        "request = function()\n  i = i + 1\n"
        '  return wrk.format("GET", "/health", {["Authorization"] = "Bearer " .. tokens[(i % #tokens) + 1],'
        ' ["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0"})\nend\n'
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


def open_loop(url: str, rate: float, seconds: int, tokens: Path | None = None) -> dict[str, float]:
    cmd = py("-m", "bench.openloop", url, "--rate", str(int(rate)), "--seconds", str(seconds))
    if tokens is not None:
        cmd += ["--tokens", str(tokens)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=seconds * 4 + 60)  # noqa: S603
    return json.loads(out.stdout.strip().splitlines()[-1])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


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
    load = {"seconds": args.seconds, "connections": args.connections}
    upstream_cmd = py(
        "-m", "proxy.cli", "sample-upstream", "--port", str(up), "--latency-scale", "0"
    )
    mini_cmd = py("-m", "bench.minimal_proxy", f"http://127.0.0.1:{up}", str(mini))
    gw_cmd = py(
        "-m", "proxy.cli", "serve", "--upstream", f"http://127.0.0.1:{up}", "--port", str(gw)
    )
    env = {
        "BEHAVIORGATE_LOGGING__ACCESS_LOG": "false",
        "BEHAVIORGATE_IDENTITY__JWT__HS256_SECRET": SECRET,
        "BEHAVIORGATE_DATA_DIR": str(work),
        "REDIS_URL": REDIS_URL,
        "DATABASE_URL": dsn,
        "BEHAVIORGATE_HISTORY__KEY_PREFIX": prefix,
    }
    gw_url, mini_url = f"http://127.0.0.1:{gw}/health", f"http://127.0.0.1:{mini}/health"
    try:
        asyncio.run(seed_model(dsn, tiny_bundle_bytes()))
        with process(upstream_cmd, up):
            rows.append(("upstream direct", wrk(f"http://127.0.0.1:{up}/health", **load)))
            with process(mini_cmd, mini):
                rows.append(("minimal aiohttp pass-through", wrk(mini_url, **load)))
            with process(gw_cmd, gw, env={**env, "BEHAVIORGATE_SCORING__ENABLED": "false"}):
                rows.append(("gateway, scoring off", wrk(gw_url, script=script, **load)))
            with process(gw_cmd, gw, env=env) as proc:
                spy = (
                    _profiler(proc.pid, args.seconds, work / "profile.txt")
                    if args.profile
                    else None
                )
                rows.append(("gateway, full scoring", wrk(gw_url, script=script, **load)))
                if spy is not None:
                    spy.wait()
                    print(f"profile: {work / 'profile.txt'}")
                rate = max(50, rows[-1][1].rps * 0.5)
                extra["open_loop_rate"] = int(rate)
                tokens = script.with_suffix(".txt")
                extra["gateway_open_loop"] = open_loop(gw_url, rate, args.seconds, tokens)
                extra["gateway_rss_mib"] = round(rss_mib(proc.pid), 1)
            with process(mini_cmd, mini):
                extra["passthrough_open_loop"] = open_loop(mini_url, rate, args.seconds)
            if args.workers2:
                with process([*gw_cmd, "--workers", "2"], gw, env=env):
                    time.sleep(1)
                    rows.append(
                        ("gateway, full scoring, 2 workers", wrk(gw_url, script=script, **load))
                    )
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
    ap.add_argument("--sessions", type=int, default=500)
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
    g, m = extra["gateway_open_loop"], extra["passthrough_open_loop"]
    rate = extra["open_loop_rate"]
    print(
        f"\nopen loop at {rate} req/s (50% of the gateway's max), latency from the scheduled time:"
    )
    for name, r in (("minimal pass-through", m), ("gateway, full scoring", g)):
        print(
            f"  {name:24} p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms"
            f"  p99.9 {r['p999_ms']:7.2f} ms  errors {r['errors']}"
        )
    print(f"  added p99: {g['p99_ms'] - m['p99_ms']:.2f} ms")
    print(f"gateway RSS after the runs ({args.sessions} sessions): {extra['gateway_rss_mib']} MiB")


if __name__ == "__main__":
    main()

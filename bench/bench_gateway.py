"""The whole hot path under load, beside the floor: upstream direct, minimal pass-through,
gateway with scoring off, full gateway (real Redis + Postgres writer + active model).

Every figure comes from one run on one machine; wrk runs in its own process with a Lua script
that spreads requests over many users and sessions (one JWT each).
Usage: python -m bench.bench_gateway [--seconds 10] [--connections 64] [--sessions 500] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
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
    now = int(time.time())
    toks = [
        jwt.encode(
            {"sub": f"user{i % 200}", "sid": f"bench-{i}", "iat": now, "exp": now + 7200},
            SECRET,
            "HS256",
        )
        for i in range(n)
    ]
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


def run(args: argparse.Namespace) -> list[tuple[str, LoadResult]]:
    rows: list[tuple[str, LoadResult]] = []
    up, mini, gw = free_port(), free_port(), free_port()
    db = f"bgbench_{secrets.token_hex(4)}"
    prefix = f"bgbench:{secrets.token_hex(4)}:"
    asyncio.run(admin(f'CREATE DATABASE "{db}"'))
    dsn = PG_ADMIN.rpartition("/")[0] + f"/{db}"
    work = Path(tempfile.mkdtemp(prefix="bgbench-"))
    script = work / "tokens.lua"
    tokens_script(script, args.sessions)
    try:
        asyncio.run(seed_model(dsn, tiny_bundle_bytes()))
        load = dict(seconds=args.seconds, connections=args.connections)
        with process(
            py("-m", "proxy.cli", "sample-upstream", "--port", str(up), "--latency-scale", "0"), up
        ):
            rows.append(("upstream direct", wrk(f"http://127.0.0.1:{up}/health", **load)))
            with process(
                py("-m", "bench.minimal_proxy", f"http://127.0.0.1:{up}", str(mini)), mini
            ):
                rows.append(
                    ("minimal aiohttp pass-through", wrk(f"http://127.0.0.1:{mini}/health", **load))
                )
            base_env = {
                "BEHAVIORGATE_LOGGING__ACCESS_LOG": "false",
                "BEHAVIORGATE_IDENTITY__JWT__HS256_SECRET": SECRET,
                "BEHAVIORGATE_DATA_DIR": str(work),
                "REDIS_URL": REDIS_URL,
                "DATABASE_URL": dsn,
                "BEHAVIORGATE_HISTORY__KEY_PREFIX": prefix,
            }
            cmd = py(
                "-m",
                "proxy.cli",
                "serve",
                "--upstream",
                f"http://127.0.0.1:{up}",
                "--port",
                str(gw),
            )
            with process(cmd, gw, env={**base_env, "BEHAVIORGATE_SCORING__ENABLED": "false"}):
                rows.append(
                    (
                        "gateway, scoring off",
                        wrk(f"http://127.0.0.1:{gw}/health", script=script, **load),
                    )
                )
            with process(cmd, gw, env=base_env) as proc:
                if args.profile:
                    spy = subprocess.Popen(  # noqa: S603
                        [
                            str(Path(sys.executable).with_name("py-spy")),
                            "record",
                            "-d",
                            str(args.seconds),
                            "-r",
                            "200",
                            "-f",
                            "raw",
                            "-o",
                            str(work / "profile.txt"),
                            "-p",
                            str(proc.pid),
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                rows.append(
                    (
                        "gateway, full scoring",
                        wrk(f"http://127.0.0.1:{gw}/health", script=script, **load),
                    )
                )
                if args.profile:
                    spy.wait()
                    print(f"profile: {work / 'profile.txt'}")
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        asyncio.run(_clean_redis(prefix))
    return rows


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
    args = ap.parse_args()
    rows = run(args)
    base = rows[1][1].rps
    print(
        f"{'path':32} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'× pass-through':>15}"
    )
    for name, r in rows:
        print(
            f"{name:32} {r.rps:9.0f} {r.p50_ms:8.2f} {r.p99_ms:8.2f} {r.errors:7d} {r.rps / base:15.2f}"
        )


if __name__ == "__main__":
    main()

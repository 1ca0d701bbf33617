"""Memory: Redis bytes per active user and session, and the gateway's RSS as sessions pile up.

    .venv/bin/python -m bench.bench_memory [--users 1000] [--sessions 10000,100000] [--rate 600]

1. Redis: ``--users`` users, one session each, recorded through the real history scripts at 1,
   20 and 200 events per session (200 is the default cap); ``INFO memory`` before and after
   gives bytes per user, and ``MEMORY USAGE`` of one user's keys splits them into the session's
   event list and the user's baselines.
2. Gateway RSS: a gateway (real Redis + Postgres, full scoring, shadow mode) receives one request
   from each of N new sessions in turn (open loop at ``--rate``); RSS is read before and after
   each step. What the gateway keeps per session is bounded by its caches (token cache, path
   cache), so RSS should stop growing once they are full.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import tempfile
import time
from pathlib import Path

import jwt
import redis.asyncio as aioredis

from bench.bench_gateway import (
    ORDINARY,
    PG_ADMIN,
    REDIS_URL,
    SECRET,
    _clean_redis,
    admin,
    client_paths,
    decisions,
    gateway_env,
    mix_text,
    open_loop,
    rss_mib,
    seed_model,
)
from bench.procs import free_port, process, py
from bench.trafficmodel import BENCH_UA, bench_bundle_bytes
from config.history import HistorySettings
from scoring.context import EventOutcome, RequestContext
from storage.history import HistoryStore
from storage.redis_conn import create_redis

ROUTES = [f"/api/v1/resource{i}/{{id}}" for i in range(12)]


def _ctx(user: int, i: int, now: float) -> RequestContext:
    route = ROUTES[(user + i) % len(ROUTES)]
    return RequestContext(
        ts=now + i * 2.0,
        method="GET",
        path=route,
        route=route,
        user_id=f"mem-user-{user}",
        session_id=f"mem-session-{user}",
        client_ip=f"10.{user % 200}.{i % 3}.9",
        user_agent=BENCH_UA,
        request_bytes=0,
        sensitivity=1,
        authenticated=True,
    )


async def _used(client: aioredis.Redis) -> int:
    return int((await client.info("memory"))["used_memory"])


async def redis_bytes(users: int) -> list[tuple[int, float, int, int]]:
    """(events per session, bytes per user+session, session list bytes, baseline bytes)."""
    prefix = f"bgmem:{secrets.token_hex(4)}:"
    client = create_redis(REDIS_URL)
    store = HistoryStore(client, HistorySettings(key_prefix=prefix))
    outcome = EventOutcome(200, 900, 14.0, "ALLOW", 0.2)
    now = time.time() - 3600
    out = []
    try:
        base = await _used(client)
        done = 0
        for target in (1, 20, 200):
            for i in range(done, target):
                for start in range(0, users, 256):
                    await asyncio.gather(
                        *(
                            store.record(_ctx(u, i, now), outcome)
                            for u in range(start, min(users, start + 256))
                        )
                    )
            done = target
            used = await _used(client)
            keys = store.keys.for_request("mem-user-0", "mem-session-0")
            session = int(await client.memory_usage(keys.events) or 0)
            baseline = 0
            async for key in client.scan_iter(match=store.keys.owner_pattern("mem-user-0")):
                if key.decode() != keys.events:
                    baseline += int(await client.memory_usage(key) or 0)
            out.append((target, (used - base) / users, session, baseline))
    finally:
        await client.aclose()
        await _clean_redis(prefix)
    return out


def tokens_file(path: Path, n: int, tag: str) -> Path:
    now = int(time.time())
    path.write_text(
        "\n".join(
            jwt.encode(
                {"sub": f"{tag}-u{i}", "sid": f"{tag}-s{i}", "iat": now, "exp": now + 7200},
                SECRET,
                "HS256",
            )
            for i in range(n)
        )
    )
    return path


def gateway_rss(steps: list[int], rate: float) -> list[tuple[int, float, str]]:
    up, gw = free_port(), free_port()
    db = f"bgbench_{secrets.token_hex(4)}"
    prefix = f"bgbench:{secrets.token_hex(4)}:"
    asyncio.run(admin(f'CREATE DATABASE "{db}"'))
    dsn = PG_ADMIN.rpartition("/")[0] + f"/{db}"
    work = Path(tempfile.mkdtemp(prefix="bgmem-"))
    paths = work / "paths.txt"
    paths.write_text("\n".join(client_paths()))
    env = {**gateway_env(work, dsn, prefix), **ORDINARY}
    upstream = py(
        "-m", "proxy.cli", "sample-upstream", "--port", str(up), "--latency-scale", "0",
        "--jwt-secret", SECRET,
    )  # fmt: skip
    gateway = py(
        "-m", "proxy.cli", "serve", "--upstream", f"http://127.0.0.1:{up}", "--port", str(gw)
    )
    url = f"http://127.0.0.1:{gw}"
    rows: list[tuple[int, float, str]] = []
    try:
        asyncio.run(seed_model(dsn, bench_bundle_bytes((0.1, 3.0))))
        with process(upstream, up), process(gateway, gw, env=env) as proc:
            time.sleep(1)
            rows.append((0, rss_mib(proc.pid), ""))
            seen = 0
            for step, total in enumerate(steps):
                fresh = total - seen
                toks = tokens_file(work / f"tokens{step}.txt", fresh, f"m{step}")
                before = decisions(gw)
                result = open_loop(url, rate, max(1, round(fresh / rate)), toks, paths)
                seen = total
                mix = mix_text(before, decisions(gw))
                rows.append((total, rss_mib(proc.pid), f"{result['sent']} sent; {mix}"))
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        asyncio.run(_clean_redis(prefix))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--sessions", default="10000,100000", help="gateway RSS steps (cumulative)")
    ap.add_argument("--rate", type=float, default=600.0)
    args = ap.parse_args()
    print(f"Redis bytes, {args.users} users with one session each (real history scripts):")
    print(f"{'events/session':>15} {'bytes/user':>11} {'session list':>13} {'baselines':>10}")
    for events, per_user, session, baseline in asyncio.run(redis_bytes(args.users)):
        print(f"{events:15d} {per_user:11.0f} {session:13d} {baseline:10d}")
    steps = sorted(int(s) for s in args.sessions.split(","))
    print(f"\ngateway RSS as new sessions arrive (open loop at {args.rate:.0f} req/s):")
    for total, rss, note in gateway_rss(steps, args.rate):
        print(f"  after {total:7d} sessions: {rss:6.1f} MiB  {note}")


if __name__ == "__main__":
    main()

"""Bounded soak: a steady request rate through a real gateway process for N minutes.

The gateway runs with real Redis and Postgres (a scratch database and key prefix, removed
afterwards), an active model trained on traffic of the soak's shape, and global shadow mode so
that every request is scored and recorded without the model's opinion changing what the client
gets. Prints the gateway's RSS over time, the error count, the decision mix from the gateway's own
metrics (so unscored requests show) and whether Postgres holds exactly one prediction per
request.

    .venv/bin/python -m bench.soak --minutes 10 --rate 150
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import aiohttp
import asyncpg
import jwt

from bench.bench_gateway import (
    ORDINARY,
    PG_ADMIN,
    SECRET,
    _clean_redis,
    admin,
    client_paths,
    decisions,
    gateway_env,
    mix_text,
    seed_model,
)
from bench.procs import free_port, process, py
from bench.trafficmodel import BENCH_UA, bench_bundle_bytes

ROUTES = tuple(client_paths())


def rss_kib(pid: int) -> int:
    """Resident set size of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def tokens(n: int) -> list[str]:
    now = int(time.time())
    return [
        jwt.encode(
            {"sub": f"user{i}", "sid": f"soak-{i}", "iat": now, "exp": now + 86_400},
            SECRET,
            "HS256",
        )
        for i in range(n)
    ]


class Tally:
    def __init__(self) -> None:
        self.sent = 0
        self.statuses: dict[int, int] = {}
        self.errors: list[str] = []
        self.latencies: list[float] = []


async def one(session: aiohttp.ClientSession, url: str, tok: str, tally: Tally) -> None:
    started = time.perf_counter()
    try:
        headers = {"Authorization": f"Bearer {tok}", "User-Agent": BENCH_UA}
        async with session.get(url, headers=headers) as resp:
            await resp.read()
            tally.statuses[resp.status] = tally.statuses.get(resp.status, 0) + 1
            if resp.status >= 500:
                tally.errors.append(f"HTTP {resp.status}")
    except (aiohttp.ClientError, TimeoutError) as exc:
        tally.errors.append(type(exc).__name__)
    tally.latencies.append((time.perf_counter() - started) * 1000)


async def drive(port: int, pid: int, minutes: float, rate: float, sessions: int) -> Tally:
    """Open-loop load: request i starts at i / rate seconds whatever the previous ones do."""
    tally = Tally()
    toks = tokens(sessions)
    timeout = aiohttp.ClientTimeout(total=30)
    end = time.monotonic() + minutes * 60
    next_sample = 0.0
    print(f"{'t (s)':>7} {'sent':>8} {'RSS MiB':>8} {'errors':>7}")
    async with aiohttp.ClientSession(timeout=timeout) as session:
        pending: set[asyncio.Task[None]] = set()
        start = time.monotonic()
        while (now := time.monotonic()) < end:
            due = int((now - start) * rate) + 1
            while tally.sent < due:
                i = tally.sent
                url = f"http://127.0.0.1:{port}{ROUTES[i % len(ROUTES)]}"
                task = asyncio.create_task(one(session, url, toks[i % len(toks)], tally))
                pending.add(task)
                task.add_done_callback(pending.discard)
                tally.sent += 1
            if now - start >= next_sample:
                print(
                    f"{now - start:7.0f} {tally.sent:8d} {rss_kib(pid) / 1024:8.1f} "
                    f"{len(tally.errors):7d}",
                    flush=True,
                )
                next_sample += 15
            await asyncio.sleep(0.005)
        if pending:
            await asyncio.gather(*pending)
    return tally


async def count_predictions(dsn: str) -> tuple[int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow("SELECT count(*) AS n, count(DISTINCT id) AS d FROM predictions")
        return int(row["n"]), int(row["d"])
    finally:
        await conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=150.0, help="requests per second")
    ap.add_argument("--sessions", type=int, default=300, help="users, one session each")
    args = ap.parse_args()

    up, gw = free_port(), free_port()
    db = f"bgsoak_{secrets.token_hex(4)}"
    prefix = f"bgsoak:{secrets.token_hex(4)}:"
    asyncio.run(admin(f'CREATE DATABASE "{db}"'))
    dsn = PG_ADMIN.rpartition("/")[0] + f"/{db}"
    work = Path(tempfile.mkdtemp(prefix="bgsoak-"))
    try:
        # A session comes back every sessions / rate seconds (2 s by default): the model's pace.
        asyncio.run(seed_model(dsn, bench_bundle_bytes((0.5, 4.0))))
        env = {**gateway_env(work, dsn, prefix), **ORDINARY}
        upstream = py("-m", "proxy.cli", "sample-upstream", "--port", str(up))
        gateway = py("-m", "proxy.cli", "serve", "--upstream", f"http://127.0.0.1:{up}",
                     "--port", str(gw))  # fmt: skip
        with (
            process(upstream + ["--latency-scale", "0", "--jwt-secret", SECRET], up),
            process(gateway, gw, env) as proc,
        ):
            rss_start = rss_kib(proc.pid)
            before = decisions(gw)
            tally = asyncio.run(drive(gw, proc.pid, args.minutes, args.rate, args.sessions))
            rss_end = rss_kib(proc.pid)
            mix = mix_text(before, decisions(gw))
            proc.send_signal(signal.SIGTERM)  # drains the writer into Postgres
            try:
                code = proc.wait(60)
            except subprocess.TimeoutExpired:
                code = None
        rows, distinct = asyncio.run(count_predictions(dsn))
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        asyncio.run(_clean_redis(prefix))
    lat = sorted(tally.latencies)
    pct = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]) if lat else (lambda q: 0.0)
    print(f"minutes {args.minutes}  rate {args.rate}/s  requests {tally.sent}")
    print(f"statuses {dict(sorted(tally.statuses.items()))}  errors {len(tally.errors)}")
    print(f"latency ms p50 {pct(0.5):.1f}  p99 {pct(0.99):.1f}  max {lat[-1] if lat else 0:.1f}")
    print(f"decisions (gateway metrics): {mix}")
    print(f"gateway RSS MiB start {rss_start / 1024:.1f}  end {rss_end / 1024:.1f}")
    same = rows == tally.sent
    print(f"predictions in Postgres {rows} (distinct {distinct})  == requests: {same}")
    print(f"gateway exit code after SIGTERM: {code}")


if __name__ == "__main__":
    main()

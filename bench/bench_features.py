"""Feature extraction and history access costs; prints figures (not a pass/fail test).

    .venv/bin/python bench/bench_features.py [--redis-url redis://127.0.0.1:6379/0] [--reads 4000]

1. µs per feature vector for a 200-event history (extract only), and for decoding a stored
   200-event session into a snapshot.
2. Redis round trips and bytes per request (read before forwarding + record after), measured by the
   client's counter and by the server's INFO net counters.
3. Read throughput against the real Redis with 64 concurrent requesters, with and without
   coalescing reads into one pipeline per event-loop tick.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import time

import numpy as np

from config.history import HistorySettings
from scoring.context import EventOutcome, RequestContext
from scoring.features import extract
from storage.history import HistoryStore, _snapshot
from storage.redis_conn import create_redis

NOW = 1704110400.0
UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0 Safari/537.36"
ROUTES = [f"/api/v1/resource{i}/{{id}}" for i in range(12)]


def ctx(i: int, user: str = "bench-user", session: str = "bench-session") -> RequestContext:
    return RequestContext(
        ts=NOW + i,
        method="GET",
        path=ROUTES[i % 12],
        route=ROUTES[i % 12],
        user_id=user,
        session_id=session,
        client_ip=f"10.0.{i % 3}.7",
        user_agent=UA,
        request_bytes=200,
        sensitivity=1,
        authenticated=True,
    )


def outcome(i: int) -> EventOutcome:
    return EventOutcome(
        status=(200, 200, 302, 404)[i % 4],
        response_bytes=1500,
        latency_ms=3.2,
        decision="ALLOW",
        score=(i % 10) / 10,
    )


def best_us(fn, n: int, repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n * 1e6)
    return best


async def fill(store: HistoryStore, n: int, user: str, session: str) -> None:
    await asyncio.gather(*(store.record(ctx(i, user, session), outcome(i)) for i in range(n)))


async def features_figures(url: str | None) -> None:
    client = create_redis(url)
    prefix = f"bgbench:{secrets.token_hex(3)}:"
    store = HistoryStore(client, HistorySettings(key_prefix=prefix))
    try:
        await store.load_scripts()
        await fill(store, 200, "bench-user", "bench-session")
        c = ctx(201)
        snap = await store.read(c)
        keys = store.keys.for_request(c.user_id, c.session_id)
        raw = await client.evalsha(
            store._read_sha,
            len(keys.all()),
            *keys.all(),
            repr(c.ts),
            keys.session,
            c.client_ip,
            "10.0.0.0/24",
            "chrome|windows|desktop",
            c.route,
            *store._read_tail,
        )
        print(f"session events in snapshot: {snap.n_events}")
        print(f"extract(): {best_us(lambda: extract(snap, c, c.ts), 3000):.1f} µs per vector")
        print(f"decode reply → snapshot: {best_us(lambda: _snapshot(*raw), 3000):.1f} µs")
    finally:
        await store.reset_user("bench-user")
        await client.aclose()


async def round_trip_figures(url: str) -> None:
    client = create_redis(url)
    prefix = f"bgbench:{secrets.token_hex(3)}:"
    store = HistoryStore(client, HistorySettings(key_prefix=prefix, coalesce_reads=False))
    try:
        await store.load_scripts()
        await fill(store, 200, "rt-user", "rt-session")
        n = 200
        stats0 = await client.info("stats")
        before = store.round_trips.count
        sent0 = store.round_trips.bytes_sent
        for i in range(n):
            await store.read(ctx(1000 + i, "rt-user", "rt-session"))
        trips = (store.round_trips.count - before) / n
        stats1 = await client.info("stats")
        out_b = (stats1["total_net_output_bytes"] - stats0["total_net_output_bytes"]) / n
        print(
            f"read (200-event session): {trips:.2f} round trips, "
            f"{(store.round_trips.bytes_sent - sent0) / n:.0f} B sent, ~{out_b:.0f} B received "
            "(server net output; includes INFO and other clients' traffic)"
        )
        before, sent0 = store.round_trips.count, store.round_trips.bytes_sent
        for i in range(n):
            await store.record(ctx(2000 + i, "rt-user", "rt-session"), outcome(i))
        print(
            f"record: {(store.round_trips.count - before) / n:.2f} round trips, "
            f"{(store.round_trips.bytes_sent - sent0) / n:.0f} B sent"
        )
    finally:
        await store.reset_user("rt-user")
        await client.aclose()


async def throughput(
    url: str, coalesce: bool, reads: int, concurrency: int, history: int
) -> tuple[float, float]:
    client = create_redis(url)
    prefix = f"bgbench:{secrets.token_hex(3)}:"
    store = HistoryStore(client, HistorySettings(key_prefix=prefix, coalesce_reads=coalesce))
    users = [f"tp-user-{u}" for u in range(concurrency)]
    try:
        await store.load_scripts()
        for u in users:
            await fill(store, history, u, "tp-s")
        done = 0
        start_trips = store.round_trips.count

        async def worker(u: str) -> None:
            nonlocal done
            i = 0
            while done < reads:
                done += 1
                i += 1
                await store.read(ctx(5000 + i, u, "tp-s"))

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(u) for u in users))
        elapsed = time.perf_counter() - t0
        return done / elapsed, (store.round_trips.count - start_trips) / done
    finally:
        for u in users:
            await store.reset_user(u)
        await client.aclose()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--reads", type=int, default=4000)
    ap.add_argument("--concurrency", type=int, default=64)
    args = ap.parse_args()
    print("== features (real Redis for the stored history) ==")
    await features_figures(args.redis_url)
    print("== round trips and bytes per request ==")
    await round_trip_figures(args.redis_url)
    print(f"== read throughput, {args.concurrency} concurrent requesters, one process ==")
    for history in (20, 200):
        for coalesce in (False, True):
            rate, trips = await throughput(
                args.redis_url, coalesce, args.reads, args.concurrency, history
            )
            label = "coalesced" if coalesce else "pipeline per read"
            print(
                f"{history:>3}-event sessions, {label:<18}: {rate:8.0f} reads/s, "
                f"{trips:.3f} round trips per read"
            )


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    np.seterr(all="ignore")
    asyncio.run(main())
